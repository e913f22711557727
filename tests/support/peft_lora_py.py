"""PEFT LoRA adapters for the python references (llama_reference.py,
gpt_neox_reference.py, gpt2_reference.py), read from the files as PEFT writes them: adapter_config.json
(peft_type, r, lora_alpha, use_rslora, use_dora) and adapter_model.safetensors
(base_model.model.<module>.lora_A.weight [r, in], ...lora_B.weight [out, r], and with
DoRA ...lora_magnitude_vector [out])."""
import json
import math

import torch

from safetensors_py import load


def adapted(x, W, y, ab, scaling):
    """PEFT's LoRA Linear.forward (peft/tuners/lora/layer.py and dora.py, documented
    behaviour) for the base output y = x W^T (+ b), W [out, in], dropout off: y plus
    scaling * (x A^T) B^T; with DoRA (ab holds the magnitude "m"), y plus
    (g - 1) * (x W^T) + g * scaling * (x A^T) B^T, g = m / ||W + scaling B A|| over each
    row, the norm detached (DoraLinearLayer.forward)."""
    lora = (x @ ab["A"].T @ ab["B"].T) * scaling
    if "m" not in ab:
        return y + lora
    norm = torch.linalg.norm(W + scaling * (ab["B"] @ ab["A"]), dim=1).detach()
    g = ab["m"] / norm
    return y + (g - 1) * (x @ W.T) + g * lora


def load_lora(argv, w, convert):
    """With `--adapter ADIR` in argv: ({"<module>.weight": {"A": A, "B": B}}, scaling),
    scaling = lora_alpha / r (lora_alpha / sqrt(r) with use_rslora), tensors through
    `convert`; with use_dora, each entry's "m" too. With `--merged` as well, PEFT's
    merge_and_unload instead: each adapted weight of w becomes W + scaling * (B A)
    (DoRA: its rows times m / ||W + scaling * (B A)||), and no LoRA is left. Without
    --adapter: ({}, 0.0)."""
    if "--adapter" not in argv:
        return {}, 0.0
    adir = argv[argv.index("--adapter") + 1]
    acfg = json.load(open(adir + "/adapter_config.json"))
    if acfg["peft_type"] != "LORA" or acfg.get("modules_to_save") or acfg.get("bias", "none") != "none":
        raise SystemExit("this reference knows plain LoRA adapters only")
    scaling = acfg["lora_alpha"] / (math.sqrt(acfg["r"]) if acfg.get("use_rslora") else acfg["r"])
    prefix, lora = "base_model.model.", {}
    for k, v in load(adir + "/adapter_model.safetensors").items():
        if acfg.get("use_dora") and k.startswith(prefix) and k.endswith(".lora_magnitude_vector"):
            lora.setdefault(k[len(prefix):-len(".lora_magnitude_vector")] + ".weight", {})["m"] = convert(v)
            continue
        for part in ("A", "B"):
            suffix = f".lora_{part}.weight"
            if k.startswith(prefix) and k.endswith(suffix):
                lora.setdefault(k[len(prefix):-len(suffix)] + ".weight", {})[part] = convert(v)
                break
        else:
            raise SystemExit(f"unexpected adapter tensor {k}")
    if any(name not in w for name in lora):
        raise SystemExit("the adapter names layers the model does not have: " + ", ".join(n for n in lora if n not in w))
    if "--merged" in argv:
        for name, ab in lora.items():
            delta = (ab["B"] @ ab["A"]) * scaling
            if "m" in ab:  # PEFT's DoRA merge: dora_factor = m / ||W + delta|| by output rows
                if acfg.get("fan_in_fan_out"):  # Conv1D [in, out]: the norm over W^T's rows, the factor on columns
                    merged = w[name] + delta.T
                    w[name] = (ab["m"] / torch.linalg.norm(merged, dim=0)).unsqueeze(0) * merged
                    continue
                merged = w[name] + delta
                w[name] = (ab["m"] / torch.linalg.norm(merged, dim=1)).unsqueeze(1) * merged
                continue
            # PEFT's get_delta_weight: transposed for Conv1D weights [in, out] (GPT-2).
            w[name] = w[name] + (delta.T if acfg.get("fan_in_fan_out") else delta)
        return {}, scaling
    return lora, scaling

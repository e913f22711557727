"""PEFT LoRA adapters for the python references (llama_reference.py,
gpt_neox_reference.py, gpt2_reference.py), read from the files as PEFT writes them: adapter_config.json
(peft_type, r, lora_alpha, use_rslora) and adapter_model.safetensors
(base_model.model.<module>.lora_A.weight [r, in], ...lora_B.weight [out, r])."""
import json
import math

from safetensors_py import load


def load_lora(argv, w, convert):
    """With `--adapter ADIR` in argv: ({"<module>.weight": {"A": A, "B": B}}, scaling),
    scaling = lora_alpha / r (lora_alpha / sqrt(r) with use_rslora), tensors through
    `convert`. With `--merged` as well, PEFT's merge_and_unload instead: each adapted
    weight of w becomes W + scaling * (B A), and no LoRA is left. Without --adapter:
    ({}, 0.0)."""
    if "--adapter" not in argv:
        return {}, 0.0
    adir = argv[argv.index("--adapter") + 1]
    acfg = json.load(open(adir + "/adapter_config.json"))
    if acfg["peft_type"] != "LORA" or acfg.get("modules_to_save") or acfg.get("bias", "none") != "none":
        raise SystemExit("this reference knows plain LoRA adapters only")
    scaling = acfg["lora_alpha"] / (math.sqrt(acfg["r"]) if acfg.get("use_rslora") else acfg["r"])
    prefix, lora = "base_model.model.", {}
    for k, v in load(adir + "/adapter_model.safetensors").items():
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
            # PEFT's get_delta_weight: transposed for Conv1D weights [in, out] (GPT-2).
            w[name] = w[name] + (delta.T if acfg.get("fan_in_fan_out") else delta)
        return {}, scaling
    return lora, scaling

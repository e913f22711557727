"""Independent reference: transformers' GPT2LMHeadModel, forward written out in
python3-torch in fp64 from the checkpoint's own names and layout; transformers itself
is not installed here. GPT2Model: wte[id] + wpe[position]; per block (GPT2Block)
h + attn(ln_1(h)), then h + mlp(ln_2(h)); every projection a Conv1D, x @ W + b with
W [in, out]; attn.c_attn's output split into q, k, v (in that order) of n_embd each,
heads of n_embd / n_head; scores divided by sqrt(head_dim) when scale_attn_weights,
and block i's by i + 1 too when scale_attn_by_inverse_layer_idx;
causal softmax; attn.c_proj; the MLP c_proj(act(c_fc(x))) with activation_function
(gelu_new: the tanh approximation); ln_f, then lm_head, tied to wte unless the file
holds lm_head.weight. Accepts checkpoints with or without the transformer. prefix.

Reads DIR/config.json, DIR/model.safetensors and DIR/ids.safetensors; writes
DIR/reference_logits.safetensors (tests/support/safetensors_py.py).

With `--adapter ADIR` (a PEFT LoRA adapter), every adapted Conv1D computes PEFT's
Linear.forward with fan_in_fan_out, x W + b + scaling * (x A^T) B^T, A [r, in] and
B [out, r] as the file holds them (DoRA: peft_lora_py.adapted on the weight as
[out, in]); with `--merged`, W + scaling * (B A)^T instead (DoRA: its columns, the
output rows, times m / ||W^T + scaling B A||)."""
import math, os, sys
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../support"))
from peft_lora_py import adapted  # noqa: E402
from reference_io import read_inputs, write_logits  # noqa: E402

cfg, w, ids, lora, scaling = read_inputs(
    sys.argv, "gpt2", lambda k: k if k.startswith("transformer.") or k == "lm_head.weight" else "transformer." + k)

E = cfg["n_embd"]
H = cfg["n_head"]
D = E // H
eps = cfg.get("layer_norm_epsilon", 1e-5)
scale = 1.0 / math.sqrt(D) if cfg.get("scale_attn_weights", True) else 1.0
act = {"gelu": torch.nn.functional.gelu, "gelu_new": lambda x: torch.nn.functional.gelu(x, approximate="tanh"),
       "gelu_pytorch_tanh": lambda x: torch.nn.functional.gelu(x, approximate="tanh")}[
    cfg.get("activation_function", "gelu_new")]


def ln(x, name):
    return torch.nn.functional.layer_norm(x, (E,), w[name + ".weight"], w[name + ".bias"], eps)


def conv1d(x, name):
    y = x @ w[name + ".weight"] + w[name + ".bias"]
    if name + ".weight" in lora:
        ab = lora[name + ".weight"]
        if "m" in ab:  # DoRA: PEFT transposes the Conv1D weight [in, out] to [out, in] (fan_in_fan_out)
            return adapted(x, w[name + ".weight"].T, y, ab, scaling)
        y = y + (x @ ab["A"].T @ ab["B"].T) * scaling
    return y


B, T = ids.shape
mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
h = w["transformer.wte.weight"][ids] + w["transformer.wpe.weight"][torch.arange(T)]
for i in range(cfg["n_layer"]):
    p = f"transformer.h.{i}."
    q, k, v = conv1d(ln(h, p + "ln_1"), p + "attn.c_attn").split(E, dim=-1)
    q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in (q, k, v))
    layer_scale = 1.0 / (i + 1) if cfg.get("scale_attn_by_inverse_layer_idx", False) else 1.0
    a = torch.softmax(q @ k.transpose(-1, -2) * scale * layer_scale + mask, -1) @ v
    h = h + conv1d(a.transpose(1, 2).reshape(B, T, E), p + "attn.c_proj")
    h = h + conv1d(act(conv1d(ln(h, p + "ln_2"), p + "mlp.c_fc")), p + "mlp.c_proj")
h = ln(h, "transformer.ln_f")
head = w["lm_head.weight"] if "lm_head.weight" in w else w["transformer.wte.weight"]
logits = h @ head.T
write_logits(sys.argv[1], logits)

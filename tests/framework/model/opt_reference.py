"""Independent reference: transformers' OPTForCausalLM (do_layer_norm_before, the
common OPT layout), forward written out in python3-torch in fp64 from the
checkpoint's own names; transformers itself is not installed here. OPTDecoder:
embed_tokens[id] + embed_positions[position + 2] (OPTLearnedPositionalEmbedding's
offset); per layer h + out_proj(attn(self_attn_layer_norm(h))), then
h + fc2(act(fc1(final_layer_norm(h)))), every projection with a bias; q scaled by
head_dim ** -0.5; causal softmax; the decoder's final_layer_norm, then lm_head, tied
to embed_tokens unless the file holds lm_head.weight. Accepts OPTModel's files
without the model. prefix.

Reads DIR/config.json, DIR/model.safetensors and DIR/ids.safetensors; writes
DIR/reference_logits.safetensors (tests/support/safetensors_py.py).

With `--adapter ADIR` (a PEFT LoRA adapter), every adapted linear layer computes
PEFT's Linear.forward, x W^T + b + scaling * (x A^T) B^T; with `--merged`,
W + scaling * (B A) instead."""
import os, sys
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../support"))
from reference_io import read_inputs, write_logits  # noqa: E402

cfg, w, ids, lora, scaling = read_inputs(
    sys.argv, "opt", lambda k: k if k.startswith("model.") or k == "lm_head.weight" else "model." + k)
assert cfg.get("do_layer_norm_before", True) and cfg.get("word_embed_proj_dim", cfg["hidden_size"]) == cfg["hidden_size"]

E = cfg["hidden_size"]
H = cfg["num_attention_heads"]
D = E // H
act = {"relu": torch.relu, "gelu": torch.nn.functional.gelu}[cfg.get("activation_function", "relu")]


def ln(x, name):
    return torch.nn.functional.layer_norm(x, (E,), w[name + ".weight"], w[name + ".bias"], 1e-5)


def linear(x, name):
    y = x @ w[name + ".weight"].T + w[name + ".bias"]
    if name + ".weight" in lora:
        ab = lora[name + ".weight"]
        y = y + (x @ ab["A"].T @ ab["B"].T) * scaling
    return y


B, T = ids.shape
mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
h = w["model.decoder.embed_tokens.weight"][ids] + w["model.decoder.embed_positions.weight"][torch.arange(T) + 2]
for i in range(cfg["num_hidden_layers"]):
    p = f"model.decoder.layers.{i}."
    x = ln(h, p + "self_attn_layer_norm")
    q = linear(x, p + "self_attn.q_proj") * D ** -0.5
    k, v = linear(x, p + "self_attn.k_proj"), linear(x, p + "self_attn.v_proj")
    q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in (q, k, v))
    a = torch.softmax(q @ k.transpose(-1, -2) + mask, -1) @ v
    h = h + linear(a.transpose(1, 2).reshape(B, T, E), p + "self_attn.out_proj")
    h = h + linear(act(linear(ln(h, p + "final_layer_norm"), p + "fc1")), p + "fc2")
h = ln(h, "model.decoder.final_layer_norm")
head = w["lm_head.weight"] if "lm_head.weight" in w else w["model.decoder.embed_tokens.weight"]
logits = h @ head.T
write_logits(sys.argv[1], logits)

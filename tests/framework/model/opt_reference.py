"""Independent reference: transformers' OPTForCausalLM (do_layer_norm_before, the
common OPT layout, and OPT-350m's: norms after the residual adds, no final norm,
project_in / project_out around the layers when word_embed_proj_dim differs from
hidden_size), forward written out in python3-torch in fp64 from the
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
pre = cfg.get("do_layer_norm_before", True)  # OPTDecoderLayer: the norms before (True) or after the residual adds

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
h = w["model.decoder.embed_tokens.weight"][ids]
if "model.decoder.project_in.weight" in w:  # OPTDecoder: project_in(inputs_embeds), then the positions
    h = h @ w["model.decoder.project_in.weight"].T
h = h + w["model.decoder.embed_positions.weight"][torch.arange(T) + 2]
for i in range(cfg["num_hidden_layers"]):
    p = f"model.decoder.layers.{i}."
    x = ln(h, p + "self_attn_layer_norm") if pre else h
    q = linear(x, p + "self_attn.q_proj") * D ** -0.5
    k, v = linear(x, p + "self_attn.k_proj"), linear(x, p + "self_attn.v_proj")
    q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in (q, k, v))
    a = torch.softmax(q @ k.transpose(-1, -2) + mask, -1) @ v
    h = h + linear(a.transpose(1, 2).reshape(B, T, E), p + "self_attn.out_proj")
    if not pre:
        h = ln(h, p + "self_attn_layer_norm")
    h = h + linear(act(linear(ln(h, p + "final_layer_norm") if pre else h, p + "fc1")), p + "fc2")
    if not pre:
        h = ln(h, p + "final_layer_norm")
if pre:  # OPTDecoder: final_layer_norm only with do_layer_norm_before
    h = ln(h, "model.decoder.final_layer_norm")
if "model.decoder.project_out.weight" in w:
    h = h @ w["model.decoder.project_out.weight"].T
head = w["lm_head.weight"] if "lm_head.weight" in w else w["model.decoder.embed_tokens.weight"]
logits = h @ head.T
write_logits(sys.argv[1], logits)

"""Independent reference: transformers' StableLmForCausalLM (StableLM-3B-4E1T,
StableLM 2), forward written out in python3-torch in fp64 from the checkpoint's own
names; transformers itself is not installed here. StableLmDecoderLayer: LayerNorms
with biases; with use_parallel_residual, h + attn(ln(h)) + mlp(ln(h)) off the one
input_layernorm, else the two residual adds in sequence through
post_attention_layernorm; StableLmAttention: q/k/v_proj with biases when use_qkv_bias,
with qk_layernorm one bias-free LayerNorm per head (q_layernorm.norms.<h>), RoPE
(rotate-half) on the first int(head_dim * partial_rotary_factor) dimensions, scores
times head_dim ** -0.5, grouped queries, o_proj without a bias; the SwiGLU MLP; the
final norm (a LayerNorm); lm_head.

Inputs, outputs and `--adapter ADIR` / `--merged` (PEFT's LoRA formula, or its merge):
tests/support/reference_io.py."""
import os
import sys
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../support"))
from reference_io import peft_linear, read_inputs, rotate_half_rope, write_logits  # noqa: E402

cfg, w, ids, lora, scaling = read_inputs(sys.argv, "stablelm")

E = cfg["hidden_size"]
H = cfg["num_attention_heads"]
KV = cfg.get("num_key_value_heads") or H
D = E // H
RD = int(D * cfg.get("partial_rotary_factor", 0.25))
eps = cfg.get("layer_norm_eps", 1e-5)
theta = cfg.get("rope_theta", 10000.0)
parallel = cfg.get("use_parallel_residual", False)
qk_norm = cfg.get("qk_layernorm", False)


def ln(x, name):
    return torch.nn.functional.layer_norm(x, (E,), w[name + ".weight"], w[name + ".bias"], eps)


def per_head_ln(x, name, heads):  # x [B, heads, T, D]
    return torch.stack([torch.nn.functional.layer_norm(x[:, h], (D,), w[f"{name}.norms.{h}.weight"], None, eps)
                        for h in range(heads)], 1)


linear = peft_linear(w, lora, scaling)


B, T = ids.shape
rope = rotate_half_rope(T, RD, theta)


def mlp(x, p):
    return linear(torch.nn.functional.silu(linear(x, p + "mlp.gate_proj")) * linear(x, p + "mlp.up_proj"), p + "mlp.down_proj")


mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
h = w["model.embed_tokens.weight"][ids]
for i in range(cfg["num_hidden_layers"]):
    p = f"model.layers.{i}."
    x = ln(h, p + "input_layernorm")
    q = linear(x, p + "self_attn.q_proj").view(B, T, H, D).transpose(1, 2)
    k = linear(x, p + "self_attn.k_proj").view(B, T, KV, D).transpose(1, 2)
    v = linear(x, p + "self_attn.v_proj").view(B, T, KV, D).transpose(1, 2)
    if qk_norm:
        q, k = per_head_ln(q, p + "self_attn.q_layernorm", H), per_head_ln(k, p + "self_attn.k_layernorm", KV)
    q, k = rope(q), rope(k).repeat_interleave(H // KV, dim=1)
    v = v.repeat_interleave(H // KV, dim=1)
    a = torch.softmax(q @ k.transpose(-1, -2) * D ** -0.5 + mask, -1) @ v
    attn = linear(a.transpose(1, 2).reshape(B, T, E), p + "self_attn.o_proj")
    if parallel:
        h = h + attn + mlp(x, p)
    else:
        h = h + attn
        h = h + mlp(ln(h, p + "post_attention_layernorm"), p)
h = ln(h, "model.norm")
head = w["lm_head.weight"] if "lm_head.weight" in w else w["model.embed_tokens.weight"]
write_logits(sys.argv[1], h @ head.T)

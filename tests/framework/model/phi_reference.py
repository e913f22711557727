"""Independent reference: transformers' PhiForCausalLM (Phi-1, Phi-1.5, Phi-2), forward
written out in python3-torch in fp64 from the checkpoint's own names; transformers
itself is not installed here. PhiDecoderLayer: one input_layernorm (LayerNorm with a
bias) read by both branches, h + attn(ln(h)) + mlp(ln(h)); PhiAttention: q/k/v_proj
with biases, RoPE (rotate-half) on the first int(head_dim * partial_rotary_factor)
dimensions of each head (with qk_layernorm, first q_layernorm / k_layernorm: one
nn.LayerNorm(head_dim) with a bias each, shared by the heads), scores times head_dim ** -0.5, key/value heads repeated for
grouped queries, self_attn.dense with a bias; PhiMLP: fc2(gelu_new(fc1(x))); the
final_layernorm; lm_head with a bias.

Inputs, outputs and `--adapter ADIR` / `--merged` (PEFT's LoRA formula, or its merge):
tests/support/reference_io.py."""
import os
import sys
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../support"))
from reference_io import peft_linear, read_inputs, rotate_half_rope, write_logits  # noqa: E402

cfg, w, ids, lora, scaling = read_inputs(sys.argv, "phi")

E = cfg["hidden_size"]
H = cfg["num_attention_heads"]
KV = cfg.get("num_key_value_heads") or H
D = E // H
RD = int(D * cfg.get("partial_rotary_factor", 0.5))
eps = cfg.get("layer_norm_eps", 1e-5)
theta = cfg.get("rope_theta", 10000.0)
act = {"gelu_new": lambda x: 0.5 * x * (1.0 + torch.tanh((2.0 / torch.pi) ** 0.5 * (x + 0.044715 * x ** 3))),
       "gelu": torch.nn.functional.gelu}[cfg.get("hidden_act", "gelu_new")]


def ln(x, name):
    return torch.nn.functional.layer_norm(x, (E,), w[name + ".weight"], w[name + ".bias"], eps)


def head_ln(x, name):
    return torch.nn.functional.layer_norm(x, (D,), w[name + ".weight"], w[name + ".bias"], eps)


linear = peft_linear(w, lora, scaling)


B, T = ids.shape
rope = rotate_half_rope(T, RD, theta)


mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
h = w["model.embed_tokens.weight"][ids]
for i in range(cfg["num_hidden_layers"]):
    p = f"model.layers.{i}."
    x = ln(h, p + "input_layernorm")
    q = linear(x, p + "self_attn.q_proj").view(B, T, H, D)
    k = linear(x, p + "self_attn.k_proj").view(B, T, KV, D)
    if cfg.get("qk_layernorm", False):
        q = head_ln(q, p + "self_attn.q_layernorm")
        k = head_ln(k, p + "self_attn.k_layernorm")
    q = rope(q.transpose(1, 2))
    k = rope(k.transpose(1, 2)).repeat_interleave(H // KV, dim=1)
    v = linear(x, p + "self_attn.v_proj").view(B, T, KV, D).transpose(1, 2).repeat_interleave(H // KV, dim=1)
    a = torch.softmax(q @ k.transpose(-1, -2) * D ** -0.5 + mask, -1) @ v
    attn = linear(a.transpose(1, 2).reshape(B, T, E), p + "self_attn.dense")
    mlp = linear(act(linear(x, p + "mlp.fc1")), p + "mlp.fc2")
    h = attn + mlp + h
h = ln(h, "model.final_layernorm")
head = w["lm_head.weight"] if "lm_head.weight" in w else w["model.embed_tokens.weight"]
write_logits(sys.argv[1], h @ head.T + w["lm_head.bias"])

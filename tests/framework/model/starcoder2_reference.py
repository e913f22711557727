"""Independent reference: transformers' Starcoder2ForCausalLM, forward written out in
python3-torch in fp64 from the checkpoint's own names; transformers itself is not
installed here. Starcoder2DecoderLayer: input_layernorm and post_attention_layernorm
(LayerNorms with biases), the two residual adds in sequence; attention: q/k/v/o_proj
with biases when use_bias, RoPE (rotate-half) on whole heads, scores times
head_dim ** -0.5, grouped queries, each query seeing the last sliding_window keys
(itself included) when set; Starcoder2MLP: mlp.c_proj(gelu_pytorch_tanh(mlp.c_fc(x)));
the final norm (a LayerNorm); the head tied to embed_tokens unless lm_head is there.

Inputs, outputs and `--adapter ADIR` / `--merged` (PEFT's LoRA formula, or its merge):
tests/support/reference_io.py."""
import os
import sys
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../support"))
from reference_io import peft_linear, read_inputs, rotate_half_rope, write_logits  # noqa: E402

cfg, w, ids, lora, scaling = read_inputs(sys.argv, "starcoder2")

E = cfg["hidden_size"]
H = cfg["num_attention_heads"]
KV = cfg.get("num_key_value_heads") or H
D = E // H
eps = cfg.get("norm_epsilon", 1e-5)
theta = cfg.get("rope_theta", 10000.0)
window = cfg.get("sliding_window")


def ln(x, name):
    return torch.nn.functional.layer_norm(x, (E,), w[name + ".weight"], w[name + ".bias"], eps)


linear = peft_linear(w, lora, scaling)


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh((2.0 / torch.pi) ** 0.5 * (x + 0.044715 * x ** 3)))


B, T = ids.shape
rope = rotate_half_rope(T, D, theta)


t = torch.arange(T)
hidden = t[None, :] > t[:, None]
if window:
    hidden = hidden | (t[None, :] <= t[:, None] - window)
mask = torch.zeros(T, T, dtype=torch.float64).masked_fill(hidden, float("-inf"))
h = w["model.embed_tokens.weight"][ids]
for i in range(cfg["num_hidden_layers"]):
    p = f"model.layers.{i}."
    x = ln(h, p + "input_layernorm")
    q = rope(linear(x, p + "self_attn.q_proj").view(B, T, H, D).transpose(1, 2))
    k = rope(linear(x, p + "self_attn.k_proj").view(B, T, KV, D).transpose(1, 2)).repeat_interleave(H // KV, dim=1)
    v = linear(x, p + "self_attn.v_proj").view(B, T, KV, D).transpose(1, 2).repeat_interleave(H // KV, dim=1)
    a = torch.softmax(q @ k.transpose(-1, -2) * D ** -0.5 + mask, -1) @ v
    h = h + linear(a.transpose(1, 2).reshape(B, T, E), p + "self_attn.o_proj")
    h = h + linear(gelu_tanh(linear(ln(h, p + "post_attention_layernorm"), p + "mlp.c_fc")), p + "mlp.c_proj")
h = ln(h, "model.norm")
head = w["lm_head.weight"] if "lm_head.weight" in w else w["model.embed_tokens.weight"]
write_logits(sys.argv[1], h @ head.T)

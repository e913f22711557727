"""Independent reference: transformers' GptOssForCausalLM, forward written out in
python3-torch in fp64 from the checkpoint's names (transformers is not installed
here). RMSNorms (weight times the normalised input); attention with biases on q, k, v
and o, rotate-half RoPE (YaRN when rope_scaling says so: its ramp between beta_fast
and beta_slow, cos and sin times 0.1 ln(factor) + 1), key/value heads repeated,
scores times head_dim ** -0.5, a window of sliding_window keys on the layers
layer_types marks sliding_attention (by default the even ones), and each head's sink
logit appended to its softmax and dropped after; the MoE MLP of every layer: the
router's logits x W^T + b, the top k of them softmaxed, each chosen expert
gate_up = x @ gate_up_proj[e] + bias, gate = gate_up[..., ::2] clamped above at
swiglu_limit, up = gate_up[..., 1::2] clamped to ±swiglu_limit, (up + 1) * gate *
sigmoid(1.702 gate) @ down_proj[e] + bias, weighted and summed; the final norm;
logits = lm_head(h).

Inputs, outputs and `--adapter ADIR` / `--merged` (PEFT's LoRA formula, or its merge):
tests/support/reference_io.py."""
import os, sys
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../support"))
from reference_io import peft_linear, read_inputs, write_logits, yarn_inv_freq  # noqa: E402

cfg, w, ids, lora, scaling = read_inputs(sys.argv, "gpt_oss")

E = cfg["hidden_size"]
H = cfg["num_attention_heads"]
KV = cfg.get("num_key_value_heads", 8)
D = cfg.get("head_dim", 64)
L = cfg["num_hidden_layers"]
eps = cfg.get("rms_norm_eps", 1e-5)
theta = cfg.get("rope_theta", 150000.0)
k_top = cfg.get("num_experts_per_tok", 4)
n_experts = cfg.get("num_local_experts", 128)
limit = cfg.get("swiglu_limit", 7.0)
window = cfg.get("sliding_window", 128)
types = cfg.get("layer_types") or ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(L)]
linear = peft_linear(w, lora, scaling)


def rms(x, g):
    return g * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


B, T = ids.shape
inv = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
attn_factor = 1.0
rs = cfg.get("rope_scaling")
if rs and rs.get("rope_type", rs.get("type")) == "yarn":  # transformers' _compute_yarn_parameters
    inv, attn_factor = yarn_inv_freq(rs, D, theta, cfg.get("max_position_embeddings", 131072), torch.float64)
freqs = torch.outer(torch.arange(T, dtype=torch.float64), inv)
cos, sin = freqs.cos() * attn_factor, freqs.sin() * attn_factor


def rope(x):  # x [B, heads, T, D]: halves rotated
    a, b = x[..., : D // 2], x[..., D // 2:]
    return torch.cat([a * cos - b * sin, b * cos + a * sin], -1)


t = torch.arange(T)
causal = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
windowed = causal.masked_fill(t[None, :] <= t[:, None] - window, float("-inf"))
h = w["model.embed_tokens.weight"][ids]
for i in range(L):
    p = f"model.layers.{i}."
    x = rms(h, w[p + "input_layernorm.weight"])
    q = rope(linear(x, p + "self_attn.q_proj").view(B, T, H, D).transpose(1, 2))
    k = rope(linear(x, p + "self_attn.k_proj").view(B, T, KV, D).transpose(1, 2))
    v = linear(x, p + "self_attn.v_proj").view(B, T, KV, D).transpose(1, 2)
    k, v = k.repeat_interleave(H // KV, 1), v.repeat_interleave(H // KV, 1)
    scores = q @ k.transpose(-1, -2) * D ** -0.5 + (windowed if types[i] == "sliding_attention" else causal)
    sinks = w[p + "self_attn.sinks"].view(1, H, 1, 1).expand(B, H, T, 1)
    probs = torch.softmax(torch.cat([scores, sinks], -1), -1)[..., :-1]
    a = (probs @ v).transpose(1, 2).reshape(B, T, H * D)
    h = h + linear(a, p + "self_attn.o_proj")
    x = rms(h, w[p + "post_attention_layernorm.weight"]).reshape(B * T, E)
    logits = x @ w[p + "mlp.router.weight"].T + w[p + "mlp.router.bias"]
    top, chosen = torch.topk(logits, k_top, dim=-1)
    weights = torch.softmax(top, dim=-1)
    out = torch.zeros_like(x)
    for e in range(n_experts):
        token, slot = torch.where(chosen == e)
        if token.numel() == 0:
            continue
        gu = x[token] @ w[p + "mlp.experts.gate_up_proj"][e] + w[p + "mlp.experts.gate_up_proj_bias"][e]
        gate, up = gu[..., ::2].clamp(max=limit), gu[..., 1::2].clamp(min=-limit, max=limit)
        y = ((up + 1) * gate * torch.sigmoid(gate * 1.702)) @ w[p + "mlp.experts.down_proj"][e] + w[p + "mlp.experts.down_proj_bias"][e]
        out.index_add_(0, token, y * weights[token, slot, None])
    h = h + out.view(B, T, E)
h = rms(h, w["model.norm.weight"])
write_logits(sys.argv[1], linear(h, "lm_head") if "lm_head.weight" in w else h @ w["model.embed_tokens.weight"].T)

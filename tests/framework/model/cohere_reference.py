"""Independent reference: transformers' CohereForCausalLM (Command R, Aya), forward
written out in python3-torch in fp64 from the checkpoint's names; transformers itself
is not installed here. CohereLayerNorm: (x - mean) * rsqrt(var + eps) * weight, no
bias; one input_layernorm per layer, read by both branches, h + attn(ln(h)) + mlp(ln(h));
RoPE rotating adjacent pairs (rotate_half: x1 = x[..., ::2], x2 = x[..., 1::2] ->
stack([-x2, x1], -1).flatten(-2)) with cos/sin repeat_interleave'd; with use_qk_norm, a
CohereLayerNorm of q and k over each head's dimensions, weights [heads, head_dim],
before RoPE; scores times head_dim ** -0.5, key/value heads repeated for grouped
queries; o_proj (biases on q/k/v/o with attention_bias); the SwiGLU MLP; the final
norm; logits = lm_head(h) * logit_scale.

Cohere 2 (Cohere2ForCausalLM: Command R7B, Aya Expanse): the same layer without q/k
norms, and layer types from layer_types or, without it, sliding_window_pattern (4):
layer i is "sliding_attention" unless (i + 1) % pattern == 0. A sliding layer (with a
sliding_window, 4096 unless set; null: none) rotates q and k and its query at t sees
keys (t - window, t]; the other layers attend causally without positions (NoPE).

Inputs, outputs and `--adapter ADIR` / `--merged` (PEFT's LoRA formula, or its merge):
tests/support/reference_io.py."""
import json, os, sys
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../support"))
from reference_io import peft_linear, read_inputs, write_logits  # noqa: E402

model_type = json.load(open(sys.argv[1] + "/config.json"))["model_type"]
assert model_type in ("cohere", "cohere2"), model_type
cfg, w, ids, lora, scaling = read_inputs(sys.argv, model_type)
cohere2 = model_type == "cohere2"
L = cfg["num_hidden_layers"]
window = cfg.get("sliding_window", 4096) if cohere2 else None
pattern = cfg.get("sliding_window_pattern", 4)
types = cfg.get("layer_types") or ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(L)]

E = cfg["hidden_size"]
H = cfg["num_attention_heads"]
KV = cfg.get("num_key_value_heads") or H
D = cfg.get("head_dim") or E // H
eps = cfg.get("layer_norm_eps", 1e-5)
theta = cfg.get("rope_theta", 10000.0)
logit_scale = cfg.get("logit_scale", 0.0625)
qk_norm = cfg.get("use_qk_norm", False)
act = {"silu": torch.nn.functional.silu, "gelu": torch.nn.functional.gelu}[cfg.get("hidden_act", "silu")]


def ln(x, weight):
    mean = x.mean(-1, keepdim=True)
    var = (x - mean).pow(2).mean(-1, keepdim=True)
    return (x - mean) * torch.rsqrt(var + eps) * weight


linear = peft_linear(w, lora, scaling)


def rotate(x):
    x1, x2 = x[..., ::2], x[..., 1::2]
    return torch.stack([-x2, x1], -1).flatten(-2)


B, T = ids.shape
inv = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
freqs = torch.outer(torch.arange(T, dtype=torch.float64), inv)
emb = torch.repeat_interleave(freqs, 2, dim=-1)
cos, sin = emb.cos(), emb.sin()


def rope(x):  # x [B, heads, T, D]
    return x * cos + rotate(x) * sin


mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
t = torch.arange(T)
windowed = mask.masked_fill((t[None, :] <= t[:, None] - (window or 0)), float("-inf"))
h = w["model.embed_tokens.weight"][ids]
for i in range(L):
    sliding = cohere2 and types[i] == "sliding_attention" and window is not None
    positions = not cohere2 or sliding
    p = f"model.layers.{i}."
    x = ln(h, w[p + "input_layernorm.weight"])
    q = linear(x, p + "self_attn.q_proj").view(B, T, H, D)
    k = linear(x, p + "self_attn.k_proj").view(B, T, KV, D)
    v = linear(x, p + "self_attn.v_proj").view(B, T, KV, D)
    if qk_norm:
        q = ln(q, w[p + "self_attn.q_norm.weight"])
        k = ln(k, w[p + "self_attn.k_norm.weight"])
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if positions:
        q, k = rope(q), rope(k)
    k = k.repeat_interleave(H // KV, dim=1)
    v = v.repeat_interleave(H // KV, dim=1)
    a = torch.softmax(q @ k.transpose(-1, -2) * D ** -0.5 + (windowed if sliding else mask), -1) @ v
    attn = linear(a.transpose(1, 2).reshape(B, T, H * D), p + "self_attn.o_proj")
    mlp = linear(act(linear(x, p + "mlp.gate_proj")) * linear(x, p + "mlp.up_proj"), p + "mlp.down_proj")
    h = h + attn + mlp
h = ln(h, w["model.norm.weight"])
head = w["lm_head.weight"] if "lm_head.weight" in w else w["model.embed_tokens.weight"]
logits = (h @ head.T) * logit_scale
write_logits(sys.argv[1], logits)

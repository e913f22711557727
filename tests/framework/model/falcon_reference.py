"""Independent reference: transformers' FalconForCausalLM, forward written out in
python3-torch in fp64 from the checkpoint's names (transformers is not installed
here) and FalconConfig's fields (no ALiBi). query_key_value's output viewed as
FalconAttention._split_heads does: new_decoder_architecture [.., num_kv_heads, G + 2,
D] (G query heads, then the group's key, then its value); else multi_query
[.., heads + 2, D] (queries, one key, one value); else [.., heads, 3, D]. Rotate-half
RoPE (rope_theta), scores / sqrt(D). The layer (FalconDecoderLayer.forward):
new_decoder_architecture with num_ln_in_parallel_attn 2 (its default): ln_attn(h)
feeds the attention, ln_mlp(h) the MLP, out = h + attn + mlp; parallel_attn with one
norm: input_layernorm(h) feeds both; otherwise sequential, post_attention_layernorm
before the MLP. LayerNorms with biases (layer_norm_epsilon); biases on the
projections with `bias`; MLP dense_4h_to_h(act(dense_h_to_4h(x))). ln_f; logits h
word_embeddings^T (tied) or lm_head.

Inputs, outputs and `--adapter ADIR` / `--merged` (PEFT's LoRA formula, or its merge):
tests/support/reference_io.py."""
import os, sys
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../support"))
from reference_io import layer_norm_by_name, peft_linear, read_inputs, rotate_half_rope, write_logits  # noqa: E402

cfg, w, ids, lora, scaling = read_inputs(sys.argv, "falcon")
E, H, L = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"]
D = E // H
eps = cfg.get("layer_norm_epsilon", 1e-5)
new_arch = cfg.get("new_decoder_architecture", False)
multi_query = cfg.get("multi_query", True)
parallel = cfg.get("parallel_attn", True)
n_ln = cfg.get("num_ln_in_parallel_attn") or (2 if new_arch else 1)
KV = (cfg.get("num_kv_heads") or H) if new_arch else (1 if multi_query else H)
act = {"gelu": torch.nn.functional.gelu, "relu": torch.relu, "silu": torch.nn.functional.silu}[cfg.get("activation", "gelu")]
linear = peft_linear(w, lora, scaling)


layer_norm = layer_norm_by_name(w, eps)


B, T = ids.shape
rope = rotate_half_rope(T, D, cfg.get("rope_theta", 10000.0))
causal = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)


def attention(x, p):
    fused = linear(x, p + "self_attention.query_key_value")
    if new_arch:
        g = fused.view(B, T, KV, H // KV + 2, D)
        q, k, v = g[:, :, :, :-2].reshape(B, T, H, D), g[:, :, :, -2], g[:, :, :, -1]
    elif multi_query:
        g = fused.view(B, T, H + 2, D)
        q, k, v = g[:, :, :-2], g[:, :, -2:-1], g[:, :, -1:]
    else:
        g = fused.view(B, T, H, 3, D)
        q, k, v = g[..., 0, :], g[..., 1, :], g[..., 2, :]
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, heads, T, D]
    q, k = rope(q), rope(k)
    k, v = k.repeat_interleave(H // k.shape[1], 1), v.repeat_interleave(H // v.shape[1], 1)
    a = torch.softmax(q @ k.transpose(-1, -2) / D ** 0.5 + causal, -1) @ v
    return linear(a.transpose(1, 2).reshape(B, T, E), p + "self_attention.dense")


def mlp(x, p):
    return linear(act(linear(x, p + "mlp.dense_h_to_4h")), p + "mlp.dense_4h_to_h")


h = w["transformer.word_embeddings.weight"][ids]
for i in range(L):
    p = f"transformer.h.{i}."
    if new_arch and n_ln == 2:
        h = h + attention(layer_norm(h, p + "ln_attn"), p) + mlp(layer_norm(h, p + "ln_mlp"), p)
    elif parallel:
        x = layer_norm(h, p + "input_layernorm")
        h = h + attention(x, p) + mlp(x, p)
    else:
        h = h + attention(layer_norm(h, p + "input_layernorm"), p)
        h = h + mlp(layer_norm(h, p + "post_attention_layernorm"), p)
h = layer_norm(h, "transformer.ln_f")
write_logits(sys.argv[1], linear(h, "lm_head") if "lm_head.weight" in w else h @ w["transformer.word_embeddings.weight"].T)

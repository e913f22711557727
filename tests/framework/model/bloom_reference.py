"""Independent reference: transformers' BloomForCausalLM, forward written out in
python3-torch in fp64 from the checkpoint's own names and layout; transformers itself
is not installed here. BloomModel: word_embeddings, then word_embeddings_layernorm;
no position embedding: ALiBi (build_alibi_tensor: slopes (2^(-8/n))^i, i = 1..n, for
the largest power of two n <= n_head, then (2^(-4/n))^i for odd i, times each key's
index among its row's unpadded tokens, (cumsum(mask) - 1) * mask, added to the scores).
BloomBlock: input_layernorm; self_attention.query_key_value viewed [.., n_head, 3,
head_dim] (q, k, v interleaved by head), scores q.k / sqrt(head_dim) + alibi, softmax,
self_attention.dense; residual add; post_attention_layernorm; mlp.dense_h_to_4h,
BloomGelu (x/2 (1 + tanh(0.79788456 x (1 + 0.044715 x^2)))), mlp.dense_4h_to_h;
residual add. ln_f, then the head tied to word_embeddings.

Reads DIR/config.json, DIR/model.safetensors, DIR/ids.safetensors and, if present,
DIR/mask.safetensors (an attention mask [B, T]: 0 marks padding, which the logits of
padded positions do not matter for); writes DIR/reference_logits.safetensors.

With `--adapter ADIR` (a PEFT LoRA adapter), every adapted linear layer computes
PEFT's Linear.forward, x W^T + b + scaling * (x A^T) B^T, with A and B as the file
holds them under BLOOM's module names; with `--merged`, W + scaling * (B A)."""
import math
import os
import sys
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../support"))
from reference_io import peft_linear, read_inputs, write_logits  # noqa: E402
from safetensors_py import load  # noqa: E402

cfg, w, ids, lora, scaling = read_inputs(sys.argv, "bloom")
w = {(k if k.startswith("transformer.") or k.startswith("lm_head") else "transformer." + k): v for k, v in w.items()}
lora = {(k if k.startswith("transformer.") else "transformer." + k): v for k, v in lora.items()}

E = cfg.get("hidden_size", cfg.get("n_embed"))
H = cfg["n_head"]
D = E // H
eps = cfg.get("layer_norm_epsilon", 1e-5)
B, T = ids.shape
mask_file = sys.argv[1] + "/mask.safetensors"
mask = load(mask_file)["mask"].long() if os.path.exists(mask_file) else torch.ones(B, T, dtype=torch.long)


def ln(x, name):
    return torch.nn.functional.layer_norm(x, (E,), w[name + ".weight"], w[name + ".bias"], eps)


dense = peft_linear(w, lora, scaling)


def gelu(x):
    return x * 0.5 * (1.0 + torch.tanh(0.79788456 * x * (1 + 0.044715 * x * x)))


n = 2 ** math.floor(math.log2(H))
slopes = [(2 ** (-8 / n)) ** i for i in range(1, n + 1)]
slopes += [(2 ** (-8 / (2 * n))) ** i for i in range(1, 2 * min(n, H - n), 2)]
slopes = torch.tensor(slopes, dtype=torch.float64)
key_index = ((mask.cumsum(-1) - 1) * mask).double()                  # [B, T]
alibi = slopes[None, :, None, None] * key_index[:, None, None, :]   # [B, H, 1, T]
blocked = torch.ones(T, T, dtype=torch.bool).triu(1)[None, None] | (mask == 0)[:, None, None, :]

h = ln(w["transformer.word_embeddings.weight"][ids], "transformer.word_embeddings_layernorm")
for i in range(cfg["n_layer"]):
    p = f"transformer.h.{i}."
    qkv = dense(ln(h, p + "input_layernorm"), p + "self_attention.query_key_value").view(B, T, H, 3, D)
    q, k, v = (qkv[..., j, :].transpose(1, 2) for j in range(3))
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(D) + alibi
    a = torch.softmax(scores.masked_fill(blocked, torch.finfo(torch.float64).min), -1) @ v  # padded rows: finite
    h = h + dense(a.transpose(1, 2).reshape(B, T, E), p + "self_attention.dense")
    m = dense(gelu(dense(ln(h, p + "post_attention_layernorm"), p + "mlp.dense_h_to_4h")), p + "mlp.dense_4h_to_h")
    h = h + m
h = ln(h, "transformer.ln_f")
head = w["lm_head.weight"] if "lm_head.weight" in w else w["transformer.word_embeddings.weight"]
write_logits(sys.argv[1], h @ head.T)

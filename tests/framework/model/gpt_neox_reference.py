"""Independent reference: transformers' GPTNeoXForCausalLM (Pythia), forward written
out in python3-torch in fp64 from the checkpoint's own names and layout; transformers
itself is not installed here. GPTNeoXLayer: LayerNorms with biases; one
attention.query_key_value projection whose output is viewed [.., heads, 3 * head_size]
and chunked into q, k, v (so its rows interleave the heads); RoPE (rotate-half) on the
first int(head_size * rotary_pct) dimensions of each head, base rotary_emb_base;
scores times head_size ** -0.5; attention.dense with bias; the MLP
dense_4h_to_h(act(dense_h_to_4h(x))); with use_parallel_residual,
h + attn(input_layernorm(h)) + mlp(post_attention_layernorm(h)), else the two
residual adds in sequence; final_layer_norm, then embed_out.

Reads DIR/config.json, DIR/model.safetensors and DIR/ids.safetensors; writes
DIR/reference_logits.safetensors (tests/support/safetensors_py.py).

With `--adapter ADIR` (a PEFT LoRA adapter), every adapted linear layer computes
PEFT's Linear.forward, x W^T + b + scaling * (x A^T) B^T, with A and B as the file
holds them under GPT-NeoX's module names (query_key_value's B rows in the module's
own, head-interleaved, order); with `--merged`, W + scaling * (B A) instead."""
import os, sys
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../support"))
from reference_io import read_inputs, write_logits  # noqa: E402

cfg, w, ids, lora, scaling = read_inputs(sys.argv, "gpt_neox")

E = cfg["hidden_size"]
H = cfg["num_attention_heads"]
D = E // H
RD = int(D * cfg.get("rotary_pct", cfg.get("partial_rotary_factor", 0.25)))
theta = cfg.get("rotary_emb_base", cfg.get("rope_theta", 10000))
eps = cfg.get("layer_norm_eps", 1e-5)
parallel = cfg.get("use_parallel_residual", True)
act = {"gelu": torch.nn.functional.gelu, "gelu_new": lambda x: torch.nn.functional.gelu(x, approximate="tanh")}[
    cfg.get("hidden_act", "gelu")]


def ln(x, name):
    return torch.nn.functional.layer_norm(x, (E,), w[name + ".weight"], w[name + ".bias"], eps)


def dense(x, name):
    y = x @ w[name + ".weight"].T + w[name + ".bias"]
    if name + ".weight" in lora:
        ab = lora[name + ".weight"]
        y = y + (x @ ab["A"].T @ ab["B"].T) * scaling
    return y


def rot(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], -1)


B, T = ids.shape
inv = 1.0 / (theta ** (torch.arange(0, RD, 2, dtype=torch.float64) / RD))
freqs = torch.outer(torch.arange(T, dtype=torch.float64), inv)
cos, sin = torch.cat([freqs, freqs], -1).cos(), torch.cat([freqs, freqs], -1).sin()


def rope(x):  # x [B, H, T, D]
    xr, xp = x[..., :RD], x[..., RD:]
    return torch.cat([xr * cos + rot(xr) * sin, xp], -1)


mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
h = w["gpt_neox.embed_in.weight"][ids]
for i in range(cfg["num_hidden_layers"]):
    p = f"gpt_neox.layers.{i}."
    qkv = dense(ln(h, p + "input_layernorm"), p + "attention.query_key_value")
    q, k, v = qkv.view(B, T, H, 3 * D).transpose(1, 2).chunk(3, dim=-1)
    q, k = rope(q), rope(k)
    a = torch.softmax(q @ k.transpose(-1, -2) * D ** -0.5 + mask, -1) @ v
    attn = dense(a.transpose(1, 2).reshape(B, T, E), p + "attention.dense")
    if parallel:
        m = dense(act(dense(ln(h, p + "post_attention_layernorm"), p + "mlp.dense_h_to_4h")), p + "mlp.dense_4h_to_h")
        h = m + attn + h
    else:
        h = attn + h
        m = dense(act(dense(ln(h, p + "post_attention_layernorm"), p + "mlp.dense_h_to_4h")), p + "mlp.dense_4h_to_h")
        h = m + h
h = ln(h, "gpt_neox.final_layer_norm")
head = w["embed_out.weight"] if "embed_out.weight" in w else w["gpt_neox.embed_in.weight"]
logits = h @ head.T
write_logits(sys.argv[1], logits)

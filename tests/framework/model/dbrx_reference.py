"""Independent reference: transformers' DbrxForCausalLM, forward written out in
python3-torch in fp64 from the checkpoint's names (transformers is not installed
here) and DbrxConfig's nested fields. Each block: h + out_proj(attention(norm_1(h)))
with bias-free LayerNorms (eps 1e-5); Wqkv's output clamped to +-attn_config.clip_qkv
(when set), split q [d_model], k, v [kv_n_heads * head_dim]; rotate-half RoPE of base
attn_config.rope_theta; key/value heads repeated; scores / sqrt(head_dim). Then
h + ffn(norm_2(h)): router probabilities softmax(x layer^T), the moe_top_k largest,
divided by their p-norm (p = moe_normalize_expert_weights, none when null); expert e
(rows e*I .. of ffn.experts.mlp.w1, v1, w2 [E*I, d_model]) computes
(act(x w1_e^T) * x v1_e^T) @ w2_e; weighted sum. Finally norm_f and lm_head. With
output_router_logits, aux_loss: load_balancing_loss_func of the layers' router
outputs, which for DBRX are the probabilities (softmaxed once more there).

Inputs, outputs and `--adapter ADIR` / `--merged` (PEFT's LoRA formula, or its merge):
tests/support/reference_io.py."""
import os, sys
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../support"))
from reference_io import load_balancing_loss, peft_linear, read_inputs  # noqa: E402
from safetensors_py import save  # noqa: E402

cfg, w, ids, lora, scaling = read_inputs(sys.argv, "dbrx")
attn_cfg, ffn_cfg = cfg.get("attn_config") or {}, cfg.get("ffn_config") or {}
E = cfg.get("hidden_size", cfg.get("d_model", 2048))
H = cfg.get("num_attention_heads", cfg.get("n_heads", 16))
L = cfg.get("num_hidden_layers", cfg.get("n_layers", 24))
D = E // H
KV = attn_cfg.get("kv_n_heads", 1)
theta = attn_cfg.get("rope_theta", 10000.0)
clip = attn_cfg.get("clip_qkv")
I = ffn_cfg.get("ffn_hidden_size", 3584)
n_experts = ffn_cfg.get("moe_num_experts", 4)
k_top = ffn_cfg.get("moe_top_k", 1)
p_norm = ffn_cfg.get("moe_normalize_expert_weights", 1.0)
act_name = (ffn_cfg.get("ffn_act_fn") or {}).get("name", "silu")
act = {"silu": torch.nn.functional.silu, "gelu": torch.nn.functional.gelu, "relu": torch.relu}[act_name]
linear = peft_linear(w, lora, scaling)


def layer_norm(x, g):  # nn.LayerNorm(d_model, bias=False)
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + 1e-5) * g


B, T = ids.shape
inv = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
freqs = torch.outer(torch.arange(T, dtype=torch.float64), inv)
cos, sin = torch.cat([freqs, freqs], -1).cos(), torch.cat([freqs, freqs], -1).sin()


def rope(x):  # x [B, heads, T, D]: halves rotated
    return x * cos + torch.cat([-x[..., D // 2:], x[..., : D // 2]], -1) * sin


router_outputs = []  # what DbrxBlock returns as its router logits: the probabilities
causal = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
h = w["transformer.wte.weight"][ids]
for i in range(L):
    p = f"transformer.blocks.{i}."
    x = layer_norm(h, w[p + "norm_attn_norm.norm_1.weight"])
    qkv = linear(x, p + "norm_attn_norm.attn.Wqkv")
    if clip is not None:
        qkv = qkv.clamp(min=-clip, max=clip)
    q, k, v = qkv.split([H * D, KV * D, KV * D], -1)
    q = rope(q.view(B, T, H, D).transpose(1, 2))
    k = rope(k.view(B, T, KV, D).transpose(1, 2)).repeat_interleave(H // KV, 1)
    v = v.view(B, T, KV, D).transpose(1, 2).repeat_interleave(H // KV, 1)
    probs = torch.softmax(q @ k.transpose(-1, -2) / D ** 0.5 + causal, -1)
    a = (probs @ v).transpose(1, 2).reshape(B, T, H * D)
    h = h + linear(a, p + "norm_attn_norm.attn.out_proj")
    x = layer_norm(h, w[p + "norm_attn_norm.norm_2.weight"]).reshape(B * T, E)
    router = torch.softmax(x @ w[p + "ffn.router.layer.weight"].T, -1)
    router_outputs.append(router)
    top, chosen = torch.topk(router, k_top, dim=-1)
    if p_norm is not None:
        top = top / torch.norm(top, p=p_norm, dim=-1, keepdim=True)
    w1 = w[p + "ffn.experts.mlp.w1"].view(n_experts, I, E)
    v1 = w[p + "ffn.experts.mlp.v1"].view(n_experts, I, E)
    w2 = w[p + "ffn.experts.mlp.w2"].view(n_experts, I, E)
    out = torch.zeros_like(x)
    for e in range(n_experts):
        token, slot = torch.where(chosen == e)
        if token.numel() == 0:
            continue
        xe = x[token]
        y = (act(xe @ w1[e].T) * (xe @ v1[e].T)) @ w2[e]
        out.index_add_(0, token, y * top[token, slot, None])
    h = h + out.view(B, T, E)
h = layer_norm(h, w["transformer.norm_f.weight"])
out = {"logits": linear(h, "lm_head").float()}
if cfg.get("output_router_logits"):  # DbrxForCausalLM.forward: load_balancing_loss_func softmaxes them again
    out["aux_loss"] = load_balancing_loss(router_outputs, n_experts, k_top).reshape(1).float()
save(sys.argv[1] + "/reference_logits.safetensors", out)
print("reference logits", tuple(out["logits"].shape))

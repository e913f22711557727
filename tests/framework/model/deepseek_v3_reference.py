"""Independent reference: transformers' DeepseekV3ForCausalLM, forward written out in
python3-torch in fp64 from the checkpoint's names (transformers is not installed
here), DeepseekV3Config's defaults where config.json is silent.

Multi-head latent attention (DeepseekV3Attention), per layer on x = input_layernorm(h):
  q = q_proj(x), or q_b_proj(q_a_layernorm(q_a_proj(x))) with q_lora_rank, viewed
      [B, T, H, qk_nope_head_dim + qk_rope_head_dim] and split into q_pass, q_rot;
  kv_a_proj_with_mqa(x) split into the latent c [kv_lora_rank] and k_rot
      [qk_rope_head_dim], one for all heads;
  kv_b_proj(kv_a_layernorm(c)) viewed [B, T, H, qk_nope_head_dim + v_head_dim] and
      split into k_pass and v;
  RoPE on q_rot and k_rot only: with rope_interleave (the default) each is first
      de-interleaved (view [.., d/2, 2], transpose, reshape: the even dimensions, then
      the odd) and then rotated by rotate-half, as apply_rotary_pos_emb_interleave;
      else plain rotate-half; head_dim = qk_rope_head_dim frequencies, YaRN when
      rope_scaling says so (cos and sin times its attention factor);
  query [q_pass, q_rot], key [k_pass, k_rot] per head, scores times
      qk_head_dim ** -0.5, times mscale ** 2 = (0.1 mscale_all_dim ln factor + 1) ** 2
      when rope_scaling has mscale_all_dim; causal softmax; o_proj.
The latent norms are DeepseekV3RMSNorm(width), eps 1e-6 whatever rms_norm_eps says.
The MLP: dense for the first first_k_dense_replace layers, else DeepseekV3MoE: sigmoid
router in fp32 with the correction bias and groups (reference_io.sigmoid_group_topk),
each chosen expert's SwiGLU times its weight, plus the ungated shared experts.

Inputs, outputs and `--adapter ADIR` / `--merged` (PEFT's LoRA formula, or its merge):
tests/support/reference_io.py."""
import math, os, sys
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../support"))
from reference_io import peft_linear, read_inputs, sigmoid_group_topk, write_logits, yarn_inv_freq  # noqa: E402

cfg, w, ids, lora, scaling = read_inputs(sys.argv, "deepseek_v3")

H = cfg["num_attention_heads"]
L = cfg["num_hidden_layers"]
eps = cfg.get("rms_norm_eps", 1e-6)
theta = cfg.get("rope_theta", 10000.0)
q_lora_rank = cfg.get("q_lora_rank", 1536)  # null: q_proj
kv_lora_rank = cfg.get("kv_lora_rank", 512)
nope = cfg.get("qk_nope_head_dim", 128)
R = cfg.get("qk_rope_head_dim", 64)
V = cfg.get("v_head_dim", 128)
interleave = cfg.get("rope_interleave", True)
dense_layers = cfg.get("first_k_dense_replace", 3)
n_experts = cfg.get("n_routed_experts", 256)
k_top = cfg.get("num_experts_per_tok", 8)
linear = peft_linear(w, lora, scaling)


def rms(x, g, e=eps):
    return g * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + e))


def swiglu(x, pre):
    return linear(torch.nn.functional.silu(linear(x, pre + "gate_proj")) * linear(x, pre + "up_proj"), pre + "down_proj")


B, T = ids.shape
inv = 1.0 / (theta ** (torch.arange(0, R, 2, dtype=torch.float64) / R))
attn_factor = 1.0
rs = cfg.get("rope_scaling")
scaling_factor = (nope + R) ** -0.5
if rs and rs.get("rope_type", rs.get("type")) == "yarn":  # transformers' _compute_yarn_parameters over head_dim = R
    inv, attn_factor = yarn_inv_freq(rs, R, theta, cfg.get("max_position_embeddings", 4096), torch.float64)
if rs and rs.get("mscale_all_dim") and rs["factor"] > 1:  # DeepseekV3Attention: self.scaling * mscale * mscale
    mscale = 0.1 * rs["mscale_all_dim"] * math.log(rs["factor"]) + 1.0
    scaling_factor = scaling_factor * mscale * mscale
freqs = torch.outer(torch.arange(T, dtype=torch.float64), inv)
emb = torch.cat([freqs, freqs], -1)
cos, sin = emb.cos() * attn_factor, emb.sin() * attn_factor  # [T, R]


def rope(x):  # x [B, heads, T, R]
    if interleave:  # apply_rotary_pos_emb_interleave: evens, then odds
        b, h, s, d = x.shape
        x = x.view(b, h, s, d // 2, 2).transpose(4, 3).reshape(b, h, s, d)
    rotated = torch.cat([-x[..., R // 2:], x[..., :R // 2]], -1)
    return x * cos + rotated * sin


causal = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
h = w["model.embed_tokens.weight"][ids]
for i in range(L):
    p = f"model.layers.{i}."
    x = rms(h, w[p + "input_layernorm.weight"])
    a = p + "self_attn."
    if q_lora_rank is None:
        q = linear(x, a + "q_proj")
    else:
        q = linear(rms(linear(x, a + "q_a_proj"), w[a + "q_a_layernorm.weight"], 1e-6), a + "q_b_proj")
    q = q.view(B, T, H, nope + R).transpose(1, 2)
    q_pass, q_rot = q[..., :nope], q[..., nope:]
    compressed = linear(x, a + "kv_a_proj_with_mqa")
    c, k_rot = compressed[..., :kv_lora_rank], compressed[..., kv_lora_rank:]
    kv = linear(rms(c, w[a + "kv_a_layernorm.weight"], 1e-6), a + "kv_b_proj").view(B, T, H, nope + V).transpose(1, 2)
    k_pass, v = kv[..., :nope], kv[..., nope:]
    q_rot, k_rot = rope(q_rot), rope(k_rot.view(B, 1, T, R))
    query = torch.cat([q_pass, q_rot], -1)
    key = torch.cat([k_pass, k_rot.expand(B, H, T, R)], -1)
    probs = torch.softmax(query @ key.transpose(-1, -2) * scaling_factor + causal, -1)
    h = h + linear((probs @ v).transpose(1, 2).reshape(B, T, H * V), a + "o_proj")
    x = rms(h, w[p + "post_attention_layernorm.weight"])
    if i < dense_layers:
        h = h + swiglu(x, p + "mlp.")
        continue
    m = p + "mlp."
    flat = x.reshape(-1, x.shape[-1])
    scores = linear(flat, m + "gate").sigmoid()
    chosen, top = sigmoid_group_topk(scores, w[m + "gate.e_score_correction_bias"], cfg.get("n_group", 8),
                                     cfg.get("topk_group", 4), k_top, cfg.get("norm_topk_prob", True),
                                     cfg.get("routed_scaling_factor", 2.5))
    out = torch.zeros_like(flat)
    for slot in range(k_top):
        for e in range(n_experts):
            rows = (chosen[:, slot] == e).nonzero().flatten()
            if rows.numel():
                out[rows] += swiglu(flat[rows], m + f"experts.{e}.") * top[rows, slot, None]
    h = h + (out + swiglu(flat, m + "shared_experts.")).reshape(x.shape)
h = rms(h, w["model.norm.weight"])
write_logits(sys.argv[1], linear(h, "lm_head" if "lm_head.weight" in w else "model.embed_tokens"))

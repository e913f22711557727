"""Independent reference: transformers' LlamaForCausalLM and its relatives, forward
written out in python3-torch: MistralForCausalLM (sliding window), Qwen2ForCausalLM
(q/k/v biases) and Qwen3ForCausalLM (q_norm / k_norm on each head before RoPE), both
with their per-layer windows, SmolLM3ForCausalLM (NoPE layers skip RoPE) and
GemmaForCausalLM (RMSNorm by 1 + weight in fp32, embeddings times sqrt(hidden_size),
GELU MLP) and Phi3ForCausalLM (Mistral's window; one qkv_proj whose output is sliced
into q, k, v and one gate_up_proj chunked into gate, up, as Phi3Attention and
Phi3MLP do) and Gemma2ForCausalLM (Gemma's, plus: scores times
query_pre_attn_scalar**-0.5 then soft-capped, cap * tanh(w / cap), before the mask;
post_attention_layernorm on the attention's output, pre_/post_feedforward_layernorm
around the MLP; soft-capped logits; windows on the even layers) and
Gemma3ForCausalLM (gemma3_text: Gemma 2's layer with q_norm/k_norm, no caps by
default, windows on all but every sliding_window_pattern-th layer, which rotate with
rope_local_base_freq unscaled) and OlmoForCausalLM (LayerNorms without parameters,
q/k/v clamped to +-clip_qkv) and Olmo2ForCausalLM (no norms before the
sublayers, post_attention_layernorm / post_feedforward_layernorm on their outputs,
q_norm / k_norm over the whole q and k projections) and GraniteForCausalLM (embeddings
times embedding_multiplier, scores times attention_multiplier, sublayer outputs
times residual_multiplier, logits / logits_scaling) and the mixtures of experts
MixtralForCausalLM, Qwen2MoeForCausalLM (shared expert) and Qwen3MoeForCausalLM (see
sparse_moe below; their dense layers from mlp_only_layers / decoder_sparse_step); RoPE default, linear, llama3, longrope (Phi-3.5:
short or long factors, cos and sin times the attention factor), yarn (NTK-by-parts,
cos and sin times its attention factor) or dynamic (NTK: a larger base past
max_position_embeddings); transformers itself is not installed here. Reads DIR/config.json,
DIR/model.safetensors and DIR/ids.safetensors; writes DIR/reference_logits.safetensors
(read and written by tests/support/safetensors_py.py, from the format spec).

With `--adapter ADIR` (a PEFT LoRA adapter: adapter_config.json and
adapter_model.safetensors), every adapted linear layer computes PEFT's
Linear.forward, x W^T + scaling * (x A^T) B^T; with `--adapter ADIR --merged`, it
uses PEFT's merge_and_unload weight instead, W + scaling * (B A) computed in the
weight's dtype (peft/tuners/lora/layer.py, documented behaviour; scaling =
lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora); DoRA adapters (use_dora)
as tests/support/peft_lora_py.py transcribes them.

With `--bf16-products`, every linear layer (the LM head too) multiplies operands
rounded to bf16 (round-to-nearest-even, torch's .bfloat16()) with fp32 sums and an
fp32 result: CPU bf16 autocast's operands without its rounding of the output."""
import json, math, os, sys
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../support"))
from safetensors_py import load, save  # noqa: E402
from peft_lora_py import adapted, load_lora  # noqa: E402
from reference_io import load_balancing_loss, sigmoid_group_topk, yarn_inv_freq  # noqa: E402

d = sys.argv[1]
cfg = json.load(open(d + "/config.json"))
w = {k: v.float() for k, v in load(d + "/model.safetensors").items()}

# PEFT LoRA: adapted weight's name -> {"A": [r, in], "B": [out, r]} (or merged into w).
lora, scaling = load_lora(sys.argv, w, lambda v: v.float())

bf16_products = "--bf16-products" in sys.argv

def linear(x, name):
    if bf16_products:
        return x.bfloat16().float() @ w[name].bfloat16().float().T
    y = x @ w[name].T
    if name in lora:
        y = adapted(x, w[name], y, lora[name], scaling)
    return y

ids = load(d + "/ids.safetensors")["ids"].long()
H, KV, D = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
olmo = cfg.get("model_type") == "olmo"  # OlmoLayerNorm: no parameters, fp32, eps 1e-5; clip_qkv
eps = 1e-5 if olmo else cfg["rms_norm_eps"]

# transformers 5 keeps rope_theta and the scaling in one rope_parameters object.
rp = cfg.get("rope_parameters") or {}
default_theta = {"smollm3": 2000000.0, "gemma3_text": 1000000.0}.get(cfg.get("model_type"), 10000.0)
theta = rp.get("rope_theta", cfg.get("rope_theta", default_theta))
# Phi3Attention's partial rotary: RoPE on the first RD = int(D * partial_rotary_factor)
# dimensions of each head, the others passed through.
# Glm4MoeConfig: 0.5 unless set. An odd RD gives ceil(RD / 2) frequencies, and rope()
# rotates as many dimensions as cos has (Phi-3's and GLM-4.5's rotary_dim = cos.shape[-1]).
glm4_moe = cfg.get("model_type") == "glm4_moe"
RD = int(D * (rp.get("partial_rotary_factor") or cfg.get("partial_rotary_factor") or (0.5 if glm4_moe else 1.0)))
inv = 1.0 / (theta ** (torch.arange(0, RD, 2).float() / RD))
rs = cfg.get("rope_scaling") or (rp if rp.get("rope_type", "default") != "default" else None)
rope_scale = 1.0  # longrope's and yarn's attention factor on cos and sin
if rs and rs.get("rope_type", rs.get("type")) == "linear":
    inv = inv / rs["factor"]
elif rs and rs.get("rope_type", rs.get("type")) in ("longrope", "su"):
    # transformers' _compute_longrope_parameters, with seq_len = the largest position + 1
    # (the whole sequence here): long factors past the original context, else short.
    orig = rs.get("original_max_position_embeddings") or cfg.get("original_max_position_embeddings") or cfg["max_position_embeddings"]
    factor = rs.get("factor") or cfg["max_position_embeddings"] / orig
    rope_scale = rs.get("attention_factor") or (1.0 if factor <= 1 else math.sqrt(1 + math.log(factor) / math.log(orig)))
    seq_len = ids.shape[1]
    ext = torch.tensor(rs["long_factor"] if seq_len > orig else rs["short_factor"], dtype=torch.float32)
    inv = 1.0 / (ext * theta ** (torch.arange(0, RD, 2).float() / RD))
elif rs and rs.get("rope_type", rs.get("type")) == "yarn":
    # YaRN as transformers' _compute_yarn_parameters (after its fix that keeps the
    # given factor): NTK-by-parts between the dimensions turning beta_fast and
    # beta_slow times in the original context; cos and sin times the attention factor.
    inv, rope_scale = yarn_inv_freq(rs, RD, theta, cfg["max_position_embeddings"], torch.float32)
elif rs and rs.get("rope_type", rs.get("type")) == "dynamic":
    # transformers' _compute_dynamic_ntk_parameters with seq_len = the largest
    # position + 1 (the whole sequence here): a larger base past max_position_embeddings.
    f, M, seq_len = rs["factor"], cfg["max_position_embeddings"], ids.shape[1]
    if seq_len > M:
        base = theta * ((f * seq_len / M) - (f - 1)) ** (RD / (RD - 2))
        inv = 1.0 / (base ** (torch.arange(0, RD, 2, dtype=torch.int64).float() / RD))
elif rs:
    f, lo, hi, old = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"], rs["original_max_position_embeddings"]
    new = []
    for x in inv.tolist():
        wl = 2 * math.pi / x
        if wl < old / hi:
            new.append(x)
        elif wl > old / lo:
            new.append(x / f)
        else:
            s = (old / wl - lo) / (hi - lo)
            new.append((1 - s) * x / f + s * x)
    inv = torch.tensor(new)

gemma3 = cfg.get("model_type") == "gemma3_text"
gemma2 = cfg.get("model_type") == "gemma2" or gemma3
gemma = cfg.get("model_type") == "gemma" or gemma2
# Gemma2Config's defaults where the key is absent; null switches a cap off.
attn_scaling = cfg.get("query_pre_attn_scalar", 256) ** -0.5 if gemma2 else D ** -0.5
attn_cap = cfg.get("attn_logit_softcapping", None if gemma3 else 50.0) if gemma2 else None
final_cap = cfg.get("final_logit_softcapping", None if gemma3 else 30.0) if gemma2 else None
phi3 = cfg.get("model_type") == "phi3"
olmo2 = cfg.get("model_type") == "olmo2"
granite = cfg.get("model_type") == "granite"
if granite:  # GraniteAttention: self.scaling = config.attention_multiplier (GraniteConfig default 1.0)
    attn_scaling = cfg.get("attention_multiplier", 1.0)
residual_multiplier = cfg.get("residual_multiplier", 1.0) if granite else 1.0

def rms(x, g):
    n = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return n * (1.0 + g) if gemma else g * n  # GemmaRMSNorm: (1 + weight)


def norm(x, name):  # the layer's or the final norm: RMSNorm by weight `name`, or OLMo's LayerNorm without one
    if olmo:
        mu = x.mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(((x - mu) ** 2).mean(-1, keepdim=True) + eps)
    return rms(x, w[name])

act = {"silu": torch.nn.functional.silu, "gelu": torch.nn.functional.gelu,
       "gelu_pytorch_tanh": lambda x: torch.nn.functional.gelu(x, approximate="tanh")}[
    cfg.get("hidden_activation") or cfg.get("hidden_act", "gelu_pytorch_tanh" if gemma else "silu")]

def rot(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], -1)

def rope(x, c, s):  # x [.., D]; c, s [.., R]: the first R dimensions rotate (rotary_dim = cos.shape[-1])
    R = c.shape[-1]
    xr, xp = x[..., :R], x[..., R:]
    return torch.cat([xr * c + rot(xr) * s, xp], -1)

B, T = ids.shape
pos = torch.arange(T).float()
fr = torch.outer(pos, inv)
emb = torch.cat([fr, fr], -1)
cos, sin = emb.cos() * rope_scale, emb.sin() * rope_scale
if gemma3:  # Gemma3TextModel's rotary_emb_local: base rope_local_base_freq, no scaling
    local_inv = 1.0 / (cfg.get("rope_local_base_freq", 10000.0) ** (torch.arange(0, D, 2).float() / D))
    local_emb = torch.cat([torch.outer(pos, local_inv)] * 2, -1)
    local_cos, local_sin = local_emb.cos(), local_emb.sin()
h = w["model.embed_tokens.weight"][ids]
if gemma:  # GemmaTextScaledWordEmbedding: times sqrt(hidden_size) as an fp32 tensor
    h = h * torch.tensor(cfg["hidden_size"] ** 0.5)
if granite:  # GraniteModel: inputs_embeds * embedding_multiplier
    h = h * cfg.get("embedding_multiplier", 1.0)
mask = torch.full((T, T), float("-inf")).triu(1)
# Sliding windows as transformers' configs define them: Mistral on every layer;
# Qwen2/Qwen3 only with use_sliding_window, on the layers layer_types marks
# "sliding_attention", by default those with index >= max_window_layers (28).
L, W = cfg["num_hidden_layers"], cfg.get("sliding_window")
# SmolLM3Config: no_rope_layers (1 = RoPE), else a NoPE layer every no_rope_layer_interval.
rope_layers = [1] * L
if cfg.get("model_type") == "smollm3":
    rope_layers = (cfg.get("no_rope_layers") or
                   [int((i + 1) % cfg.get("no_rope_layer_interval", 4) != 0) for i in range(L)])[:L]
if cfg.get("model_type") == "smollm3":  # windows, when used, default to the NoPE layers
    W = W if cfg.get("use_sliding_window") else None
    types = cfg.get("layer_types") or [
        "sliding_attention" if W is not None and not rope_layers[i] else "full_attention" for i in range(L)]
elif gemma2:
    W = cfg.get("sliding_window", 4096)
    period = cfg.get("sliding_window_pattern", 6) if gemma3 else 2
    types = cfg.get("layer_types") or ["sliding_attention" if (i + 1) % period else "full_attention" for i in range(L)]
elif cfg.get("model_type") in ("mistral", "phi3", "mixtral"):
    types = ["sliding_attention"] * L
elif cfg.get("model_type") in ("qwen2", "qwen3", "qwen2_moe", "qwen3_moe"):
    W = W if cfg.get("use_sliding_window") else None
    types = cfg.get("layer_types") or [
        "sliding_attention" if W is not None and i >= cfg.get("max_window_layers", 28) else "full_attention" for i in range(L)]
else:
    W, types = None, ["full_attention"] * L
# Mixture of experts. MixtralSparseMoeBlock (block_sparse_moe: router `gate`, experts
# w1 = gate, w3 = up, w2 = down; top-k probabilities always renormalised) and
# Qwen2Moe/Qwen3MoeSparseMoeBlock (mlp: router `gate`, experts gate_proj/up_proj/
# down_proj; renormalised only with norm_topk_prob; Qwen2-MoE adds shared_expert
# times sigmoid(shared_expert_gate(x))): softmax of the router logits in fp32, the
# top k experts per token, each expert's output times its weight, summed with
# index_add in expert order, one expert at a time as transformers loops.
mixtral = cfg.get("model_type") == "mixtral"
qwen_moe = cfg.get("model_type") in ("qwen2_moe", "qwen3_moe")
n_experts = cfg.get("num_local_experts", 8) if mixtral else cfg.get("num_experts", 0) if qwen_moe else 0
if glm4_moe:  # Glm4MoeConfig's defaults
    n_experts = cfg.get("n_routed_experts", 128)
if cfg.get("model_type") in ("qwen2_moe", "qwen3_moe") and cfg.get("use_sliding_window"):
    if cfg.get("model_type") == "qwen3_moe":  # Qwen3MoeAttention: the window on every layer
        types = ["sliding_attention"] * L

def moe_layer(i):
    if mixtral:
        return True
    if glm4_moe:  # Glm4MoeDecoderLayer: Glm4MoeMoE from layer first_k_dense_replace on
        return i >= cfg.get("first_k_dense_replace", 1)
    return qwen_moe and n_experts > 0 and i not in (cfg.get("mlp_only_layers") or []) and \
        (i + 1) % cfg.get("decoder_sparse_step", 1) == 0

router_logits = []  # per MoE layer [tokens, E]: MoeModelOutputWithPast.router_logits


def sparse_moe(x, p):
    flat = x.reshape(-1, x.shape[-1])
    pre = p + ("block_sparse_moe." if mixtral else "mlp.")
    k = cfg.get("num_experts_per_tok", 2 if mixtral else 8)
    if glm4_moe:  # Glm4MoeMoE.route_tokens_to_experts
        scores = linear(flat.float(), pre + "gate.weight").sigmoid()
        chosen, top = sigmoid_group_topk(scores, w[pre + "gate.e_score_correction_bias"], cfg.get("n_group", 1),
                                         cfg.get("topk_group", 1), k, cfg.get("norm_topk_prob", True),
                                         cfg.get("routed_scaling_factor", 1.0))
    else:
        router_logits.append(linear(flat, pre + "gate.weight"))
        probs = torch.softmax(router_logits[-1], dim=1, dtype=torch.float)
        top, chosen = torch.topk(probs, k, dim=-1)
    if mixtral or (qwen_moe and cfg.get("norm_topk_prob", False)):
        top = top / top.sum(dim=-1, keepdim=True)
    out = torch.zeros_like(flat)
    names = ("w1", "w3", "w2") if mixtral else ("gate_proj", "up_proj", "down_proj")
    hit = torch.nn.functional.one_hot(chosen, n_experts).permute(2, 1, 0)  # [E, k, N]
    for e in range(n_experts):
        slot, token = torch.where(hit[e])
        if token.numel() == 0:
            continue
        xe = flat[token]
        g = linear(xe, pre + f"experts.{e}.{names[0]}.weight")
        u = linear(xe, pre + f"experts.{e}.{names[1]}.weight")
        ye = linear(act(g) * u, pre + f"experts.{e}.{names[2]}.weight") * top[token, slot, None]
        out.index_add_(0, token, ye.to(out.dtype))
    if pre + "shared_expert_gate.weight" in w:
        s = linear(act(linear(flat, pre + "shared_expert.gate_proj.weight")) * linear(flat, pre + "shared_expert.up_proj.weight"),
                   pre + "shared_expert.down_proj.weight")
        out = out + torch.sigmoid(linear(flat, pre + "shared_expert_gate.weight")) * s
    if glm4_moe:  # + shared_experts(x), ungated
        out = out + linear(act(linear(flat, pre + "shared_experts.gate_proj.weight")) * linear(flat, pre + "shared_experts.up_proj.weight"),
                           pre + "shared_experts.down_proj.weight")
    return out.reshape(x.shape)

window_mask = mask + torch.full((T, T), float("-inf")).tril(-W) if W else mask  # key j visible from i when i - W < j <= i
for i in range(L):
    p = f"model.layers.{i}."
    layer_mask = window_mask if types[i] == "sliding_attention" else mask
    x = h if olmo2 else norm(h, p + "input_layernorm.weight")  # Olmo2DecoderLayer: no norm before attention
    # Qwen2: q/k/v projections carry a bias (attention_bias); Llama: none.
    def proj(name):
        y = linear(x, p + f"self_attn.{name}.weight")
        return y + w[p + f"self_attn.{name}.bias"] if p + f"self_attn.{name}.bias" in w else y
    if phi3:  # Phi3Attention: qkv = qkv_proj(x); q, k, v = its first H*D, next KV*D, last KV*D features
        qkv = linear(x, p + "self_attn.qkv_proj.weight")
        q_raw, k_raw, v_raw = qkv[..., :H * D], qkv[..., H * D:H * D + KV * D], qkv[..., H * D + KV * D:]
    else:
        q_raw, k_raw, v_raw = proj("q_proj"), proj("k_proj"), proj("v_proj")
    if cfg.get("clip_qkv"):  # OlmoAttention: each projection clamped to +-clip_qkv
        q_raw, k_raw, v_raw = (t.clamp(min=-cfg["clip_qkv"], max=cfg["clip_qkv"]) for t in (q_raw, k_raw, v_raw))
    if olmo2:  # Olmo2Attention: q_norm(q_proj(x)), k_norm(k_proj(x)) over all heads, then the view
        q_raw = rms(q_raw, w[p + "self_attn.q_norm.weight"])
        k_raw = rms(k_raw, w[p + "self_attn.k_norm.weight"])
    q = q_raw.view(B, T, H, D)
    k = k_raw.view(B, T, KV, D)
    if p + "self_attn.q_norm.weight" in w and not olmo2:  # Qwen3Attention: q_norm(q_proj(x).view(..., D))
        q = rms(q, w[p + "self_attn.q_norm.weight"])
        k = rms(k, w[p + "self_attn.k_norm.weight"])
    q, k = q.transpose(1, 2), k.transpose(1, 2)
    v = v_raw.view(B, T, KV, D).transpose(1, 2)
    if gemma3 and types[i] == "sliding_attention":
        q, k = rope(q, local_cos, local_sin), rope(k, local_cos, local_sin)
    elif rope_layers[i]:  # SmolLM3Attention: `if self.use_rope`
        q, k = rope(q, cos, sin), rope(k, cos, sin)
    k, v = k.repeat_interleave(H // KV, 1), v.repeat_interleave(H // KV, 1)
    scores = q @ k.transpose(-1, -2) * attn_scaling
    if attn_cap:  # Gemma2Attention: / cap, tanh, * cap, then the mask
        scores = torch.tanh(scores / attn_cap) * attn_cap
    a = torch.softmax(scores + layer_mask, -1) @ v
    o = linear(a.transpose(1, 2).reshape(B, T, H * D), p + "self_attn.o_proj.weight")
    if p + "self_attn.o_proj.bias" in w:  # LlamaAttention's o_proj: bias=config.attention_bias
        o = o + w[p + "self_attn.o_proj.bias"]
    if gemma2:  # Gemma2DecoderLayer: norm the attention output, then pre_feedforward_layernorm
        h = h + rms(o, w[p + "post_attention_layernorm.weight"])
        x = rms(h, w[p + "pre_feedforward_layernorm.weight"])
    elif olmo2:  # Olmo2DecoderLayer: norm the attention output; no norm before the MLP
        h = h + rms(o, w[p + "post_attention_layernorm.weight"])
        x = h
    else:  # GraniteDecoderLayer: residual + hidden_states * residual_multiplier
        h = h + o * residual_multiplier
        x = norm(h, p + "post_attention_layernorm.weight")
    if moe_layer(i):
        m = sparse_moe(x, p)
    elif phi3:  # Phi3MLP: gate, up = gate_up_proj(x).chunk(2, dim=-1); down(up * act(gate))
        g, u = linear(x, p + "mlp.gate_up_proj.weight").chunk(2, dim=-1)
        m = linear(act(g) * u, p + "mlp.down_proj.weight")
    else:
        g, u = linear(x, p + "mlp.gate_proj.weight"), linear(x, p + "mlp.up_proj.weight")
        m = linear(act(g) * u, p + "mlp.down_proj.weight")
    h = h + (rms(m, w[p + "post_feedforward_layernorm.weight"]) if gemma2 or olmo2 else m * residual_multiplier)
h = norm(h, "model.norm.weight")
logits = linear(h, "lm_head.weight" if "lm_head.weight" in w else "model.embed_tokens.weight")
if granite:  # GraniteForCausalLM: logits / logits_scaling
    logits = logits / cfg.get("logits_scaling", 1.0)
if final_cap:  # Gemma2ForCausalLM: logits / cap, tanh, * cap
    logits = torch.tanh(logits / final_cap) * final_cap
out = {"logits": logits}
if cfg.get("output_router_logits") and router_logits:  # MixtralForCausalLM.forward's aux_loss
    out["aux_loss"] = load_balancing_loss(router_logits, n_experts, cfg.get("num_experts_per_tok", 2 if mixtral else 8)).reshape(1)
save(d + "/reference_logits.safetensors", out)
print("reference logits", tuple(logits.shape))

"""What the python references of tests/framework/model share: the inputs a test
writes (DIR/config.json, DIR/model.safetensors, DIR/ids.safetensors, and a PEFT
adapter with --adapter, tests/support/peft_lora_py.py) read in fp64, and the logits
written back as DIR/reference_logits.safetensors."""
import json

from safetensors_py import load, save
from peft_lora_py import adapted, load_lora


def read_inputs(argv, model_type, rename=lambda k: k):
    """(cfg, w, ids, lora, scaling) for DIR = argv[1]: the config (its model_type
    checked), the weights in fp64 under rename(name), the ids, and load_lora's
    result for argv."""
    d = argv[1]
    cfg = json.load(open(d + "/config.json"))
    assert cfg["model_type"] == model_type, cfg["model_type"]
    w = {rename(k): v.double() for k, v in load(d + "/model.safetensors").items()}
    ids = load(d + "/ids.safetensors")["ids"].long()
    lora, scaling = load_lora(argv, w, lambda v: v.double())  # "<module>.weight" -> {"A", "B"}
    return cfg, w, ids, lora, scaling


def write_logits(d, logits):
    save(d + "/reference_logits.safetensors", {"logits": logits.float()})
    print("reference logits", tuple(logits.shape))


def peft_linear(w, lora, scaling):
    """linear(x, name): nn.Linear `name` of the weights w (its bias if w has one), plus
    PEFT's LoRA term scaling * (x A^T) B^T (or DoRA's, peft_lora_py.adapted) where the
    adapter adapts it."""
    def linear(x, name):
        y = x @ w[name + ".weight"].T
        if name + ".bias" in w:
            y = y + w[name + ".bias"]
        if name + ".weight" in lora:
            y = adapted(x, w[name + ".weight"], y, lora[name + ".weight"], scaling)
        return y
    return linear


def rotate_half_rope(T, rotated, theta):
    """rope(x) for x [B, heads, T, D]: transformers' rotate-half RoPE of positions 0..T-1
    on the first `rotated` dimensions of each head (base theta), the rest unchanged."""
    import torch
    inv = 1.0 / (theta ** (torch.arange(0, rotated, 2, dtype=torch.float64) / rotated))
    freqs = torch.outer(torch.arange(T, dtype=torch.float64), inv)
    cos, sin = torch.cat([freqs, freqs], -1).cos(), torch.cat([freqs, freqs], -1).sin()
    half = rotated // 2

    def rope(x):
        xr, xp = x[..., :rotated], x[..., rotated:]
        return torch.cat([xr * cos + torch.cat([-xr[..., half:], xr[..., :half]], -1) * sin, xp], -1)
    return rope


def yarn_inv_freq(rs, dims, theta, max_positions, dtype):
    """(inv_freq [dims / 2], attention factor) of transformers' _compute_yarn_parameters
    for rope_scaling `rs`: the dimensions that turn between beta_fast and beta_slow
    times in the original context ramp from extrapolation (theta_i) to interpolation
    (theta_i / factor); cos and sin are then multiplied by the attention factor
    (0.1 ln(factor) + 1 unless set, or the mscale / mscale_all_dim ratio)."""
    import math
    import torch
    f = rs["factor"]
    orig = rs.get("original_max_position_embeddings") or max_positions

    def mscale(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0
    attention = rs.get("attention_factor")
    if attention is None:
        ms, msa = rs.get("mscale"), rs.get("mscale_all_dim")
        attention = mscale(f, ms) / mscale(f, msa) if ms and msa else mscale(f)
    beta_fast, beta_slow = rs.get("beta_fast") or 32, rs.get("beta_slow") or 1

    def correction_dim(rotations):
        return dims * math.log(orig / (rotations * 2 * math.pi)) / (2 * math.log(theta))
    lo, hi = correction_dim(beta_fast), correction_dim(beta_slow)
    if rs.get("truncate", True):
        lo, hi = math.floor(lo), math.ceil(hi)
    lo, hi = max(lo, 0), min(hi, dims - 1)
    if lo == hi:
        hi += 0.001
    ramp = ((torch.arange(dims // 2, dtype=dtype) - lo) / (hi - lo)).clamp(0, 1)
    extrapolation = 1 - ramp
    pos_freqs = theta ** (torch.arange(0, dims, 2).to(dtype) / dims)
    return (1.0 / (f * pos_freqs)) * (1 - extrapolation) + (1.0 / pos_freqs) * extrapolation, attention


def sigmoid_group_topk(scores, correction_bias, n_group, topk_group, k, norm_topk_prob, routed_scaling_factor):
    """(chosen [N, k], weights [N, k]) of GLM-4.5's and DeepSeek-V3's router
    (Glm4MoeTopkRouter, DeepseekV3TopkRouter) for sigmoid scores [N, E]: the choice
    adds the correction bias and keeps the topk_group of n_group groups whose two best
    scores sum highest (the others' scores become 0), then the k best; the weights are
    the unbiased scores of those, normalised (+1e-20) when norm_topk_prob, times
    routed_scaling_factor."""
    import torch
    E = scores.shape[-1]
    choice = scores + correction_bias
    group_scores = choice.view(-1, n_group, E // n_group).topk(2, dim=-1)[0].sum(dim=-1)
    group_idx = torch.topk(group_scores, k=topk_group, dim=-1, sorted=False)[1]
    group_mask = torch.zeros_like(group_scores).scatter_(1, group_idx, 1)
    score_mask = group_mask.unsqueeze(-1).expand(-1, n_group, E // n_group).reshape(-1, E)
    chosen = torch.topk(choice.masked_fill(~score_mask.bool(), 0.0), k=k, dim=-1, sorted=False)[1]
    top = scores.gather(1, chosen)
    if norm_topk_prob:
        top = top / (top.sum(dim=-1, keepdim=True) + 1e-20)
    return chosen, top * routed_scaling_factor


def load_balancing_loss(gate_logits, num_experts, top_k):
    """transformers' load_balancing_loss_func without an attention mask (every token
    real): the layers' router logits concatenated, softmaxed, the top k one-hot."""
    import torch
    logits = torch.cat(gate_logits, dim=0)
    routing_weights = torch.softmax(logits, dim=-1)
    _, selected = torch.topk(routing_weights, top_k, dim=-1)
    expert_mask = torch.nn.functional.one_hot(selected, num_experts)  # [L*N, k, E]
    tokens_per_expert = torch.mean(expert_mask.float(), dim=0)        # [k, E]
    router_prob_per_expert = torch.mean(routing_weights, dim=0)       # [E]
    return torch.sum(tokens_per_expert * router_prob_per_expert.unsqueeze(0)) * num_experts


def layer_norm_by_name(w, eps):
    """norm(x, name): torch's LayerNorm over the last dimension with the weights w's
    name.weight and, when w holds it, name.bias; in x's dtype."""
    import torch

    def norm(x, name):
        mu = x.mean(-1, keepdim=True)
        y = (x - mu) / torch.sqrt(((x - mu) ** 2).mean(-1, keepdim=True) + eps) * w[name + ".weight"]
        return y + w[name + ".bias"] if name + ".bias" in w else y
    return norm

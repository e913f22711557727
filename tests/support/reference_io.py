"""What the python references of tests/framework/model share: the inputs a test
writes (DIR/config.json, DIR/model.safetensors, DIR/ids.safetensors, and a PEFT
adapter with --adapter, tests/support/peft_lora_py.py) read in fp64, and the logits
written back as DIR/reference_logits.safetensors."""
import json

from safetensors_py import load, save
from peft_lora_py import load_lora


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
    PEFT's LoRA term scaling * (x A^T) B^T where the adapter adapts it."""
    def linear(x, name):
        y = x @ w[name + ".weight"].T
        if name + ".bias" in w:
            y = y + w[name + ".bias"]
        if name + ".weight" in lora:
            ab = lora[name + ".weight"]
            y = y + (x @ ab["A"].T @ ab["B"].T) * scaling
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

"""Independent reference: transformers' GPTJForCausalLM (GPT-J), forward written out in
python3-torch in fp64 from the checkpoint's own names (transformer.wte, h.<i>.ln_1,
attn.q/k/v/out_proj, mlp.fc_in/fc_out, ln_f, lm_head with its bias); transformers
itself is not installed here. GPTJBlock: one LayerNorm (ln_1) read by both branches,
h + attn(ln_1(h)) + mlp(ln_1(h)); GPTJAttention: q/k/v_proj without biases; the
sinusoid table of create_sinusoidal_positions (inv_freq 1 / 10000^(2i / rotary_dim),
sin then cos) read at each position, sin/cos repeat_interleave'd by 2 and applied
with rotate_every_two (x1 = x[..., ::2], x2 = x[..., 1::2] -> stack([-x2, x1],
-1).flatten(-2)) to the first rotary_dim dimensions of each head (all of them when
rotary_dim is null); scores divided by sqrt(head_dim); out_proj without a bias;
GPTJMLP: fc_out(gelu_new(fc_in(x))); ln_f; lm_head with a bias.

Inputs, outputs and `--adapter ADIR` / `--merged` (PEFT's LoRA formula, or its merge):
tests/support/reference_io.py."""
import os
import sys
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../support"))
from reference_io import peft_linear, read_inputs, write_logits  # noqa: E402

cfg, w, ids, lora, scaling = read_inputs(sys.argv, "gptj")

E = cfg["n_embd"]
H = cfg["n_head"]
D = E // H
RD = cfg.get("rotary_dim") or D
eps = cfg.get("layer_norm_epsilon", 1e-5)
assert cfg.get("activation_function", "gelu_new") == "gelu_new"


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh((2.0 / torch.pi) ** 0.5 * (x + 0.044715 * x ** 3)))


def ln(x, name):
    return torch.nn.functional.layer_norm(x, (E,), w[name + ".weight"], w[name + ".bias"], eps)


linear = peft_linear(w, lora, scaling)
B, T = ids.shape

inv_freq = 1.0 / (10000 ** (torch.arange(0, RD, 2, dtype=torch.float64) / RD))
table = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq)
sincos = torch.cat([table.sin(), table.cos()], dim=1)  # [T, RD]: sin, then cos
sin, cos = sincos[:, : RD // 2], sincos[:, RD // 2:]
sin = torch.repeat_interleave(sin, 2, dim=-1)[None, :, None, :]  # [1, T, 1, RD]
cos = torch.repeat_interleave(cos, 2, dim=-1)[None, :, None, :]


def rotate_every_two(x):
    x1, x2 = x[..., ::2], x[..., 1::2]
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


def rope(x):  # x [B, T, H, D]
    rot, rest = x[..., :RD], x[..., RD:]
    return torch.cat([rot * cos + rotate_every_two(rot) * sin, rest], dim=-1)


mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
h = w["transformer.wte.weight"][ids]
for i in range(cfg["n_layer"]):
    p = f"transformer.h.{i}."
    x = ln(h, p + "ln_1")
    q = rope(linear(x, p + "attn.q_proj").view(B, T, H, D)).transpose(1, 2)
    k = rope(linear(x, p + "attn.k_proj").view(B, T, H, D)).transpose(1, 2)
    v = linear(x, p + "attn.v_proj").view(B, T, H, D).transpose(1, 2)
    a = torch.softmax(q @ k.transpose(-1, -2) / D ** 0.5 + mask, -1) @ v
    attn = linear(a.transpose(1, 2).reshape(B, T, E), p + "attn.out_proj")
    mlp = linear(gelu_new(linear(x, p + "mlp.fc_in")), p + "mlp.fc_out")
    h = attn + mlp + h
h = ln(h, "transformer.ln_f")
write_logits(sys.argv[1], h @ w["lm_head.weight"].T + w["lm_head.bias"])

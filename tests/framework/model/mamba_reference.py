"""Independent reference: transformers' MambaForCausalLM and FalconMambaForCausalLM,
forward written out in python3-torch in fp64 from the checkpoint's names
(backbone.embeddings, backbone.layers.<i>.{norm, mixer.*}, backbone.norm_f, lm_head;
transformers is not installed here), MambaConfig's defaults where config.json is
silent. Each layer is h + mixer(norm(h)), the mixer MambaMixer.slow_forward:
  [u, z] = in_proj(x) (chunked along the features);
  u = act(conv1d(u)[..., :T]): depthwise, conv_kernel taps, padding conv_kernel - 1;
  [dt, B, C] = x_proj(u) split by time_step_rank, state_size, state_size; FalconMamba
      RMS-normalises each without a weight (rms_forward, eps mixer_rms_eps);
  dt = softplus(dt_proj(dt)); A = -exp(A_log);
  ssm_state = exp(A dt) * ssm_state + (dt B) u, token by token from zero;
  y = ssm_state @ C + u * D, times act(z); out_proj(y).
With a mask row (DIR/mask.safetensors, 1 real, 0 padding), u is multiplied by it
before and after the conv, as the mixer does with attention_mask.

Inputs, outputs and `--adapter ADIR` / `--merged` (PEFT's LoRA formula, or its merge):
tests/support/reference_io.py."""
import math, os, sys
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../support"))
from reference_io import peft_linear, read_inputs, write_logits  # noqa: E402
from safetensors_py import load  # noqa: E402

model_type = __import__("json").load(open(sys.argv[1] + "/config.json"))["model_type"]
cfg, w, ids, lora, scaling = read_inputs(sys.argv, model_type)
falcon = model_type == "falcon_mamba"

E = cfg.get("hidden_size", 768)
L = cfg.get("num_hidden_layers", 32)
N = cfg.get("state_size", 16)
K = cfg.get("conv_kernel", 4)
I = cfg.get("intermediate_size", int(cfg.get("expand", 2) * E))
rank = cfg.get("time_step_rank", "auto")
R = math.ceil(E / 16) if rank == "auto" else rank
eps = cfg.get("layer_norm_epsilon", 1e-5)
mixer_eps = cfg.get("mixer_rms_eps", 1e-6)
act = {"silu": torch.nn.functional.silu, "gelu": torch.nn.functional.gelu}[cfg.get("hidden_act", "silu")]
linear = peft_linear(w, lora, scaling)
mask_file = sys.argv[1] + "/mask.safetensors"
mask = load(mask_file)["mask"].double() if os.path.exists(mask_file) else None


def rms_forward(x, e):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + e)


B, T = ids.shape
h = w["backbone.embeddings.weight"][ids]
for i in range(L):
    p = f"backbone.layers.{i}."
    m = p + "mixer."
    x = w[p + "norm.weight"] * rms_forward(h, eps)
    u, z = linear(x, m + "in_proj").transpose(1, 2).chunk(2, dim=1)  # [B, I, T] each
    if mask is not None:
        u = u * mask.unsqueeze(1)
    conv_bias = w.get(m + "conv1d.bias")
    u = act(torch.nn.functional.conv1d(u, w[m + "conv1d.weight"], conv_bias, padding=K - 1, groups=I)[..., :T])
    if mask is not None:
        u = u * mask.unsqueeze(1)
    params = linear(u.transpose(1, 2), m + "x_proj")
    dt, Bm, Cm = torch.split(params, [R, N, N], dim=-1)
    if falcon:
        Bm, Cm, dt = rms_forward(Bm, mixer_eps), rms_forward(Cm, mixer_eps), rms_forward(dt, mixer_eps)
    dt = torch.nn.functional.softplus(linear(dt, m + "dt_proj")).transpose(1, 2)  # [B, I, T]
    A = -torch.exp(w[m + "A_log"])
    dA = torch.exp(A[None, :, None, :] * dt[:, :, :, None])  # [B, I, T, N]
    dBu = dt[:, :, :, None] * Bm[:, None, :, :] * u[:, :, :, None]
    state = torch.zeros(B, I, N, dtype=torch.float64)
    ys = []
    for t in range(T):
        state = dA[:, :, t, :] * state + dBu[:, :, t, :]
        ys.append((state @ Cm[:, t, :].unsqueeze(-1))[:, :, 0])
    y = (torch.stack(ys, dim=-1) + u * w[m + "D"][None, :, None]) * act(z)
    h = h + linear(y.transpose(1, 2), m + "out_proj")
h = w["backbone.norm_f.weight"] * rms_forward(h, eps)
write_logits(sys.argv[1], linear(h, "lm_head" if "lm_head.weight" in w else "backbone.embeddings"))

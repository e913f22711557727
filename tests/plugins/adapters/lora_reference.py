"""Independent reference for the LoRA adapter: PEFT's LoRA Linear forward
(peft/tuners/lora/layer.py, Linear.forward, documented behaviour) written out in
python3-torch: result = x @ W.T + (x @ A.T @ B.T) * scaling, with
scaling = lora_alpha / r, or lora_alpha / sqrt(r) when use_rslora (dropout off).
Reads DIR/case.safetensors (x, W, A, B) and DIR/case.json ({r, lora_alpha,
use_rslora}); writes DIR/expected.safetensors (y).

With "use_dora" in case.json, PEFT's DoRA (peft/tuners/lora/dora.py,
DoraLinearLayer, documented behaviour) on a base layer with bias b: the magnitude m0
it initialises, ||W + scaling B A|| over each row; then, for the case's magnitude m,
y = base(x) + (g - 1) * (x W^T) + g * scaling * lora_B(lora_A(x)), g = m / that norm
detached; and the gradients of (y * ct).sum() in m, A and B (gm, gA, gB)."""
import json, math, os, sys
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../support"))
from safetensors_py import load, save  # noqa: E402

d = sys.argv[1]
t = load(d + "/case.safetensors")
c = json.load(open(d + "/case.json"))
scaling = c["lora_alpha"] / (math.sqrt(c["r"]) if c["use_rslora"] else c["r"])
lora_A = torch.nn.Linear(t["A"].shape[1], t["A"].shape[0], bias=False)
lora_B = torch.nn.Linear(t["B"].shape[1], t["B"].shape[0], bias=False)
base = torch.nn.Linear(t["W"].shape[1], t["W"].shape[0], bias=False)
with torch.no_grad():
    lora_A.weight.copy_(t["A"]); lora_B.weight.copy_(t["B"]); base.weight.copy_(t["W"])
if not c.get("use_dora"):
    with torch.no_grad():
        y = base(t["x"]) + lora_B(lora_A(t["x"])) * scaling
    save(d + "/expected.safetensors", {"y": y})
    sys.exit(0)

base.bias = torch.nn.Parameter(t["b"].clone())
base.requires_grad_(False)
with torch.no_grad():
    m0 = torch.linalg.norm(base.weight + scaling * (lora_B.weight @ lora_A.weight), dim=1)
magnitude = torch.nn.Parameter(t["m"].clone())
x = t["x"]
weight_norm = torch.linalg.norm(base.weight + scaling * (lora_B.weight @ lora_A.weight).detach(), dim=1).detach()
mag_norm_scale = (magnitude / weight_norm).view(1, -1)
base_result = base(x)
result_dora = (mag_norm_scale - 1) * (base_result - base.bias) + mag_norm_scale * lora_B(lora_A(x)) * scaling
y = base_result + result_dora
(y * t["ct"]).sum().backward()
save(d + "/expected.safetensors", {"y": y.detach(), "m0": m0, "gm": magnitude.grad, "gA": lora_A.weight.grad,
                                   "gB": lora_B.weight.grad})

"""Independent reference for the LoRA adapter: PEFT's LoRA Linear forward
(peft/tuners/lora/layer.py, Linear.forward, documented behaviour) written out in
python3-torch: result = x @ W.T + (x @ A.T @ B.T) * scaling, with
scaling = lora_alpha / r, or lora_alpha / sqrt(r) when use_rslora (dropout off).
Reads DIR/case.safetensors (x, W, A, B) and DIR/case.json ({r, lora_alpha,
use_rslora}); writes DIR/expected.safetensors (y)."""
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
    y = base(t["x"]) + lora_B(lora_A(t["x"])) * scaling
save(d + "/expected.safetensors", {"y": y})

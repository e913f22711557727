"""Independent reference for GKD's loss: TRL's GKDTrainer.generalized_jsd_loss
(documented formula) transcribed into python3-torch, with autograd for the
gradients. Reads DIR/in.safetensors (hs [M,H], ws [V,H], ht [M,Ht], wt [V,Ht],
weights [M]) and DIR/in.json ({beta, temperature}); writes DIR/out.safetensors:
loss (scalar), per_token [M], grad_hs, grad_ws."""
import json, math, os, sys
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../support"))
from safetensors_py import load, save  # noqa: E402

d = sys.argv[1]
t = {k: v.double() for k, v in load(d + "/in.safetensors").items()}
c = json.load(open(d + "/in.json"))
beta, temperature = c["beta"], c["temperature"]
hs = t["hs"].clone().requires_grad_(True)
ws = t["ws"].clone().requires_grad_(True)
student_log_probs = F.log_softmax((hs @ ws.T) / temperature, dim=-1)
teacher_log_probs = F.log_softmax((t["ht"] @ t["wt"].T) / temperature, dim=-1)
if beta == 0:
    jsd = F.kl_div(student_log_probs, teacher_log_probs, reduction="none", log_target=True)
elif beta == 1:
    jsd = F.kl_div(teacher_log_probs, student_log_probs, reduction="none", log_target=True)
else:
    b = torch.tensor(beta, dtype=student_log_probs.dtype)
    mixture_log_probs = torch.logsumexp(
        torch.stack([student_log_probs + torch.log(1 - b), teacher_log_probs + torch.log(b)]), dim=0)
    kl_teacher = F.kl_div(mixture_log_probs, teacher_log_probs, reduction="none", log_target=True)
    kl_student = F.kl_div(mixture_log_probs, student_log_probs, reduction="none", log_target=True)
    jsd = b * kl_teacher + (1 - b) * kl_student
per_token = jsd.sum(-1)
loss = (per_token * t["weights"]).sum()
loss.backward()
save(d + "/out.safetensors", {"loss": loss.reshape(1), "per_token": per_token, "grad_hs": hs.grad, "grad_ws": ws.grad})

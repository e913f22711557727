"""Independent reference for the Nash-MD and XPO losses, transcribed into python3-torch
from TRL's NashMDTrainer._compute_losses and XPOTrainer._compute_losses (the loss
mean and its gradient with respect to the policy's log-probs, by autograd). Reads a
JSON object:
  nash: {pm [N, C] policy token log-probs of the policy's completions (0 at padding),
         rm [N, C] the reference's, probability [N], beta}
  xpo:  {pm, pr, rm, rr [N] summed log-probs (policy/reference on model/ref data),
         chosen [N] bool (the model's completion is chosen), beta, alpha, loss_type}
Prints {"nash": {"loss", "grad" [N, C], "score", "kl"}, "xpo": {"loss", "dpo", "xpo",
"grad_pm", "grad_pr"}}."""
import json, sys
import torch
import torch.nn.functional as F

d = json.load(open(sys.argv[1]))
out = {}

n = d["nash"]
model_logprobs_model_data = torch.tensor(n["pm"], dtype=torch.float64, requires_grad=True)
ref_logprobs_model_data = torch.tensor(n["rm"], dtype=torch.float64)
probability = torch.tensor(n["probability"], dtype=torch.float64)
score = (probability - 0.5) * model_logprobs_model_data.sum(1)
with torch.no_grad():
    log_ratio = model_logprobs_model_data - ref_logprobs_model_data
    kl_div_log = log_ratio.sum(1)
kl_div_loss = (log_ratio * model_logprobs_model_data).sum(1)
loss = (n["beta"] * kl_div_loss - score).mean()
loss.backward()
out["nash"] = {"loss": loss.item(), "grad": model_logprobs_model_data.grad.tolist(),
               "score": score.detach().tolist(), "kl": kl_div_log.tolist()}

x = d["xpo"]
pm = torch.tensor(x["pm"], dtype=torch.float64, requires_grad=True)
pr = torch.tensor(x["pr"], dtype=torch.float64, requires_grad=True)
rm = torch.tensor(x["rm"], dtype=torch.float64)
rr = torch.tensor(x["rr"], dtype=torch.float64)
chosen_mask = torch.tensor(x["chosen"])
beta, alpha = x["beta"], x["alpha"]
chosen_log_ratios = torch.where(chosen_mask, pm, pr) - torch.where(chosen_mask, rm, rr)
rejected_log_ratios = torch.where(~chosen_mask, pm, pr) - torch.where(~chosen_mask, rm, rr)
logits = chosen_log_ratios - rejected_log_ratios
if x["loss_type"] == "sigmoid":
    dpo_losses = -F.logsigmoid(beta * logits)
else:
    dpo_losses = (logits - 1 / (2 * beta)) ** 2
xpo_losses = alpha * pr
loss = (dpo_losses + xpo_losses).mean()
loss.backward()
out["xpo"] = {"loss": loss.item(), "dpo": dpo_losses.tolist(), "xpo": xpo_losses.tolist(),
              "grad_pm": pm.grad.tolist(), "grad_pr": pr.grad.tolist()}
print(json.dumps(out))

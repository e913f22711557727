"""Independent reference for BCO, transcribed into python3-torch from TRL's
BCOTrainer (bco_loss, _get_udm_weight, RunningMoments) and scikit-learn's documented
LogisticRegression objective. Reads a JSON object:
  batches: [{pc, rc, pr, rr, w?}], beta      (running moments across the batches)
  x, y: embeddings [N, D] and labels, weight [D], bias (a fitted classifier)
Prints {"losses": [[...] per batch], "deltas": [...], "grad_norm": |∇objective|
at (weight, bias), "ratios": density ratios of x clamped to [0.5, 10]}."""
import json, math, sys
import torch
import torch.nn.functional as F

d = json.load(open(sys.argv[1]))
beta = d["beta"]
count, mean, var = 1e-24, 0.0, 1.0  # TRL's RunningMoments start
losses, deltas = [], []
for b in d["batches"]:
    pc, rc, pr, rr = (torch.tensor(b[k], dtype=torch.float64) for k in ("pc", "rc", "pr", "rr"))
    chosen, rejected = beta * (pc - rc), beta * (pr - rr)
    xs = torch.cat((chosen, rejected))
    xs_var, xs_mean = torch.var_mean(xs, unbiased=False)
    delta = xs_mean.item() - mean
    tot = count + xs.numel()
    old_sum = var * count + delta ** 2 * count * xs.numel() / tot
    var = (old_sum + xs_var.item() * xs.numel()) / tot
    mean = mean + delta * xs.numel() / tot
    count = tot
    cl = -F.logsigmoid(chosen - mean)
    rl = -F.logsigmoid(-(rejected - mean))
    if "w" in b:
        rl = rl * torch.tensor(b["w"], dtype=torch.float64)
    losses.append(torch.cat((cl, rl)).tolist())
    deltas.append(mean)

# scikit-learn's LogisticRegression(class_weight="balanced", C=1): minimise
# 0.5·|w|² + Σ s_i·log(1 + exp(−y_i (w·x_i + b))), y ∈ {−1, 1}, s_i = n / (2 n_class).
x = torch.tensor(d["x"], dtype=torch.float64)
y = torch.tensor(d["y"], dtype=torch.float64)
w = torch.tensor(d["weight"], dtype=torch.float64, requires_grad=True)
b = torch.tensor(d["bias"], dtype=torch.float64, requires_grad=True)
n, pos = y.numel(), y.sum().item()
s = torch.where(y > 0.5, torch.full_like(y, n / (2 * pos)), torch.full_like(y, n / (2 * (n - pos))))
z = x @ w + b
sign = 2 * y - 1
objective = 0.5 * (w * w).sum() + (s * F.softplus(-sign * z)).sum()
objective.backward()
grad_norm = math.sqrt((w.grad ** 2).sum().item() + b.grad.item() ** 2)
p = torch.sigmoid(z.detach())
ratios = (p / (1 - p + 1e-8)).clamp(min=0.5, max=10.0)
print(json.dumps({"losses": losses, "deltas": deltas, "grad_norm": grad_norm, "ratios": ratios.tolist()}))

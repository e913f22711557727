"""Independent reference for the DPO loss family, transcribed from TRL's
DPOTrainer.dpo_loss documentation into python3-torch. Reads a JSON object with
pc, pr, rc, rr (lists), beta, label_smoothing; prints {loss_type: [losses]}.
bco_pair uses a fresh RunningMoments updated once with this batch."""
import json, sys
import torch
import torch.nn.functional as F

d = json.load(open(sys.argv[1]))
pc, pr, rc, rr = (torch.tensor(d[k], dtype=torch.float32) for k in ("pc", "pr", "rc", "rr"))
beta, ls = d["beta"], d["label_smoothing"]
chosen_lr, rejected_lr = pc - rc, pr - rr
logits = (pc - pr) - (rc - rr)
out = {}
out["sigmoid"] = -F.logsigmoid(beta * logits) * (1 - ls) - F.logsigmoid(-beta * logits) * ls
out["robust"] = (-F.logsigmoid(beta * logits) * (1 - ls) + F.logsigmoid(-beta * logits) * ls) / (1 - 2 * ls)
out["hinge"] = torch.relu(1 - beta * logits)
out["ipo"] = (logits - 1 / (2 * beta)) ** 2
# bco_pair: running mean after one update from (mean 0, var 1, count 1e-24)
rewards = torch.cat([beta * chosen_lr, beta * rejected_lr])
count, mean, var = 1e-24, 0.0, 1.0
xs_mean, xs_var, xs_count = rewards.mean().item(), rewards.var(unbiased=False).item(), rewards.numel()
delta = xs_mean - mean
tot = count + xs_count
mean = mean + delta * xs_count / tot
out["bco_pair"] = -F.logsigmoid(beta * chosen_lr - mean) - F.logsigmoid(-(beta * rejected_lr - mean))
a, b = chosen_lr, rejected_lr
out["sppo_hard"] = (a - 0.5 / beta) ** 2 + (b + 0.5 / beta) ** 2
cr, rj = beta * chosen_lr, beta * rejected_lr
out["nca_pair"] = -F.logsigmoid(cr) - 0.5 * F.logsigmoid(-cr) - 0.5 * F.logsigmoid(-rj)
out["apo_zero"] = (1 - torch.sigmoid(beta * chosen_lr)) + torch.sigmoid(beta * rejected_lr)
out["apo_down"] = torch.sigmoid(beta * chosen_lr) + (1 - torch.sigmoid(beta * (chosen_lr - rejected_lr)))
print(json.dumps({k: v.tolist() for k, v in out.items()}))
# ORPO, CPO/SimPO and KTO on the same inputs (pc/pr as average log-probs for ORPO).
avg_c, avg_r = pc / 10.0, pr / 10.0
log_odds = (avg_c - avg_r) - (torch.log1p(-torch.exp(avg_c)) - torch.log1p(-torch.exp(avg_r)))
extra = {"orpo": (-beta * F.logsigmoid(log_odds)).tolist()}
h = pc - pr
extra["cpo_sigmoid"] = (-F.logsigmoid(beta * h) * (1 - ls) - F.logsigmoid(-beta * h) * ls).tolist()
hs = h - 0.5 / beta
extra["cpo_simpo"] = (-F.logsigmoid(beta * hs) * (1 - ls) - F.logsigmoid(-beta * hs) * ls).tolist()
extra["cpo_hinge"] = torch.relu(1 - beta * h).tolist()
extra["cpo_ipo"] = ((h - 1 / (2 * beta)) ** 2).tolist()
kl = torch.tensor(0.3)
extra["kto"] = torch.cat([1.0 * (1 - torch.sigmoid(beta * (chosen_lr - kl))),
                          1.5 * (1 - torch.sigmoid(beta * (kl - rejected_lr)))]).tolist()
print(json.dumps(extra))

#include "posttrain/losses/preference_losses.h"

#include <algorithm>
#include <c10/core/GradMode.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "posttrain/core/device.h"
#include "posttrain/core/status.h"

namespace posttrain {
namespace {

at::Tensor LogSigmoid(const at::Tensor& x) { return at::log_sigmoid(x); }

}  // namespace

const std::vector<std::string>& DpoLossTypes() {
  static const std::vector<std::string>* types = new std::vector<std::string>{
      "sigmoid", "robust", "hinge", "ipo", "bco_pair", "sppo_hard", "nca_pair", "apo_zero", "apo_down"};
  return *types;
}

std::vector<std::size_t> KtoMismatchedRows(const std::vector<std::int64_t>& example_of_row) {
  const std::size_t n = example_of_row.size();
  for (std::size_t shift = 1; shift < n; ++shift) {
    bool ok = true;
    for (std::size_t i = 0; i < n && ok; ++i) ok = example_of_row[i] != example_of_row[(i + n - shift) % n];
    if (!ok) continue;
    std::vector<std::size_t> rows(n);
    for (std::size_t i = 0; i < n; ++i) rows[i] = (i + n - shift) % n;
    return rows;
  }
  return {};
}

at::Tensor RunningMoments::ToTensor() const { return at::tensor(std::vector<double>{mean, var, count}, HostOptions(at::kDouble)); }  // checkpoint state

void RunningMoments::FromTensor(const at::Tensor& t) {
  const at::Tensor d = t.to(at::kDouble).contiguous();
  mean = d[0].item<double>();
  var = d[1].item<double>();
  count = d[2].item<double>();
}

void RunningMoments::Update(const at::Tensor& xs) {
  const double xs_count = static_cast<double>(xs.numel());
  const double xs_mean = xs.mean().item<double>();
  const double xs_var = xs.numel() > 1 ? xs.var(/*unbiased=*/false).item<double>() : 0.0;
  const double delta = xs_mean - mean;
  const double total = count + xs_count;
  const double new_sum = xs_var * xs_count;
  const double old_sum = var * count + delta * delta * count * xs_count / total;
  var = (old_sum + new_sum) / total;
  mean += delta * xs_count / total;
  count = total;
}

absl::StatusOr<DpoLossResult> DpoLoss(const std::string& type, const at::Tensor& pc, const at::Tensor& pr,
                                      const at::Tensor& rc, const at::Tensor& rr, double beta, double ls,
                                      RunningMoments* moments, const Collectives* collectives) {
  const at::Tensor chosen_logratios = pc - rc;
  const at::Tensor rejected_logratios = pr - rr;
  const at::Tensor h = chosen_logratios - rejected_logratios;
  DpoLossResult out;
  out.chosen_rewards = (beta * chosen_logratios).detach();
  out.rejected_rewards = (beta * rejected_logratios).detach();
  if (type == "sigmoid") {
    out.losses = -LogSigmoid(beta * h) * (1 - ls) - LogSigmoid(-beta * h) * ls;
  } else if (type == "robust") {
    out.losses = (-LogSigmoid(beta * h) * (1 - ls) + LogSigmoid(-beta * h) * ls) / (1 - 2 * ls);
  } else if (type == "hinge") {
    out.losses = at::relu(1 - beta * h);
  } else if (type == "ipo") {
    out.losses = (h - 1 / (2 * beta)).pow(2);
  } else if (type == "bco_pair") {
    const at::Tensor chosen = beta * chosen_logratios, rejected = beta * rejected_logratios;
    if (moments != nullptr) {
      at::Tensor batch = at::cat({chosen, rejected}).detach();
      if (collectives != nullptr) {
        POSTTRAIN_ASSIGN_OR_RETURN(batch, collectives->Gather(batch));
      }
      moments->Update(batch);
    }
    const double delta = moments != nullptr ? moments->mean : 0.0;
    out.losses = -LogSigmoid(chosen - delta) - LogSigmoid(-(rejected - delta));
  } else if (type == "sppo_hard") {
    out.losses = (chosen_logratios - 0.5 / beta).pow(2) + (rejected_logratios + 0.5 / beta).pow(2);
  } else if (type == "nca_pair") {
    const at::Tensor chosen = beta * chosen_logratios, rejected = beta * rejected_logratios;
    out.losses = -LogSigmoid(chosen) - 0.5 * LogSigmoid(-chosen) - 0.5 * LogSigmoid(-rejected);
  } else if (type == "apo_zero") {
    out.losses = (1 - at::sigmoid(beta * chosen_logratios)) + at::sigmoid(beta * rejected_logratios);
  } else if (type == "apo_down") {
    out.losses = at::sigmoid(beta * chosen_logratios) + (1 - at::sigmoid(beta * h));
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown DPO loss_type '", type, "' (one of ", absl::StrJoin(DpoLossTypes(), ", "), ")"));
  }
  return out;
}

DpoLossResult OrpoLoss(const at::Tensor& avg_chosen, const at::Tensor& avg_rejected, double beta) {
  // log odds = log p − log(1 − p), with log(1 − p) = log1p(−exp(log p)).
  const at::Tensor log_odds = (avg_chosen - avg_rejected) -
                              (at::log1p(-at::exp(avg_chosen)) - at::log1p(-at::exp(avg_rejected)));
  DpoLossResult out;
  out.losses = -beta * LogSigmoid(log_odds);
  out.chosen_rewards = (beta * avg_chosen).detach();
  out.rejected_rewards = (beta * avg_rejected).detach();
  return out;
}

const std::vector<std::string>& CpoLossTypes() {
  static const std::vector<std::string>* types = new std::vector<std::string>{"sigmoid", "hinge", "ipo", "simpo"};
  return *types;
}

absl::StatusOr<DpoLossResult> CpoLoss(const std::string& type, const at::Tensor& chosen, const at::Tensor& rejected,
                                      double beta, double ls, double simpo_gamma) {
  at::Tensor h = chosen - rejected;
  DpoLossResult out;
  if (type == "sigmoid" || type == "simpo") {
    if (type == "simpo") h = h - simpo_gamma / beta;
    out.losses = -LogSigmoid(beta * h) * (1 - ls) - LogSigmoid(-beta * h) * ls;
  } else if (type == "hinge") {
    out.losses = at::relu(1 - beta * h);
  } else if (type == "ipo") {
    out.losses = (h - 1 / (2 * beta)).pow(2);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown CPO loss_type '", type, "' (one of ", absl::StrJoin(CpoLossTypes(), ", "), ")"));
  }
  out.chosen_rewards = (beta * chosen).detach();
  out.rejected_rewards = (beta * rejected).detach();
  return out;
}

KtoLossResult KtoLoss(const at::Tensor& pc, const at::Tensor& rc, const at::Tensor& pr, const at::Tensor& rr,
                      const at::Tensor& kl, double beta, double dw, double uw) {
  const at::Tensor z = kl.detach().clamp_min(0);
  const at::Tensor chosen_logratios = pc - rc, rejected_logratios = pr - rr;
  KtoLossResult out;
  const at::Tensor chosen_losses = 1 - at::sigmoid(beta * (chosen_logratios - z));
  const at::Tensor rejected_losses = 1 - at::sigmoid(beta * (z - rejected_logratios));
  out.losses = at::cat({dw * chosen_losses, uw * rejected_losses});
  out.chosen_rewards = (beta * chosen_logratios).detach();
  out.rejected_rewards = (beta * rejected_logratios).detach();
  return out;
}

absl::StatusOr<BcoLossResult> BcoLoss(const at::Tensor& pc, const at::Tensor& rc, const at::Tensor& pr,
                                      const at::Tensor& rr, double beta, const at::Tensor& rejected_weights,
                                      RunningMoments* moments, bool update, const Collectives* collectives) {
  BcoLossResult out;
  const at::Tensor chosen = beta * (pc - rc), rejected = beta * (pr - rr);
  if (moments != nullptr && update) {
    at::Tensor batch = at::cat({chosen, rejected}).detach();
    if (collectives != nullptr) {
      POSTTRAIN_ASSIGN_OR_RETURN(batch, collectives->Gather(batch));
    }
    if (batch.numel() > 0) moments->Update(batch);
  }
  out.delta = moments != nullptr ? moments->mean : 0.0;
  at::Tensor rejected_losses = -LogSigmoid(-(rejected - out.delta));
  if (rejected_weights.defined()) rejected_losses = rejected_losses * rejected_weights.to(rejected_losses.scalar_type());
  out.losses = at::cat({-LogSigmoid(chosen - out.delta), rejected_losses});
  out.chosen_rewards = chosen.detach();
  out.rejected_rewards = rejected.detach();
  return out;
}

DensityRatioClassifier DensityRatioClassifier::Fit(const at::Tensor& embeddings, const at::Tensor& labels) {
  c10::NoGradGuard no_grad;
  const at::Tensor x = at::cat({embeddings.to(at::kDouble), at::ones({embeddings.size(0), 1}, embeddings.options().dtype(at::kDouble))}, 1);
  const at::Tensor t = labels.to(at::kDouble);
  const double n = static_cast<double>(t.numel()), positives = t.sum().item<double>();
  // class_weight = "balanced": n / (2 · n_class).
  const at::Tensor s = at::where(t > 0.5, at::full_like(t, n / (2 * std::max(1.0, positives))),
                                 at::full_like(t, n / (2 * std::max(1.0, n - positives))));
  const std::int64_t d = x.size(1);
  at::Tensor penalty = at::ones({d}, x.options());
  penalty[d - 1] = 0;  // the intercept is not penalised
  at::Tensor w = at::zeros({d}, x.options());
  for (int iteration = 0; iteration < 100; ++iteration) {
    const at::Tensor p = at::sigmoid(at::mv(x, w));
    const at::Tensor grad = penalty * w + at::mv(x.t(), s * (p - t));
    const at::Tensor hessian = at::diag(penalty) + at::matmul(x.t() * (s * p * (1 - p)), x);
    const at::Tensor step = at::linalg_solve(hessian + 1e-12 * at::eye(d, x.options()), grad);
    w = w - step;
    if (step.abs().max().item<double>() < 1e-12) break;
  }
  DensityRatioClassifier c;
  c.weight = w.narrow(0, 0, d - 1).clone();
  c.bias = w[d - 1].item<double>();
  return c;
}

at::Tensor DensityRatioClassifier::Probability(const at::Tensor& embeddings) const {
  return at::sigmoid(at::mv(embeddings.to(at::kDouble), weight) + bias);
}

at::Tensor DensityRatioClassifier::Ratio(const at::Tensor& embeddings, double min_ratio, double max_ratio) const {
  const at::Tensor p = Probability(embeddings);
  return (p / (1 - p + 1e-8)).clamp(min_ratio, max_ratio);
}

NashMdLossResult NashMdLoss(const at::Tensor& policy_logps, const at::Tensor& reference_logps,
                            const at::Tensor& probability, double beta) {
  NashMdLossResult out;
  const at::Tensor sequence_logps = policy_logps.sum(1);
  const at::Tensor score = (probability - 0.5) * sequence_logps;
  const at::Tensor log_ratio = (policy_logps - reference_logps).detach();
  const at::Tensor kl = (log_ratio * policy_logps).sum(1);
  out.losses = beta * kl - score;
  out.score = score.detach();
  out.kl = log_ratio.sum(1);
  return out;
}

absl::StatusOr<XpoLossResult> XpoLoss(const std::string& loss_type, const at::Tensor& policy_model,
                                      const at::Tensor& policy_ref, const at::Tensor& reference_model,
                                      const at::Tensor& reference_ref, const at::Tensor& model_chosen, double beta,
                                      double alpha) {
  const at::Tensor model_ratio = policy_model - reference_model, ref_ratio = policy_ref - reference_ref;
  const at::Tensor chosen = at::where(model_chosen, model_ratio, ref_ratio);
  const at::Tensor rejected = at::where(model_chosen, ref_ratio, model_ratio);
  const at::Tensor h = chosen - rejected;
  XpoLossResult out;
  at::Tensor dpo;
  if (loss_type == "sigmoid") {
    dpo = -LogSigmoid(beta * h);
  } else if (loss_type == "ipo") {
    dpo = (h - 1 / (2 * beta)).pow(2);
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unknown XPO loss_type '", loss_type, "' (one of sigmoid, ipo)"));
  }
  const at::Tensor xpo = alpha * policy_ref;
  out.losses = dpo + xpo;
  out.dpo_losses = dpo.detach();
  out.xpo_losses = xpo.detach();
  out.chosen_rewards = (beta * chosen).detach();
  out.rejected_rewards = (beta * rejected).detach();
  return out;
}

void AddPreferenceMetrics(const at::Tensor& chosen_rewards, const at::Tensor& rejected_rewards,
                          const at::Tensor& chosen_logps, const at::Tensor& rejected_logps,
                          std::map<std::string, double>* metrics) {
  c10::NoGradGuard no_grad;
  (*metrics)["rewards/chosen"] = chosen_rewards.mean().item<double>();
  (*metrics)["rewards/rejected"] = rejected_rewards.mean().item<double>();
  (*metrics)["rewards/accuracies"] = (chosen_rewards > rejected_rewards).to(at::kFloat).mean().item<double>();
  (*metrics)["rewards/margins"] = (chosen_rewards - rejected_rewards).mean().item<double>();
  if (chosen_logps.defined()) (*metrics)["logps/chosen"] = chosen_logps.mean().item<double>();
  if (rejected_logps.defined()) (*metrics)["logps/rejected"] = rejected_logps.mean().item<double>();
}

at::Tensor BradleyTerryLoss(const at::Tensor& rc, const at::Tensor& rr, const at::Tensor& margin,
                            double center_rewards_coefficient) {
  at::Tensor diff = rc - rr;
  if (margin.defined()) diff = diff - margin;
  at::Tensor losses = -LogSigmoid(diff);
  if (center_rewards_coefficient != 0.0) losses = losses + center_rewards_coefficient * (rc + rr).pow(2);
  return losses;
}

}  // namespace posttrain

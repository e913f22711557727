#include "posttrain/losses/policy_gradient.h"

#include <algorithm>
#include <c10/core/GradMode.h>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "posttrain/core/status.h"

namespace posttrain {

const std::vector<std::string>& GrpoLossTypes() {
  static const std::vector<std::string>* t = new std::vector<std::string>{"grpo", "bnpo", "dr_grpo", "dapo"};
  return *t;
}
const std::vector<std::string>& ScaleRewardsModes() {
  static const std::vector<std::string>* t = new std::vector<std::string>{"group", "batch", "none"};
  return *t;
}

absl::StatusOr<at::Tensor> GroupAdvantages(const at::Tensor& rewards, std::int64_t g, const std::string& scale) {
  const std::int64_t n = rewards.numel();
  if (g < 1 || n % g != 0) {
    return absl::InvalidArgumentError(absl::StrCat(n, " rewards do not form groups of ", g));
  }
  at::Tensor grouped = rewards.to(at::kFloat).view({n / g, g});
  at::Tensor mean = grouped.mean(1, /*keepdim=*/true);
  at::Tensor advantages = (grouped - mean).view({n});
  if (scale == "group") {
    at::Tensor std = g > 1 ? grouped.std(1, /*unbiased=*/true, /*keepdim=*/true) : at::zeros_like(mean);
    return advantages / (std.expand({n / g, g}).reshape({n}) + 1e-4);
  }
  if (scale == "batch") {
    const double std = n > 1 ? rewards.to(at::kFloat).std(/*unbiased=*/true).item<double>() : 0.0;
    return advantages / (std + 1e-4);
  }
  if (scale == "none") return advantages;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown scale_rewards '", scale, "' (one of ", absl::StrJoin(ScaleRewardsModes(), ", "), ")"));
}

absl::StatusOr<GrpoLossResult> GrpoLoss(const at::Tensor& logps, const at::Tensor& old_logps,
                                        const at::Tensor& ref_logps, const at::Tensor& advantages,
                                        const at::Tensor& mask, const GrpoLossOptions& o) {
  if (std::find(GrpoLossTypes().begin(), GrpoLossTypes().end(), o.loss_type) == GrpoLossTypes().end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown loss_type '", o.loss_type, "' (one of ", absl::StrJoin(GrpoLossTypes(), ", "), ")"));
  }
  const at::Tensor a = advantages.unsqueeze(1);
  const at::Tensor ratio = at::exp(logps - old_logps);
  const at::Tensor clipped = at::clamp(ratio, 1 - o.epsilon, 1 + o.epsilon_high);
  at::Tensor per_token = -at::min(ratio * a, clipped * a);
  GrpoLossResult out;
  const at::Tensor tokens = mask.sum().clamp_min(1);
  if (o.beta != 0.0) {
    const at::Tensor delta = ref_logps - logps;
    const at::Tensor k3 = at::exp(delta) - delta - 1;
    per_token = per_token + o.beta * k3;
    out.mean_kl = ((k3 * mask).sum() / tokens).item<double>();
  }
  const at::Tensor masked = per_token * mask;
  if (o.loss_type == "grpo") {
    out.loss = (masked.sum(1) / mask.sum(1).clamp_min(1)).mean();
  } else if (o.loss_type == "dr_grpo") {
    out.loss = masked.sum() / static_cast<double>(logps.size(0) * o.max_completion_length);
  } else if (o.loss_type == "dapo" && o.dapo_normalizer > 0) {
    out.loss = masked.sum() / o.dapo_normalizer;
  } else {  // bnpo, dapo within one batch
    out.loss = masked.sum() / tokens;
  }
  c10::NoGradGuard no_grad;
  const at::Tensor low = (ratio < 1 - o.epsilon) & (a < 0);
  const at::Tensor high = (ratio > 1 + o.epsilon_high) & (a > 0);
  out.clip_ratio_low = ((low.to(at::kFloat) * mask).sum() / tokens).item<double>();
  out.clip_ratio_high = ((high.to(at::kFloat) * mask).sum() / tokens).item<double>();
  return out;
}

absl::StatusOr<at::Tensor> LeaveOneOutAdvantages(const at::Tensor& rewards, std::int64_t g) {
  const std::int64_t n = rewards.numel();
  if (g < 2 || n % g != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(n, " rewards do not form groups of ", g, " (leave-one-out needs groups of at least 2)"));
  }
  const at::Tensor grouped = rewards.to(at::kFloat).view({n / g, g});
  const at::Tensor others = (grouped.sum(1, /*keepdim=*/true) - grouped) / static_cast<double>(g - 1);
  return (grouped - others).view({n});
}

namespace {
at::Tensor MaskedMean(const at::Tensor& x, const at::Tensor& mask) { return (x * mask).sum() / mask.sum().clamp_min(1); }
}  // namespace

RlooLossResult RlooLoss(const at::Tensor& logps, const at::Tensor& old_logps, const at::Tensor& advantages,
                        const at::Tensor& mask, double epsilon, double epsilon_high) {
  const at::Tensor log_ratio = ((logps - old_logps) * mask).sum(1);
  const at::Tensor ratio = at::exp(log_ratio);
  const at::Tensor clipped = at::clamp(ratio, 1 - epsilon, 1 + epsilon_high);
  RlooLossResult out;
  out.loss = (-at::min(ratio * advantages, clipped * advantages)).mean();
  c10::NoGradGuard no_grad;
  out.clip_ratio = (ratio.ne(clipped)).to(at::kFloat).mean().item<double>();
  return out;
}

at::Tensor MaskedWhiten(const at::Tensor& values, const at::Tensor& mask, bool shift_mean) {
  const at::Tensor mean = MaskedMean(values, mask);
  const at::Tensor centered = values - mean;
  const at::Tensor count = mask.sum();
  const at::Tensor var = (centered.pow(2) * mask).sum() / (count - 1).clamp_min(1);
  at::Tensor whitened = centered * at::rsqrt(var + 1e-8);
  if (!shift_mean) whitened = whitened + mean;
  return whitened;
}

absl::StatusOr<at::Tensor> MaskedWhiten(const at::Tensor& values, const at::Tensor& mask, bool shift_mean,
                                        const Collectives& collectives) {
  if (collectives.world_size() == 1) return MaskedWhiten(values, mask, shift_mean);
  c10::NoGradGuard no_grad;
  POSTTRAIN_ASSIGN_OR_RETURN(const at::Tensor sums,
                             collectives.Sum(at::stack({(values * mask).sum(), mask.sum()}).to(at::kDouble)));
  const double count = sums[1].item<double>();
  const double mean = sums[0].item<double>() / std::max(1.0, count);
  const at::Tensor centered = values - mean;
  POSTTRAIN_ASSIGN_OR_RETURN(const double squares, collectives.Sum((centered.pow(2) * mask).sum().item<double>()));
  const double var = squares / std::max(1.0, count - 1);
  at::Tensor whitened = centered * (1.0 / std::sqrt(var + 1e-8));
  if (!shift_mean) whitened = whitened + mean;
  return whitened;
}

GaeResult GeneralizedAdvantages(const at::Tensor& rewards, const at::Tensor& values, const at::Tensor& mask,
                                double gamma, double lam) {
  c10::NoGradGuard no_grad;
  const std::int64_t c = rewards.size(1);
  const at::Tensor r = rewards * mask, v = values * mask;
  std::vector<at::Tensor> reversed;
  at::Tensor last = at::zeros({rewards.size(0)}, rewards.options());
  for (std::int64_t t = c - 1; t >= 0; --t) {
    const at::Tensor next_value = t + 1 < c ? v.select(1, t + 1) : at::zeros_like(last);
    const at::Tensor delta = r.select(1, t) + gamma * next_value - v.select(1, t);
    last = (delta + gamma * lam * last) * mask.select(1, t);
    reversed.push_back(last);
  }
  std::reverse(reversed.begin(), reversed.end());
  GaeResult out;
  out.advantages = at::stack(reversed, 1);
  out.returns = (out.advantages + v) * mask;
  return out;
}

PpoLossResult PpoLoss(const at::Tensor& logps, const at::Tensor& old_logps, const at::Tensor& values,
                      const at::Tensor& old_values, const at::Tensor& advantages, const at::Tensor& returns,
                      const at::Tensor& mask, const PpoLossOptions& o) {
  PpoLossResult out;
  const at::Tensor v_clipped = at::clamp(values, old_values - o.cliprange_value, old_values + o.cliprange_value);
  const at::Tensor vf_losses = at::max((values - returns).pow(2), (v_clipped - returns).pow(2));
  out.vf_loss = 0.5 * MaskedMean(vf_losses, mask);
  const at::Tensor ratio = at::exp(logps - old_logps);
  const at::Tensor pg_losses = at::max(-advantages * ratio, -advantages * at::clamp(ratio, 1 - o.cliprange, 1 + o.cliprange));
  out.pg_loss = MaskedMean(pg_losses, mask);
  out.loss = out.pg_loss + o.vf_coef * out.vf_loss;
  c10::NoGradGuard no_grad;
  // TRL's pg_clipfrac: tokens where the clipped term is the larger loss (the clip
  // is what acts), not every ratio outside the range.
  const at::Tensor clipped_wins = (-advantages * at::clamp(ratio, 1 - o.cliprange, 1 + o.cliprange)) > (-advantages * ratio);
  out.clipfrac = MaskedMean(clipped_wins.to(at::kFloat), mask).item<double>();
  out.vf_clipfrac = MaskedMean(((values - returns).pow(2) < (v_clipped - returns).pow(2)).to(at::kFloat), mask).item<double>();
  return out;
}

}  // namespace posttrain

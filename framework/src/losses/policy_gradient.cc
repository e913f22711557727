#include "posttrain/losses/policy_gradient.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

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
  } else {  // bnpo, dapo
    out.loss = masked.sum() / tokens;
  }
  at::NoGradGuard no_grad;
  const at::Tensor low = (ratio < 1 - o.epsilon) & (a < 0);
  const at::Tensor high = (ratio > 1 + o.epsilon_high) & (a > 0);
  out.clip_ratio_low = ((low.to(at::kFloat) * mask).sum() / tokens).item<double>();
  out.clip_ratio_high = ((high.to(at::kFloat) * mask).sum() / tokens).item<double>();
  return out;
}

}  // namespace posttrain

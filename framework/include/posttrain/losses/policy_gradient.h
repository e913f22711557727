// GRPO-family policy-gradient losses on per-token log-probs (TRL's GRPOTrainer).
//
// Advantages (Shao et al. 2024, DeepSeekMath §4.1.2), rewards r [N] in groups of G
// consecutive completions of one prompt:
//   A_i = r_i − mean_group(r)                 then divided, per scale_rewards, by
//   "group": std_group(r) + 1e-4;  "batch": std(r over all N) + 1e-4;  "none": 1
//   (std is torch's unbiased std, as TRL).
// Per-token loss (PPO clip, Schulman et al. 2017, with DAPO's ε_high, Yu et al. 2025):
//   ρ_t = exp(logp_t − old_logp_t)
//   ℓ_t = −min(ρ_t·A, clip(ρ_t, 1−ε, 1+ε_high)·A) + β·k3_t
//   k3_t = exp(ref_t − logp_t) − (ref_t − logp_t) − 1     (Schulman's k3 estimator of KL)
// Aggregation (loss_type), with mask m [N, C] of completion tokens:
//   "grpo"    mean_i( Σ_t ℓ·m / Σ_t m )                 sequence mean, then batch mean
//   "bnpo"    Σ ℓ·m / Σ m                                token mean over the batch
//   "dr_grpo" Σ ℓ·m / (N · max_completion_length)        Liu et al. 2025 (Dr. GRPO)
//   "dapo"    Σ ℓ·m / Σ m  over the whole generation batch (= bnpo here: one
//             process, one batch per step)
#pragma once

#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"

namespace posttrain {

const std::vector<std::string>& GrpoLossTypes();
const std::vector<std::string>& ScaleRewardsModes();

// [N] advantages for N = groups · group_size rewards. InvalidArgument if N is not
// a multiple of group_size or the mode is unknown.
absl::StatusOr<at::Tensor> GroupAdvantages(const at::Tensor& rewards, std::int64_t group_size,
                                           const std::string& scale_rewards);

struct GrpoLossOptions {
  std::string loss_type = "dapo";
  double epsilon = 0.2;
  double epsilon_high = 0.2;
  double beta = 0.0;
  std::int64_t max_completion_length = 256;
};

struct GrpoLossResult {
  at::Tensor loss;                 // scalar
  double mean_kl = 0.0;            // masked mean of k3 (0 if β = 0)
  double clip_ratio_low = 0.0;     // share of tokens clipped below (A < 0)
  double clip_ratio_high = 0.0;    // share clipped above (A > 0)
};

// logps, old_logps, ref_logps (undefined when β = 0), mask: [N, C]; advantages [N].
absl::StatusOr<GrpoLossResult> GrpoLoss(const at::Tensor& logps, const at::Tensor& old_logps,
                                        const at::Tensor& ref_logps, const at::Tensor& advantages,
                                        const at::Tensor& mask, const GrpoLossOptions& options);

}  // namespace posttrain

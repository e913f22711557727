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
//   "dapo"    Σ ℓ·m / Σ m  with Σ m over the whole generation batch (every micro-batch
//             of the step): each micro-batch divides by dapo_normalizer = that
//             count / the number of micro-batches, so the engine's mean over
//             micro-batches equals one big batch (TRL's num_items_in_batch)
#pragma once

#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "posttrain/distributed/collectives.h"
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
  // dapo: the completion tokens of the whole generation batch divided by its
  // number of micro-batches (see above); 0: this batch's own token count.
  double dapo_normalizer = 0.0;
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

// ---- RLOO (Ahmadian et al. 2024, "Back to Basics"; TRL's RLOOTrainer) ----
// The whole completion is one action. With sequence log-probs S = Σ_t m·logp:
//   r'_i = R_i − β · Σ_t m·(old_logp − ref_logp)          KL folded into the reward
//   A_i  = r'_i − mean_{j≠i in i's group} r'_j            leave-one-out baseline
//   (normalize_advantages: A ← (A − mean A) / (std A + 1e-4))
//   ρ_i  = exp(S_i − S_old_i),  loss = mean_i −min(ρ_i·A_i, clip(ρ_i, 1−ε, 1+ε_high)·A_i)

// [N] leave-one-out advantages of N = groups · group_size rewards (group_size >= 2).
absl::StatusOr<at::Tensor> LeaveOneOutAdvantages(const at::Tensor& rewards, std::int64_t group_size);

struct RlooLossResult {
  at::Tensor loss;          // scalar
  double clip_ratio = 0.0;  // share of sequences whose ratio was clipped
};
// logps, old_logps, mask [N, C]; advantages [N].
RlooLossResult RlooLoss(const at::Tensor& logps, const at::Tensor& old_logps, const at::Tensor& advantages,
                        const at::Tensor& mask, double epsilon, double epsilon_high);

// ---- PPO (Schulman et al. 2017; Ziegler et al. 2019; TRL's PPOTrainer) ----
// Per-token rewards: r_t = −kl_coef · (old_logp_t − ref_logp_t) on completion
// tokens, plus the sequence score at its last token. GAE (Schulman et al. 2016):
//   δ_t = r_t + γ·V_{t+1} − V_t   (V past the last token = 0)
//   A_t = δ_t + γλ·A_{t+1},  returns_t = A_t + V_t
// then advantages are whitened over the masked tokens (mean 0, unit variance).
// Losses, masked means over completion tokens:
//   pg = mean max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε)),  ρ = exp(logp − old_logp)
//   vf = ½ · mean max((V − ret)², (clip(V, V_old − ε_v, V_old + ε_v) − ret)²)
//   loss = pg + vf_coef · vf

// Masked whitening (TRL's masked_whiten): (x − mean)·rsqrt(var + 1e-8), var the
// unbiased masked variance; the mean is added back if !shift_mean.
at::Tensor MaskedWhiten(const at::Tensor& values, const at::Tensor& mask, bool shift_mean = true);
// The same over every rank's values (mean and unbiased variance of the global
// batch's masked entries); Unavailable if a collective fails.
absl::StatusOr<at::Tensor> MaskedWhiten(const at::Tensor& values, const at::Tensor& mask, bool shift_mean,
                                        const Collectives& collectives);

struct GaeResult {
  at::Tensor advantages;  // [N, C], 0 at padding, not whitened
  at::Tensor returns;     // [N, C]
};
// rewards, values, mask [N, C] (mask 1 on a prefix of each row).
GaeResult GeneralizedAdvantages(const at::Tensor& rewards, const at::Tensor& values, const at::Tensor& mask,
                                double gamma, double lam);

struct PpoLossOptions {
  double cliprange = 0.2;
  double cliprange_value = 0.2;
  double vf_coef = 0.1;
};
struct PpoLossResult {
  at::Tensor loss, pg_loss, vf_loss;  // scalars
  double clipfrac = 0.0;              // share of tokens where the clipped term is the loss (TRL)
  double vf_clipfrac = 0.0;           // share of tokens with a clipped value
};
PpoLossResult PpoLoss(const at::Tensor& logps, const at::Tensor& old_logps, const at::Tensor& values,
                      const at::Tensor& old_values, const at::Tensor& advantages, const at::Tensor& returns,
                      const at::Tensor& mask, const PpoLossOptions& options);

}  // namespace posttrain

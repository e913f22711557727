// Rollouts as tensors, for the online trainers (grpo, rloo, ppo, online_dpo).
//
//   POSTTRAIN_ASSIGN_OR_RETURN(RolloutBatch rb, MakeRolloutBatch(input.rollouts, policy_->device(), "grpo"));
//   at::Tensor logps = CompletionLogprobs(*policy_, rb.sequences, temperature);  // [N, C]
//   ... loss on (logps, rb.mask) ...
//   rb.AddMetrics(&out.metrics);
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "posttrain/api/sampler.h"
#include "posttrain/api/trainer.h"
#include "posttrain/generation/logprobs.h"

namespace posttrain {

struct RolloutBatch {
  CompletionBatch sequences;  // prompt + completion rows, right-padded
  at::Tensor mask;            // [N, C] fp32: completion tokens (rows zeroed by mask_truncated)
  at::Tensor truncated;       // [N] bool: finish_reason "length" (no EOS / stop)
  std::int64_t total_length = 0;

  // TRL's completions/mean_length and completions/clipped_ratio.
  void AddMetrics(std::map<std::string, double>* metrics) const;
};

// A tensor fixed at a generated batch's first step (iteration 0) and reused by the
// steps that reuse the batch (num_iterations / num_ppo_epochs > 1), per micro-batch:
//   old = sampling_.Get(input, [&] { return logps.detach(); });   // the sampling policy's
//   ref = reference_.Get(input, [&] { return RefLogps(); });       // computed once per batch
// At iteration 0 the weights are the sampling weights, so the current log-probs,
// detached, are the sampling policy's — computed in the trainer's own forward pass
// instead of a separate one by the sampler.
class PerGenerationCache {
 public:
  at::Tensor Get(const StepInput& input, const std::function<at::Tensor()>& compute);

  // For Trainer::State / LoadState: the kept tensors as "<prefix>.<micro_batch>".
  void AppendState(const std::string& prefix, std::vector<std::pair<std::string, at::Tensor>>* state) const;
  void LoadState(const std::string& prefix, const std::map<std::string, at::Tensor>& state);

 private:
  std::vector<at::Tensor> by_micro_batch_;
};

// FailedPrecondition naming `trainer` if the rollouts have no token ids (a sampler
// that does not generate, e.g. "dataset"). The sampler's log-probs are not read:
// the trainers take them from their own first pass (PerGenerationCache). With mask_truncated, completions that
// hit max_completion_length get an all-zero mask row (TRL's mask_truncated_completions).
// Completion tokens over all micro-batches of a generation (StepInput::generation),
// leaving out truncated completions if mask_truncated: the tokens that a
// generation-wide token mean (DAPO) divides by.
std::int64_t GenerationCompletionTokens(absl::Span<const absl::Span<const Rollout>> generation, bool mask_truncated);

// TRL's missing_eos_penalty: the rewards' totals [N] fp32 (on `options`' device)
// minus `penalty` for each rollout that ended without EOS (finish_reason "length").
at::Tensor PenalizedScores(const RewardTable& table, absl::Span<const Rollout> rollouts, double penalty,
                           const at::TensorOptions& options);

// The batch's tensors are on `device` (the policy's).
absl::StatusOr<RolloutBatch> MakeRolloutBatch(absl::Span<const Rollout> rollouts, at::Device device,
                                              absl::string_view trainer, bool mask_truncated = false);

}  // namespace posttrain

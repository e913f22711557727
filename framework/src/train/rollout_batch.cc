#include "posttrain/train/rollout_batch.h"

#include "absl/strings/str_cat.h"
#include "posttrain/core/device.h"

namespace posttrain {

at::Tensor PerGenerationCache::Get(const StepInput& input, const std::function<at::Tensor()>& compute) {
  const auto micro = static_cast<size_t>(input.micro_batch);
  if (by_micro_batch_.size() <= micro) by_micro_batch_.resize(micro + 1);
  at::Tensor& kept = by_micro_batch_[micro];
  if (input.iteration == 0 || !kept.defined()) kept = compute();
  return kept;
}

void PerGenerationCache::AppendState(const std::string& prefix,
                                     std::vector<std::pair<std::string, at::Tensor>>* state) const {
  for (size_t i = 0; i < by_micro_batch_.size(); ++i) {
    if (by_micro_batch_[i].defined()) state->push_back({absl::StrCat(prefix, ".", i), by_micro_batch_[i]});
  }
}

void PerGenerationCache::LoadState(const std::string& prefix, const std::map<std::string, at::Tensor>& state) {
  by_micro_batch_.clear();
  for (size_t i = 0;; ++i) {
    auto it = state.find(absl::StrCat(prefix, ".", i));
    if (it == state.end()) break;
    by_micro_batch_.push_back(it->second);
  }
}

void RolloutBatch::AddMetrics(std::map<std::string, double>* metrics) const {
  const auto n = static_cast<double>(std::max<std::int64_t>(1, truncated.numel()));
  (*metrics)["completions/mean_length"] = static_cast<double>(total_length) / n;
  (*metrics)["completions/clipped_ratio"] = truncated.to(at::kFloat).sum().item<double>() / n;
}

std::int64_t GenerationCompletionTokens(absl::Span<const absl::Span<const Rollout>> generation, bool mask_truncated) {
  std::int64_t tokens = 0;
  for (absl::Span<const Rollout> micro : generation) {
    for (const Rollout& r : micro) {
      if (!(mask_truncated && r.finish_reason == FinishReason::kLength)) tokens += static_cast<std::int64_t>(r.token_ids.size());
    }
  }
  return tokens;
}

at::Tensor PenalizedScores(const RewardTable& table, absl::Span<const Rollout> rollouts, double penalty,
                           const at::TensorOptions& options) {
  std::vector<float> scores = table.total;
  for (size_t i = 0; i < scores.size() && i < rollouts.size(); ++i) {
    if (rollouts[i].finish_reason == FinishReason::kLength) scores[i] -= static_cast<float>(penalty);
  }
  return at::tensor(scores, options.dtype(at::kFloat));
}

absl::StatusOr<RolloutBatch> MakeRolloutBatch(absl::Span<const Rollout> rollouts, at::Device device,
                                              absl::string_view trainer, bool mask_truncated) {
  if (rollouts.empty()) return absl::InternalError(absl::StrCat(trainer, " got no rollouts"));
  std::vector<std::vector<std::int64_t>> prompts, completions;
  for (const Rollout& r : rollouts) {
    if (r.prompt_ids.empty() || r.token_ids.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          trainer, " trains on the policy's own samples: use a generating sampler (type = \"default\")"));
    }
    prompts.push_back(r.prompt_ids);
    completions.push_back(r.token_ids);
  }
  RolloutBatch out;
  out.sequences = MakeCompletionBatch(prompts, completions, device);
  const auto n = static_cast<std::int64_t>(rollouts.size());
  out.mask = out.sequences.completion_mask.clone();
  out.truncated = at::zeros({n}, HostOptions(at::kBool));  // filled on the host, like the batch
  for (std::int64_t i = 0; i < n; ++i) {
    const Rollout& r = rollouts[static_cast<size_t>(i)];
    out.total_length += static_cast<std::int64_t>(r.token_ids.size());
    if (r.finish_reason == FinishReason::kLength) {
      out.truncated[i] = true;
      if (mask_truncated) out.mask[i].zero_();
    }
  }
  out.truncated = out.truncated.to(device);
  return out;
}

}  // namespace posttrain

// Extension point: Trainer — an algorithm: how a batch becomes a loss and metrics.
//
// The shared loop (steps, batching, logging, checkpoints, ...) lives once in the
// framework's engine; a trainer only defines its step. It never opens files, never
// owns the optimizer, never writes checkpoints. It tells the engine what it needs:
//
//   TrainerNeeds needs;  needs.rollouts = true;  needs.rewards = true;   // GRPO-like
//
// and receives a StepInput with the batch and, if asked for, the rollouts and their
// rewards.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "posttrain/api/sampler.h"
#include "posttrain/core/example.h"

namespace posttrain {

struct TrainerNeeds {
  // The engine samples num_generations rollouts per example with the recipe's
  // [sampler] before each step.
  bool rollouts = false;
  // The engine scores the rollouts with the recipe's [[rewards]].
  bool rewards = false;
  // Completions per prompt when rollouts are needed.
  std::int64_t num_generations = 1;
};

// Rewards of a step's rollouts: `total[i]` is the weighted sum over reward functions
// for rollout i; `per_function[name][i]` the unweighted score of one function.
struct RewardTable {
  std::vector<float> total;
  std::map<std::string, std::vector<float>> per_function;
};

struct StepInput {
  std::int64_t step = 0;  // 1-based global step
  absl::Span<const Example* const> batch;
  // Empty unless needs.rollouts: batch.size() * num_generations, grouped by example.
  absl::Span<const Rollout> rollouts;
  // Null unless needs.rewards.
  const RewardTable* rewards = nullptr;
};

struct StepOutput {
  // Metric name (TRL's names, e.g. "rewards/chosen", "loss") → value, averaged by
  // the engine over the logging window.
  std::map<std::string, double> metrics;
};

class Trainer {
 public:
  virtual ~Trainer() = default;

  virtual TrainerNeeds Needs() const = 0;

  // One optimisation step's algorithm part. Called from one thread.
  virtual absl::StatusOr<StepOutput> Step(const StepInput& input) = 0;
};

}  // namespace posttrain

// Scores rollouts with several reward functions at once, on oneTBB worker threads.
//
//   RewardPipeline rewards;
//   rewards.Add("keyword", 1.0, std::move(keyword_fn));
//   rewards.Add("repetition", 0.5, std::move(repetition_fn));
//   POSTTRAIN_ASSIGN_OR_RETURN(RewardTable table, rewards.Score(prompts, rollouts));
//   // table.total[i] = Σ_f weight_f · score_f(i);  table.per_function["keyword"][i]
//
// Each (function, chunk of `chunk_size` rollouts) is one task, so a slow function
// does not hold the others back. A function that fails, returns the wrong number of
// scores or a NaN fails the whole call with a message naming the function and the
// sample (its example's file:line and generation).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "posttrain/api/reward_function.h"
#include "posttrain/api/trainer.h"

namespace posttrain {

class RewardPipeline {
 public:
  explicit RewardPipeline(std::size_t chunk_size = 8) : chunk_size_(chunk_size) {}

  void Add(std::string name, double weight, std::unique_ptr<RewardFunction> function);
  bool empty() const { return entries_.empty(); }
  std::vector<std::string> names() const;

  // `rollouts[i].prompt_index` indexes `prompts`. Thread-safe if the functions are.
  absl::StatusOr<RewardTable> Score(absl::Span<const Example* const> prompts,
                                    absl::Span<const Rollout> rollouts) const;

 private:
  struct Entry {
    std::string name;
    double weight;
    std::unique_ptr<RewardFunction> function;
  };
  std::size_t chunk_size_;
  std::vector<Entry> entries_;
};

// TRL's reward metrics of a step: reward, reward_std (over all rollouts),
// rewards/<name>/mean, rewards/<name>/std; std is unbiased, as torch.std.
void AddRewardMetrics(const RewardTable& table, std::map<std::string, double>* metrics);

}  // namespace posttrain

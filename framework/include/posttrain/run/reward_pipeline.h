// Scores rollouts with several reward functions on oneTBB worker threads, while
// generation goes on.
//
//   RewardPipeline rewards;
//   rewards.Add("keyword", 1.0, std::move(keyword_fn));
//   rewards.Add("repetition", 0.5, std::move(repetition_fn), /*skip_errors=*/true);
//
//   // Streaming: hand each rollout over as the sampler finishes it; scoring starts
//   // at once while workers are idle, else as soon as `chunk_size` rollouts wait.
//   RewardPipeline::Session session = rewards.Start(prompts, num_rollouts);
//   request.on_rollout = [&](size_t i, const Rollout& r) { session.Submit(i, r); };
//   ... sampler->Sample(request) ...
//   POSTTRAIN_ASSIGN_OR_RETURN(RewardTable table, session.Finish(rollouts));
//
//   // Or all at once:
//   POSTTRAIN_ASSIGN_OR_RETURN(RewardTable table, rewards.Score(prompts, rollouts));
//   // table.total[i] = Σ_f weight_f · score_f(i);  table.per_function["keyword"][i]
//
// Each (function, chunk) is one task, so a slow function does not hold the others
// back. A function that fails (an error status, an exception, the wrong number of
// scores) or returns NaN fails the step with a message naming the function and the
// sample (its example's file:line and generation) — unless it was added with
// skip_errors: then those samples get NaN from it, which the total skips (TRL's
// nansum: a missing score adds 0), and RewardTable::skipped counts them.
#pragma once

#include <map>
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
  // `workers`: threads of the pipeline's own oneTBB arena. Scoring runs there while
  // the caller generates; rewards that wait rather than compute (a program, a
  // server) gain from more workers than cores.
  explicit RewardPipeline(std::size_t chunk_size = 8, int workers = 8);
  ~RewardPipeline();

  void Add(std::string name, double weight, std::unique_ptr<RewardFunction> function, bool skip_errors = false);
  bool empty() const { return entries_.empty(); }
  std::vector<std::string> names() const;

  class Session;
  // A scoring session for `count` rollouts of these prompts; the prompts must
  // outlive it. One session at a time per thread that submits.
  Session Start(absl::Span<const Example* const> prompts, std::size_t count) const;

  // All rollouts at once. `rollouts[i].prompt_index` indexes `prompts`.
  absl::StatusOr<RewardTable> Score(absl::Span<const Example* const> prompts,
                                    absl::Span<const Rollout> rollouts) const;

 private:
  struct Entry {
    std::string name;
    double weight;
    bool skip_errors;
    std::unique_ptr<RewardFunction> function;
  };
  struct Workers;
  std::size_t chunk_size_;
  std::vector<Entry> entries_;
  std::unique_ptr<Workers> workers_;
};

class RewardPipeline::Session {
 public:
  Session(Session&&) noexcept;
  Session& operator=(Session&&) noexcept;
  ~Session();  // waits for tasks still running

  // Rollout `index` (< count) is final: its completion can be scored. Called from
  // one thread; returns at once (scoring runs on the worker threads).
  void Submit(std::size_t index, const Rollout& rollout);
  // Scores what was not submitted yet (taken from `rollouts`, which must hold
  // `count` rollouts), waits for every task, and returns the table.
  absl::StatusOr<RewardTable> Finish(absl::Span<const Rollout> rollouts);

 private:
  friend class RewardPipeline;
  struct State;
  explicit Session(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

// TRL's reward metrics of a step: reward, reward_std (over all rollouts),
// rewards/<name>/mean, rewards/<name>/std (over the samples it scored; std is
// unbiased, as torch.std), and rewards/<name>/skipped (samples skipped this step)
// for functions that skip errors.
void AddRewardMetrics(const RewardTable& table, std::map<std::string, double>* metrics);

}  // namespace posttrain

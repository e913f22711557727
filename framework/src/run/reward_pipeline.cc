#include "posttrain/run/reward_pipeline.h"

#include <atomic>
#include <cmath>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "posttrain/core/autocast.h"
#include "posttrain/core/status.h"
#include "tbb/global_control.h"
#include "tbb/task_arena.h"
#include "tbb/task_group.h"

namespace posttrain {

// The pipeline's threads: an arena of `workers` slots, and a global_control that
// lets oneTBB start that many workers even beyond the core count.
struct RewardPipeline::Workers {
  explicit Workers(int n)
      : count(std::max(1, n)),
        control(tbb::global_control::max_allowed_parallelism,
                static_cast<std::size_t>(std::max(n + 1, tbb::this_task_arena::max_concurrency()))),
        arena(std::max(1, n) + 1) {}  // + the slot of the thread that submits
  int count;
  tbb::global_control control;
  tbb::task_arena arena;
};

RewardPipeline::RewardPipeline(std::size_t chunk_size, int workers)
    : chunk_size_(std::max<std::size_t>(1, chunk_size)), workers_(std::make_unique<Workers>(workers)) {}
RewardPipeline::~RewardPipeline() = default;

void RewardPipeline::Add(std::string name, double weight, std::unique_ptr<RewardFunction> function,
                         bool skip_errors) {
  entries_.push_back(Entry{std::move(name), weight, skip_errors, std::move(function)});
}

std::vector<std::string> RewardPipeline::names() const {
  std::vector<std::string> names;
  for (const Entry& entry : entries_) names.push_back(entry.name);
  return names;
}

struct RewardPipeline::Session::State {
  const RewardPipeline* pipeline = nullptr;
  absl::Span<const Example* const> prompts;
  // Owned copies of what the functions read, one slot per rollout: stable while
  // tasks run.
  std::vector<std::string> completions;
  std::vector<std::int64_t> prompt_index;
  std::vector<bool> submitted;
  std::vector<std::size_t> pending;
  std::vector<std::vector<float>> scores;  // [function][rollout]
  tbb::task_group tasks;
  std::atomic<int> in_flight{0};  // chunks launched and not finished
  std::mutex mutex;               // guards first_error
  absl::Status first_error;

  ~State() { Wait(); }

  void Wait() {
    pipeline->workers_->arena.execute([this] { tasks.wait(); });
  }

  std::string SampleName(std::size_t i) const {
    return absl::StrCat("sample ", i, " (prompt from ", ExampleLocation(*prompts[static_cast<size_t>(prompt_index[i])]), ")");
  }

  // Scores `indices` with every function, one task each.
  void Launch(std::vector<std::size_t> indices) {
    auto shared = std::make_shared<const std::vector<std::size_t>>(std::move(indices));
    in_flight += static_cast<int>(pipeline->entries_.size());
    pipeline->workers_->arena.execute([&] {
      for (std::size_t f = 0; f < pipeline->entries_.size(); ++f) {
        tasks.run([this, f, shared] {
          ScoreChunk(f, *shared);
          --in_flight;
        });
      }
    });
  }

  void ScoreChunk(std::size_t f, const std::vector<std::size_t>& indices) {
    // A waiting trainer thread may run this task inside its bf16 autocast scope:
    // rewards always see plain precision.
    const NoAutocastScope no_autocast;
    const Entry& entry = pipeline->entries_[f];
    std::vector<RewardInput> inputs;
    inputs.reserve(indices.size());
    for (std::size_t i : indices) {
      const Example& example = *prompts[static_cast<size_t>(prompt_index[i])];
      const nlohmann::ordered_json* messages =
          example.conversational() && example.conversation.contains("prompt") ? &example.conversation["prompt"] : nullptr;
      inputs.push_back(RewardInput{example.prompt, completions[i], &example.metadata, messages});
    }
    absl::StatusOr<std::vector<float>> result =
        CallNoThrow(absl::StrCat("reward '", entry.name, "'"),
                    [&]() -> absl::StatusOr<std::vector<float>> { return entry.function->Score(inputs); });
    absl::Status error;
    if (!result.ok()) {
      error = Annotate(result.status(), absl::StrCat("reward '", entry.name, "' on ", indices.size(),
                                                     " samples (first: ", SampleName(indices.front()), ")"));
    } else if (result->size() != indices.size()) {
      error = absl::InternalError(absl::StrCat("reward '", entry.name, "' returned ", result->size(),
                                               " scores for ", indices.size(), " samples"));
    }
    if (!error.ok()) {
      if (entry.skip_errors) return;  // the chunk stays NaN: skipped and counted
      Record(std::move(error));
      return;
    }
    for (std::size_t k = 0; k < indices.size(); ++k) {
      const float v = (*result)[k];
      if (std::isnan(v) && !entry.skip_errors) {
        Record(absl::InvalidArgumentError(
            absl::StrCat("reward '", entry.name, "' returned NaN for ", SampleName(indices[k]))));
        return;
      }
      scores[f][indices[k]] = v;
    }
  }

  // Keeps what the functions read of rollout `index`; false if out of range or seen.
  bool Accept(std::size_t index, const Rollout& rollout) {
    if (index >= completions.size() || submitted[index]) return false;
    if (rollout.prompt_index < 0 || static_cast<std::size_t>(rollout.prompt_index) >= prompts.size()) return false;
    completions[index] = rollout.completion;
    prompt_index[index] = rollout.prompt_index;
    submitted[index] = true;
    pending.push_back(index);
    return true;
  }

  void Record(absl::Status error) {
    std::lock_guard<std::mutex> lock(mutex);
    if (first_error.ok()) first_error = std::move(error);
  }
};

RewardPipeline::Session::Session(std::unique_ptr<State> state) : state_(std::move(state)) {}
RewardPipeline::Session::Session(Session&&) noexcept = default;
RewardPipeline::Session& RewardPipeline::Session::operator=(Session&&) noexcept = default;
RewardPipeline::Session::~Session() = default;

RewardPipeline::Session RewardPipeline::Start(absl::Span<const Example* const> prompts, std::size_t count) const {
  auto state = std::make_unique<Session::State>();
  state->pipeline = this;
  state->prompts = prompts;
  state->completions.resize(count);
  state->prompt_index.assign(count, -1);
  state->submitted.assign(count, false);
  state->scores.assign(entries_.size(), std::vector<float>(count, std::nanf("")));
  return Session(std::move(state));
}

void RewardPipeline::Session::Submit(std::size_t index, const Rollout& rollout) {
  State& s = *state_;
  if (!s.Accept(index, rollout)) return;  // Finish reports what is missing
  // A full chunk goes at once; a partial one too while workers are idle, so that
  // completions finishing one by one are scored one by one.
  if (s.pending.size() >= s.pipeline->chunk_size_ ||
      s.in_flight.load() + static_cast<int>(s.pipeline->entries_.size()) <= s.pipeline->workers_->count) {
    s.Launch(std::exchange(s.pending, {}));
  }
}

absl::StatusOr<RewardTable> RewardPipeline::Session::Finish(absl::Span<const Rollout> rollouts) {
  State& s = *state_;
  const std::size_t n = s.completions.size();
  if (rollouts.size() != n) {
    s.Wait();
    return absl::InternalError(absl::StrCat("the sampler returned ", rollouts.size(), " rollouts, expected ", n));
  }
  for (std::size_t i = 0; i < n; ++i) {
    const std::int64_t p = rollouts[i].prompt_index;
    if (p < 0 || static_cast<std::size_t>(p) >= s.prompts.size()) {
      s.Wait();
      return absl::InternalError(absl::StrCat("rollout ", i, " has prompt_index ", p, " of ", s.prompts.size(), " prompts"));
    }
    // What was not streamed in goes in full chunks.
    if (s.Accept(i, rollouts[i]) && s.pending.size() >= s.pipeline->chunk_size_) s.Launch(std::exchange(s.pending, {}));
  }
  if (!s.pending.empty()) s.Launch(std::exchange(s.pending, {}));
  s.Wait();
  POSTTRAIN_RETURN_IF_ERROR(s.first_error);

  RewardTable table;
  table.total.assign(n, 0.0f);
  const auto& entries = s.pipeline->entries_;
  for (std::size_t f = 0; f < entries.size(); ++f) {
    std::int64_t skipped = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const float v = s.scores[f][i];
      if (std::isnan(v)) {
        ++skipped;
        continue;
      }
      table.total[i] += static_cast<float>(entries[f].weight) * v;
    }
    if (entries[f].skip_errors) table.skipped[entries[f].name] = skipped;
    table.per_function[entries[f].name] = std::move(s.scores[f]);
  }
  return table;
}

absl::StatusOr<RewardTable> RewardPipeline::Score(absl::Span<const Example* const> prompts,
                                                  absl::Span<const Rollout> rollouts) const {
  Session session = Start(prompts, rollouts.size());
  return session.Finish(rollouts);
}

namespace {

// Mean and unbiased std over the non-NaN values.
void MeanStd(const std::vector<float>& values, double* mean, double* std) {
  double sum = 0.0;
  std::size_t count = 0;
  for (float v : values) {
    if (std::isnan(v)) continue;
    sum += v;
    ++count;
  }
  *mean = count == 0 ? std::nan("") : sum / static_cast<double>(count);
  double squares = 0.0;
  for (float v : values) {
    if (!std::isnan(v)) squares += (v - *mean) * (v - *mean);
  }
  *std = count > 1 ? std::sqrt(squares / static_cast<double>(count - 1)) : 0.0;
}

}  // namespace

void AddRewardMetrics(const RewardTable& table, std::map<std::string, double>* metrics) {
  MeanStd(table.total, &(*metrics)["reward"], &(*metrics)["reward_std"]);
  for (const auto& [name, scores] : table.per_function) {
    MeanStd(scores, &(*metrics)["rewards/" + name + "/mean"], &(*metrics)["rewards/" + name + "/std"]);
  }
  for (const auto& [name, count] : table.skipped) (*metrics)["rewards/" + name + "/skipped"] = static_cast<double>(count);
}

}  // namespace posttrain

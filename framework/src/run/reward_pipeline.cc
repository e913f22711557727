#include "posttrain/run/reward_pipeline.h"

#include <cmath>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "posttrain/core/status.h"
#include "tbb/parallel_for.h"

namespace posttrain {

void RewardPipeline::Add(std::string name, double weight,
                         std::unique_ptr<RewardFunction> function) {
  entries_.push_back(Entry{std::move(name), weight, std::move(function)});
}

std::vector<std::string> RewardPipeline::names() const {
  std::vector<std::string> names;
  for (const Entry& entry : entries_) names.push_back(entry.name);
  return names;
}

absl::StatusOr<RewardTable> RewardPipeline::Score(absl::Span<const Example* const> prompts,
                                                  absl::Span<const Rollout> rollouts) const {
  const std::size_t n = rollouts.size();
  std::vector<RewardInput> inputs(n);
  for (std::size_t i = 0; i < n; ++i) {
    const std::int64_t p = rollouts[i].prompt_index;
    if (p < 0 || static_cast<std::size_t>(p) >= prompts.size()) {
      return absl::InternalError(absl::StrCat("rollout ", i, " has prompt_index ", p, " of ",
                                              prompts.size(), " prompts"));
    }
    inputs[i] = RewardInput{prompts[p]->prompt, rollouts[i].completion, &prompts[p]->metadata};
  }
  auto sample_name = [&](std::size_t i) {
    const Example& example = *prompts[rollouts[i].prompt_index];
    return absl::StrCat("sample ", i, " (prompt from ", ExampleLocation(example), ")");
  };

  std::vector<std::vector<float>> scores(entries_.size(), std::vector<float>(n, 0.0f));
  const std::size_t chunks = (n + chunk_size_ - 1) / chunk_size_;
  std::mutex error_mutex;
  absl::Status first_error;
  tbb::parallel_for(std::size_t{0}, entries_.size() * chunks, [&](std::size_t task) {
    const Entry& entry = entries_[task / chunks];
    const std::size_t begin = (task % chunks) * chunk_size_;
    const std::size_t end = std::min(n, begin + chunk_size_);
    absl::StatusOr<std::vector<float>> result =
        CallNoThrow(absl::StrCat("reward '", entry.name, "'"),
                    [&]() -> absl::StatusOr<std::vector<float>> {
                      return entry.function->Score(
                          absl::MakeConstSpan(inputs).subspan(begin, end - begin));
                    });
    absl::Status error;
    if (!result.ok()) {
      error = Annotate(result.status(),
                       absl::StrCat("reward '", entry.name, "' on samples ", begin, "..",
                                    end - 1, " (first: ", sample_name(begin), ")"));
    } else if (result->size() != end - begin) {
      error = absl::InternalError(absl::StrCat("reward '", entry.name, "' returned ",
                                               result->size(), " scores for ", end - begin,
                                               " samples"));
    } else {
      for (std::size_t i = begin; i < end; ++i) {
        const float v = (*result)[i - begin];
        if (std::isnan(v)) {
          error = absl::InvalidArgumentError(
              absl::StrCat("reward '", entry.name, "' returned NaN for ", sample_name(i)));
          break;
        }
        scores[task / chunks][i] = v;
      }
    }
    if (!error.ok()) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (first_error.ok()) first_error = error;
    }
  });
  POSTTRAIN_RETURN_IF_ERROR(first_error);

  RewardTable table;
  table.total.assign(n, 0.0f);
  for (std::size_t f = 0; f < entries_.size(); ++f) {
    for (std::size_t i = 0; i < n; ++i) {
      table.total[i] += static_cast<float>(entries_[f].weight) * scores[f][i];
    }
    table.per_function[entries_[f].name] = std::move(scores[f]);
  }
  return table;
}

namespace {

void MeanStd(const std::vector<float>& values, double* mean, double* std) {
  double sum = 0.0;
  for (float v : values) sum += v;
  *mean = values.empty() ? 0.0 : sum / static_cast<double>(values.size());
  double squares = 0.0;
  for (float v : values) squares += (v - *mean) * (v - *mean);
  *std = values.size() > 1 ? std::sqrt(squares / static_cast<double>(values.size() - 1)) : 0.0;
}

}  // namespace

void AddRewardMetrics(const RewardTable& table, std::map<std::string, double>* metrics) {
  MeanStd(table.total, &(*metrics)["reward"], &(*metrics)["reward_std"]);
  for (const auto& [name, scores] : table.per_function) {
    MeanStd(scores, &(*metrics)["rewards/" + name + "/mean"], &(*metrics)["rewards/" + name + "/std"]);
  }
}

}  // namespace posttrain

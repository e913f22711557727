#include "posttrain/run/engine.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "posttrain/core/threads.h"
#include "posttrain/model/hf_model.h"
#include "posttrain/run/engine_options.h"
#include "posttrain/tokenizer/tokenizer.h"
#include "posttrain/run/progress.h"
#include "posttrain/run/reward_pipeline.h"
#include "posttrain/run/run_directory.h"
#include "spdlog/sinks/basic_file_sink.h"
#include "spdlog/spdlog.h"

namespace posttrain {
namespace {

// Adds a file sink to the default logger for the lifetime of the object.
class RunLog {
 public:
  explicit RunLog(const std::string& path) {
    try {
      sink_ = std::make_shared<spdlog::sinks::basic_file_sink_mt>(path, /*truncate=*/true);
      spdlog::default_logger()->sinks().push_back(sink_);
    } catch (const spdlog::spdlog_ex& e) {
      spdlog::warn("cannot write run log {}: {}", path, e.what());
    }
  }
  ~RunLog() {
    if (sink_ == nullptr) return;
    auto& sinks = spdlog::default_logger()->sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), sink_), sinks.end());
  }

 private:
  spdlog::sink_ptr sink_;
};

// Means of metrics over a window of steps.
class MetricWindow {
 public:
  void Add(const std::map<std::string, double>& metrics) {
    for (const auto& [name, value] : metrics) {
      auto& [sum, count] = sums_[name];
      sum += value;
      ++count;
    }
  }
  std::map<std::string, double> Means() const {
    std::map<std::string, double> means;
    for (const auto& [name, sum_count] : sums_) {
      means[name] = sum_count.first / static_cast<double>(sum_count.second);
    }
    return means;
  }
  bool empty() const { return sums_.empty(); }
  void Clear() { sums_.clear(); }

 private:
  std::map<std::string, std::pair<double, std::int64_t>> sums_;
};

std::string Summary(const std::map<std::string, double>& metrics) {
  std::vector<std::string> parts;
  for (const auto& [name, value] : metrics) parts.push_back(absl::StrFormat("%s=%.4g", name, value));
  return absl::StrJoin(parts, " ");
}

}  // namespace

absl::StatusOr<RunResult> RunRecipe(const Recipe& recipe, const Registry& registry) {
  POSTTRAIN_RETURN_IF_ERROR(recipe.Validate(registry));
  POSTTRAIN_ASSIGN_OR_RETURN(RunDirectory run_dir,
                             RunDirectory::Create(recipe.output_dir(), recipe.overwrite_output_dir()));
  POSTTRAIN_RETURN_IF_ERROR(
      WriteFileAtomic(run_dir.File("recipe.resolved.toml"), recipe.ResolvedToml(registry)));
  RunLog run_log(run_dir.File("run.log"));
  spdlog::info("run directory: {}", run_dir.path());

  // Components, in the order a value flows through a step.
  POSTTRAIN_ASSIGN_OR_RETURN(ComponentConfig data_config, recipe.Component("data", registry));
  POSTTRAIN_ASSIGN_OR_RETURN(std::unique_ptr<DataAdapter> data,
                             registry.Create<DataAdapter>(data_config));
  POSTTRAIN_ASSIGN_OR_RETURN(ComponentConfig trainer_config, recipe.Component("trainer", registry));
  POSTTRAIN_ASSIGN_OR_RETURN(std::unique_ptr<Trainer> trainer,
                             registry.Create<Trainer>(trainer_config));
  const EngineOptions options = EngineOptions::FromConfig(trainer_config);
  const TrainerNeeds needs = trainer->Needs();

  // The policy, if the recipe names one.
  std::unique_ptr<CausalLM> policy_model;
  std::unique_ptr<Tokenizer> tokenizer;
  POSTTRAIN_ASSIGN_OR_RETURN(std::optional<ComponentConfig> model_config, recipe.Model());
  if (model_config) {
    const std::string path = model_config->GetString("path");
    POSTTRAIN_ASSIGN_OR_RETURN(at::ScalarType dtype, ParseDtype(model_config->GetString("dtype")));
    ConfigureThreads(dtype);
    POSTTRAIN_ASSIGN_OR_RETURN(policy_model, LoadCausalLM(path, dtype));
    const std::string tokenizer_path =
        model_config->GetString("tokenizer").empty() ? path : model_config->GetString("tokenizer");
    POSTTRAIN_ASSIGN_OR_RETURN(tokenizer, LoadTokenizer(tokenizer_path));
    spdlog::info("model {}: {} layers, hidden {}, vocab {}, {}", path, policy_model->config().num_hidden_layers,
                 policy_model->config().hidden_size, policy_model->config().vocab_size, DtypeName(dtype));
  }
  Policy policy{policy_model.get(), tokenizer.get()};

  std::unique_ptr<Sampler> sampler;
  if (recipe.HasComponent("sampler")) {
    POSTTRAIN_ASSIGN_OR_RETURN(ComponentConfig config, recipe.Component("sampler", registry));
    POSTTRAIN_ASSIGN_OR_RETURN(sampler, registry.Create<Sampler>(config));
  }
  if (needs.rollouts && sampler == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        recipe.source_name(), ": trainer '", trainer_config.type(),
        "' samples completions: add a [sampler] table (known samplers: ",
        absl::StrJoin(registry.Names(ComponentKind::kSampler), ", "), ")"));
  }
  RewardPipeline rewards;
  POSTTRAIN_ASSIGN_OR_RETURN(std::vector<Recipe::RewardEntry> reward_entries,
                             recipe.Rewards(registry));
  for (Recipe::RewardEntry& entry : reward_entries) {
    POSTTRAIN_ASSIGN_OR_RETURN(std::unique_ptr<RewardFunction> function,
                               registry.Create<RewardFunction>(entry.config));
    rewards.Add(entry.name, entry.weight, std::move(function));
  }
  if (needs.rewards && rewards.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        recipe.source_name(), ": trainer '", trainer_config.type(),
        "' needs rewards: add at least one [[rewards]] table (known reward functions: ",
        absl::StrJoin(registry.Names(ComponentKind::kRewardFunction), ", "), ")"));
  }

  absl::StatusOr<std::vector<Example>> loaded =
      CallNoThrow("data adapter", [&] { return data->Load(); });
  if (!loaded.ok()) return Annotate(loaded.status(), data_config.where());
  const std::vector<Example> examples = std::move(*loaded);
  if (examples.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(data_config.where(), ": the data source holds no examples"));
  }
  spdlog::info("{} training examples{}", examples.size(),
               data->num_skipped() > 0 ? absl::StrCat(" (", data->num_skipped(), " malformed skipped)")
                                       : std::string());

  const auto n = static_cast<std::int64_t>(examples.size());
  const std::int64_t batch_size = std::max<std::int64_t>(1, options.per_device_train_batch_size);
  const std::int64_t steps_per_epoch = (n + batch_size - 1) / batch_size;
  const std::int64_t max_steps =
      options.max_steps > 0
          ? options.max_steps
          : std::max<std::int64_t>(1, static_cast<std::int64_t>(std::ceil(
                                          options.num_train_epochs * steps_per_epoch)));

  POSTTRAIN_ASSIGN_OR_RETURN(JsonlWriter metrics_out, JsonlWriter::Open(run_dir.File("metrics.jsonl")));
  JsonlWriter completions_out;
  if (needs.rollouts) {
    POSTTRAIN_ASSIGN_OR_RETURN(completions_out, JsonlWriter::Open(run_dir.File("completions.jsonl")));
  }

  RunResult result;
  std::vector<std::int64_t> order(static_cast<size_t>(n));
  std::int64_t epoch = -1;
  std::int64_t cursor = n;  // position in `order`; n = start a new epoch
  MetricWindow window, whole_run;
  ProgressLine progress("train", max_steps);
  for (std::int64_t step = 1; step <= max_steps; ++step) {
    std::vector<const Example*> batch;
    while (static_cast<std::int64_t>(batch.size()) < batch_size) {
      if (cursor == n) {
        ++epoch;
        std::iota(order.begin(), order.end(), 0);
        if (options.shuffle) {
          std::mt19937_64 rng(static_cast<std::uint64_t>(recipe.seed()) * 1000003u +
                              static_cast<std::uint64_t>(epoch));
          std::shuffle(order.begin(), order.end(), rng);
        }
        cursor = 0;
        if (!batch.empty()) break;  // the last batch of an epoch may be short
      }
      batch.push_back(&examples[static_cast<size_t>(order[static_cast<size_t>(cursor++)])]);
    }

    StepInput input;
    input.step = step;
    input.batch = batch;
    std::vector<Rollout> rollouts;
    RewardTable reward_table;
    if (needs.rollouts) {
      SampleRequest request;
      request.prompts = batch;
      request.num_generations = needs.num_generations;
      request.seed = static_cast<std::uint64_t>(recipe.seed()) * 1000003u + static_cast<std::uint64_t>(step);
      request.policy = policy;
      POSTTRAIN_ASSIGN_OR_RETURN(rollouts, CallNoThrow("sampler", [&] { return sampler->Sample(request); }));
      input.rollouts = rollouts;
      if (needs.rewards || !rewards.empty()) {
        POSTTRAIN_ASSIGN_OR_RETURN(reward_table, rewards.Score(batch, rollouts));
        input.rewards = &reward_table;
      }
    }
    POSTTRAIN_ASSIGN_OR_RETURN(
        StepOutput output,
        CallNoThrow(absl::StrCat("trainer '", trainer_config.type(), "'"),
                    [&] { return trainer->Step(input); }));
    window.Add(output.metrics);
    whole_run.Add(output.metrics);
    if (step == max_steps) {
      const size_t shown = std::min<size_t>(4, rollouts.size());
      for (size_t k = 0; k < shown; ++k) {
        const Rollout& r = rollouts[k * rollouts.size() / shown];
        result.sample_completions.push_back({batch[static_cast<size_t>(r.prompt_index)]->prompt, r.completion});
      }
    }

    if (step % std::max<std::int64_t>(1, options.logging_steps) == 0 || step == max_steps) {
      const double epoch_progress =
          static_cast<double>(epoch) + static_cast<double>(cursor) / static_cast<double>(n);
      nlohmann::json line = {{"step", step}, {"epoch", epoch_progress}};
      for (const auto& [name, value] : window.Means()) line[name] = value;
      POSTTRAIN_RETURN_IF_ERROR(metrics_out.Write(line));
      for (size_t i = 0; i < rollouts.size(); ++i) {
        nlohmann::json row = {{"step", step},
                              {"prompt", batch[static_cast<size_t>(rollouts[i].prompt_index)]->prompt},
                              {"completion", rollouts[i].completion},
                              {"finish_reason", FinishReasonName(rollouts[i].finish_reason)}};
        if (input.rewards != nullptr) {
          row["reward"] = reward_table.total[i];
          for (const auto& [name, scores] : reward_table.per_function) row["rewards"][name] = scores[i];
        }
        POSTTRAIN_RETURN_IF_ERROR(completions_out.Write(row));
      }
      spdlog::debug("step {}: {}", step, Summary(window.Means()));
      progress.Update(step, Summary(window.Means()));
      window.Clear();
    }
  }
  progress.Finish();

  result.output_dir = run_dir.path();
  result.steps = max_steps;
  result.num_train_examples = n;
  result.mean_metrics = whole_run.Means();
  spdlog::info("done: {} steps; run means: {}", max_steps, Summary(result.mean_metrics));
  return result;
}

}  // namespace posttrain

#include "posttrain/run/engine.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numeric>
#include <optional>
#include <random>

#include <ATen/autocast_mode.h>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "posttrain/core/threads.h"
#include "posttrain/distributed/process_group.h"
#include "posttrain/model/hf_model.h"
#include "posttrain/run/engine_options.h"
#include "posttrain/run/progress.h"
#include "posttrain/run/reward_pipeline.h"
#include "posttrain/run/run_directory.h"
#include "posttrain/tokenizer/tokenizer.h"
#include "posttrain/train/adamw.h"
#include "posttrain/train/checkpoint.h"
#include "posttrain/train/tokenize.h"
#include "spdlog/sinks/basic_file_sink.h"
#include "spdlog/spdlog.h"

namespace posttrain {
namespace {

// Adds a file sink to the default logger for the lifetime of the object.
class RunLog {
 public:
  explicit RunLog(const std::string& path, bool append) {
    try {
      sink_ = std::make_shared<spdlog::sinks::basic_file_sink_mt>(path, /*truncate=*/!append);
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

// Means of metrics over a window of steps (weighted by `weight`).
class MetricWindow {
 public:
  void Add(const std::map<std::string, double>& metrics, double weight = 1.0) {
    for (const auto& [name, value] : metrics) {
      auto& [sum, total] = sums_[name];
      sum += value * weight;
      total += weight;
    }
  }
  std::map<std::string, double> Means() const {
    std::map<std::string, double> means;
    for (const auto& [name, st] : sums_) means[name] = st.first / st.second;
    return means;
  }
  void Clear() { sums_.clear(); }

 private:
  std::map<std::string, std::pair<double, double>> sums_;
};

std::string Summary(const std::map<std::string, double>& metrics) {
  std::vector<std::string> parts;
  for (const auto& [name, value] : metrics) parts.push_back(absl::StrFormat("%s=%.4g", name, value));
  return absl::StrJoin(parts, " ");
}

// Example order: a seeded permutation per epoch; resumable by replaying.
class DataOrder {
 public:
  DataOrder(std::int64_t n, std::uint64_t seed, bool shuffle) : n_(n), seed_(seed), shuffle_(shuffle), order_(n) {}
  // The next micro-batch: up to `count` indices; the last batch of an epoch may be short.
  std::vector<std::int64_t> Next(std::int64_t count) {
    std::vector<std::int64_t> out;
    while (static_cast<std::int64_t>(out.size()) < count) {
      if (cursor_ == n_) {
        ++epoch_;
        std::iota(order_.begin(), order_.end(), 0);
        if (shuffle_) {
          std::mt19937_64 rng(seed_ * 1000003u + static_cast<std::uint64_t>(epoch_));
          std::shuffle(order_.begin(), order_.end(), rng);
        }
        cursor_ = 0;
        if (!out.empty()) break;
      }
      out.push_back(order_[static_cast<size_t>(cursor_++)]);
    }
    return out;
  }
  double epoch() const { return static_cast<double>(epoch_) + static_cast<double>(cursor_) / static_cast<double>(n_); }

 private:
  std::int64_t n_;
  std::uint64_t seed_;
  bool shuffle_;
  std::vector<std::int64_t> order_;
  std::int64_t epoch_ = -1;
  std::int64_t cursor_ = n_;  // n_: start a new epoch on the first call
};

// bf16 autocast on CPU for a scope (fp32 master weights stay fp32).
class Autocast {
 public:
  explicit Autocast(bool enabled) : enabled_(enabled) {
    if (!enabled_) return;
    at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
    at::autocast::set_cpu_enabled(true);
  }
  ~Autocast() {
    if (!enabled_) return;
    at::autocast::set_cpu_enabled(false);
    at::autocast::clear_cache();
  }

 private:
  bool enabled_;
};

}  // namespace

absl::StatusOr<RunResult> RunRecipe(const Recipe& recipe, const Registry& registry) {
  POSTTRAIN_RETURN_IF_ERROR(recipe.Validate(registry));
  POSTTRAIN_ASSIGN_OR_RETURN(ComponentConfig trainer_config, recipe.Component("trainer", registry));
  const EngineOptions options = EngineOptions::FromConfig(trainer_config);
  const bool resuming = !options.resume_from_checkpoint.empty();
  POSTTRAIN_ASSIGN_OR_RETURN(RunDirectory run_dir,
                             RunDirectory::Create(recipe.output_dir(), recipe.overwrite_output_dir() || resuming));
  POSTTRAIN_RETURN_IF_ERROR(
      WriteFileAtomic(run_dir.File("recipe.resolved.toml"), recipe.ResolvedToml(registry)));
  RunLog run_log(run_dir.File("run.log"), resuming);
  spdlog::info("run directory: {}", run_dir.path());

  // Data, then the trainer and what it needs.
  POSTTRAIN_ASSIGN_OR_RETURN(ComponentConfig data_config, recipe.Component("data", registry));
  POSTTRAIN_ASSIGN_OR_RETURN(std::unique_ptr<DataAdapter> data, registry.Create<DataAdapter>(data_config));
  absl::StatusOr<std::vector<Example>> loaded = CallNoThrow("data adapter", [&] { return data->Load(); });
  if (!loaded.ok()) return Annotate(loaded.status(), data_config.where());
  std::vector<Example> examples = std::move(*loaded);
  std::vector<Example> eval_examples;
  if (const double eval_size = recipe.eval_size(); eval_size > 0) {
    const auto held = static_cast<std::int64_t>(eval_size < 1 ? std::round(eval_size * examples.size()) : eval_size);
    if (held >= static_cast<std::int64_t>(examples.size())) {
      return absl::InvalidArgumentError(absl::StrCat(data_config.where(), ": eval_size ", eval_size, " leaves no training examples of ", examples.size()));
    }
    eval_examples.assign(std::make_move_iterator(examples.end() - held), std::make_move_iterator(examples.end()));
    examples.erase(examples.end() - held, examples.end());
  }
  if (recipe.HasComponent("eval_data")) {
    POSTTRAIN_ASSIGN_OR_RETURN(ComponentConfig eval_config, recipe.Component("eval_data", registry));
    POSTTRAIN_ASSIGN_OR_RETURN(std::unique_ptr<DataAdapter> eval_data, registry.Create<DataAdapter>(eval_config));
    absl::StatusOr<std::vector<Example>> eval_loaded = CallNoThrow("eval data adapter", [&] { return eval_data->Load(); });
    if (!eval_loaded.ok()) return Annotate(eval_loaded.status(), eval_config.where());
    eval_examples = std::move(*eval_loaded);
  }
  if (examples.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(data_config.where(), ": the data source holds no examples"));
  }
  spdlog::info("{} training examples, {} eval examples{}", examples.size(), eval_examples.size(),
               data->num_skipped() > 0 ? absl::StrCat(" (", data->num_skipped(), " malformed skipped)") : std::string());

  POSTTRAIN_ASSIGN_OR_RETURN(std::unique_ptr<Trainer> trainer, registry.Create<Trainer>(trainer_config));
  const TrainerNeeds needs = trainer->Needs();

  // The policy (and reference), if the recipe names one.
  std::unique_ptr<CausalLM> policy, reference;
  std::unique_ptr<Tokenizer> tokenizer;
  std::string model_path;
  POSTTRAIN_ASSIGN_OR_RETURN(std::optional<ComponentConfig> model_config, recipe.Model());
  if (needs.model && !model_config) {
    return absl::InvalidArgumentError(absl::StrCat(recipe.source_name(), ": trainer '", trainer_config.type(),
                                                   "' trains a model: add a [model] table with its path"));
  }
  if (model_config) {
    model_path = model_config->GetString("path");
    POSTTRAIN_ASSIGN_OR_RETURN(at::ScalarType dtype, ParseDtype(model_config->GetString("dtype")));
    ConfigureThreads(options.bf16 ? at::kBFloat16 : dtype);
    POSTTRAIN_ASSIGN_OR_RETURN(policy, LoadCausalLM(model_path, dtype));
    const std::string tokenizer_path =
        model_config->GetString("tokenizer").empty() ? model_path : model_config->GetString("tokenizer");
    POSTTRAIN_ASSIGN_OR_RETURN(tokenizer, LoadTokenizer(tokenizer_path));
    spdlog::info("model {}: {} layers, hidden {}, vocab {}, {}{}", model_path, policy->config().num_hidden_layers,
                 policy->config().hidden_size, policy->config().vocab_size, DtypeName(dtype),
                 options.bf16 ? " (bf16 autocast)" : "");
    if (needs.reference) {
      if (options.ref_model.empty()) {
        reference = policy->Clone();
      } else {
        POSTTRAIN_ASSIGN_OR_RETURN(reference, LoadCausalLM(options.ref_model, dtype));
      }
    }
  }
  Policy sampling_policy{policy.get(), tokenizer.get()};

  std::unique_ptr<Sampler> sampler;
  if (recipe.HasComponent("sampler")) {
    POSTTRAIN_ASSIGN_OR_RETURN(ComponentConfig config, recipe.Component("sampler", registry));
    POSTTRAIN_ASSIGN_OR_RETURN(sampler, registry.Create<Sampler>(config));
    // A trainer that recomputes the sampler's log-probs must use its settings, or
    // the importance ratio is off from the first step.
    for (const char* key : {"temperature", "max_completion_length"}) {
      if (!needs.rollouts || config.schema().Find(key) == nullptr || trainer_config.schema().Find(key) == nullptr) continue;
      const double trainer_value = trainer_config.GetFloat(key), sampler_value = config.GetFloat(key);
      if (trainer_value != sampler_value) {
        return absl::InvalidArgumentError(absl::StrCat(
            recipe.source_name(), ": trainer.", key, " = ", trainer_value, trainer_config.Has(key) ? "" : " (default)",
            " but sampler.", key, " = ", sampler_value, config.Has(key) ? "" : " (default)",
            ": the trainer recomputes the sampler's log-probs and must use the same value; set both"));
      }
    }
  }
  if (needs.rollouts && sampler == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        recipe.source_name(), ": trainer '", trainer_config.type(), "' samples completions: add a [sampler] table (known samplers: ",
        absl::StrJoin(registry.Names(ComponentKind::kSampler), ", "), ")"));
  }
  RewardPipeline rewards(/*chunk_size=*/8, static_cast<int>(std::max<std::int64_t>(1, options.reward_workers)));
  POSTTRAIN_ASSIGN_OR_RETURN(std::vector<Recipe::RewardEntry> reward_entries, recipe.Rewards(registry));
  for (Recipe::RewardEntry& entry : reward_entries) {
    POSTTRAIN_ASSIGN_OR_RETURN(std::unique_ptr<RewardFunction> function, registry.Create<RewardFunction>(entry.config));
    rewards.Add(entry.name, entry.weight, std::move(function), entry.skip_errors);
  }
  if (needs.rewards && rewards.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        recipe.source_name(), ": trainer '", trainer_config.type(), "' needs rewards: add at least one [[rewards]] table (known reward functions: ",
        absl::StrJoin(registry.Names(ComponentKind::kRewardFunction), ", "), ")"));
  }

  // Tokenization (oneTBB), ahead of every step.
  std::vector<TokenizedExample> train_tokens, eval_tokens;
  if (tokenizer != nullptr) {
    TokenizeOptions tokenize{options.max_length, options.max_prompt_length, options.truncation_mode};
    train_tokens = TokenizeExamples(examples, *tokenizer, tokenize);
    eval_tokens = TokenizeExamples(eval_examples, *tokenizer, tokenize);
  } else {
    train_tokens.resize(examples.size());
    eval_tokens.resize(eval_examples.size());
  }

  TrainerContext context{policy.get(), reference.get(), tokenizer.get()};
  POSTTRAIN_RETURN_IF_ERROR(CallNoThrow("trainer setup", [&] { return trainer->Setup(context); }));
  POSTTRAIN_RETURN_IF_ERROR(CallNoThrow("trainer prepare", [&] { return trainer->Prepare(train_tokens); }));
  if (trainer->ReleasesReference()) reference.reset();

  // What the optimizer trains: the policy's parameters and the trainer's own.
  std::vector<std::pair<std::string, at::Tensor>> trainable;
  const std::vector<std::pair<std::string, at::Tensor>> extras = trainer->ExtraParameters();
  if (policy != nullptr) {
    for (const auto& [name, p] : policy->named_parameters()) {
      if (policy->config().tie_word_embeddings && name == "lm_head.weight") continue;
      p.set_requires_grad(true);
      trainable.push_back({name, p});
    }
  }
  const std::vector<std::pair<std::string, at::Tensor>> trainer_params = trainer->TrainerParameters();
  for (const auto& group : {extras, trainer_params}) {
    for (const auto& [name, p] : group) {
      p.set_requires_grad(true);
      trainable.push_back({name, p});
    }
  }
  POSTTRAIN_ASSIGN_OR_RETURN(std::unique_ptr<ProcessGroup> process_group, ProcessGroup::CreateLocal());
  AdamW optimizer(trainable, AdamWOptions{options.adam_beta1, options.adam_beta2, options.adam_epsilon, options.weight_decay});
  const auto [architecture, num_labels] = trainer->SavedArchitecture();
  SaveOptions save;
  save.tokenizer_source_dir = model_path;
  save.extras = extras;
  save.architecture = architecture;
  save.num_labels = num_labels;

  const auto n = static_cast<std::int64_t>(examples.size());
  const std::int64_t batch_size = std::max<std::int64_t>(1, options.per_device_train_batch_size);
  const std::int64_t accumulation = std::max<std::int64_t>(1, options.gradient_accumulation_steps);
  const std::int64_t micro_per_epoch = (n + batch_size - 1) / batch_size;
  const std::int64_t max_steps =
      options.max_steps > 0
          ? options.max_steps
          : std::max<std::int64_t>(1, static_cast<std::int64_t>(std::ceil(
                                          options.num_train_epochs * micro_per_epoch / static_cast<double>(accumulation))));
  const std::int64_t warmup = options.warmup_steps > 0
                                  ? options.warmup_steps
                                  : static_cast<std::int64_t>(std::ceil(options.warmup_ratio * max_steps));

  DataOrder order(n, static_cast<std::uint64_t>(recipe.seed()), options.shuffle);
  // Optimisation steps per generated batch (1 for trainers without rollouts).
  const std::int64_t reuse = needs.rollouts ? std::max<std::int64_t>(1, needs.steps_per_generation) : 1;
  std::int64_t start_step = 0;
  if (resuming) {
    std::string resolved;
    POSTTRAIN_ASSIGN_OR_RETURN(LoadedCheckpoint checkpoint,
                               LoadCheckpoint(options.resume_from_checkpoint, run_dir.path(), &resolved));
    at::NoGradGuard no_grad;
    for (auto& [name, p] : trainable) {
      const at::Tensor* saved = nullptr;
      for (const auto* source : {&checkpoint.tensors, &checkpoint.trainer_params}) {
        if (auto it = source->find(name); saved == nullptr && it != source->end()) saved = &it->second;
      }
      if (saved == nullptr || saved->sizes() != p.sizes()) {
        return absl::DataLossError(absl::StrCat("checkpoint '", resolved, "' lacks or mis-shapes '", name, "'"));
      }
      p.copy_(*saved);
    }
    POSTTRAIN_RETURN_IF_ERROR(Annotate(optimizer.LoadStateDict(checkpoint.optimizer), resolved));
    start_step = checkpoint.trainer_state["global_step"].get<std::int64_t>();
    // Replay the data order: one batch per micro-batch of each generation. A run
    // resumed in the middle of a generation's reuse starts a fresh generation.
    const std::int64_t generations_done = (start_step + reuse - 1) / reuse;
    for (std::int64_t i = 0; i < generations_done * accumulation; ++i) order.Next(batch_size);
    spdlog::info("resumed from {} at step {}", resolved, start_step);
  }

  POSTTRAIN_ASSIGN_OR_RETURN(JsonlWriter metrics_out, JsonlWriter::Open(run_dir.File("metrics.jsonl"), resuming));
  JsonlWriter completions_out;
  if (needs.rollouts) {
    POSTTRAIN_ASSIGN_OR_RETURN(completions_out, JsonlWriter::Open(run_dir.File("completions.jsonl"), resuming));
  }

  auto evaluate = [&](std::int64_t step) -> absl::Status {
    if (eval_examples.empty()) return absl::OkStatus();
    at::NoGradGuard no_grad;
    Autocast autocast(options.bf16);
    MetricWindow eval_window;
    const std::int64_t eb = std::max<std::int64_t>(1, options.per_device_eval_batch_size);
    for (size_t start = 0; start < eval_examples.size(); start += static_cast<size_t>(eb)) {
      const size_t end = std::min(eval_examples.size(), start + static_cast<size_t>(eb));
      std::vector<const Example*> batch;
      std::vector<const TokenizedExample*> tokens;
      for (size_t i = start; i < end; ++i) {
        batch.push_back(&eval_examples[i]);
        tokens.push_back(&eval_tokens[i]);
      }
      StepInput input;
      input.step = step;
      input.training = false;
      input.batch = batch;
      input.tokens = tokens;
      POSTTRAIN_ASSIGN_OR_RETURN(StepOutput out, CallNoThrow("trainer eval", [&] { return trainer->Step(input); }));
      if (out.loss.defined()) out.metrics["loss"] = out.loss.item<double>();
      // Per-token metrics are weighted by the batch's tokens when the trainer says
      // how many there were, so eval_loss is the exact mean over all eval tokens.
      auto tokens_it = out.metrics.find("num_tokens");
      const double weight = tokens_it != out.metrics.end() ? tokens_it->second : static_cast<double>(end - start);
      eval_window.Add(out.metrics, weight);
    }
    nlohmann::json line = {{"step", step}, {"epoch", order.epoch() < 0 ? 0.0 : order.epoch()}};
    std::map<std::string, double> means = eval_window.Means();
    for (const auto& [name, value] : means) line["eval_" + name] = value;
    spdlog::info("eval at step {}: {}", step, Summary(means));
    return metrics_out.Write(line);
  };

  RunResult result;
  if (options.eval_on_start && start_step == 0) POSTTRAIN_RETURN_IF_ERROR(evaluate(0));
  MetricWindow window, whole_run;
  ProgressLine progress("train", max_steps);
  // Rollouts of the current generation, per micro-batch, reused for
  // needs.steps_per_generation steps.
  struct MicroRollouts {
    std::vector<const Example*> batch;
    std::vector<const TokenizedExample*> tokens;
    std::vector<Rollout> rollouts;
    // Scoring in progress, then its result (kept for the reuse steps).
    std::unique_ptr<RewardPipeline::Session> scoring;
    std::optional<absl::StatusOr<RewardTable>> rewards;
    bool has_rewards() const { return scoring != nullptr || rewards.has_value(); }
    absl::StatusOr<const RewardTable*> WaitRewards() {
      if (!rewards) {
        rewards = scoring->Finish(rollouts);
        scoring.reset();
      }
      if (!rewards->ok()) return rewards->status();
      return &rewards->value();
    }
  };
  std::vector<MicroRollouts> generation(static_cast<size_t>(accumulation));
  std::int64_t iteration = reuse;  // reuse: sample on the first step
  for (std::int64_t step = start_step + 1; step <= max_steps; ++step) {
    std::map<std::string, double> step_metrics;
    MetricWindow micro_metrics;
    double loss_sum = 0.0;
    bool trained = false;
    const bool fresh = iteration >= reuse;
    iteration = fresh ? 0 : iteration;
    // A generation's completions are written if a logging step falls in its steps.
    bool log_completions = false;
    for (std::int64_t k = step; needs.rollouts && fresh && k < step + reuse && k <= max_steps; ++k) {
      log_completions |= k % std::max<std::int64_t>(1, options.logging_steps) == 0 || k == max_steps;
    }
    for (std::int64_t micro = 0; micro < accumulation; ++micro) {
      MicroRollouts& m = generation[static_cast<size_t>(micro)];
      if (fresh) {
        m = MicroRollouts();
        for (std::int64_t i : order.Next(batch_size)) {
          m.batch.push_back(&examples[static_cast<size_t>(i)]);
          m.tokens.push_back(&train_tokens[static_cast<size_t>(i)]);
        }
      }
      StepInput input;
      input.step = step;
      input.iteration = iteration;
      input.micro_batch = micro;
      input.batch = m.batch;
      input.tokens = m.tokens;
      if (needs.rollouts && fresh) {
        SampleRequest request;
        request.prompts = m.batch;
        request.num_generations = needs.num_generations;
        request.seed = static_cast<std::uint64_t>(recipe.seed()) * 1000003u + static_cast<std::uint64_t>(step * accumulation + micro);
        request.policy = sampling_policy;
        request.logprobs = needs.sampler_logprobs;
        // Rewards score each completion as the sampler finishes it (oneTBB workers),
        // overlapping with the rest of generation and with the trainer's step,
        // which waits for them only when it needs the scores.
        if (!rewards.empty()) {
          m.scoring = std::make_unique<RewardPipeline::Session>(
              rewards.Start(m.batch, m.batch.size() * static_cast<size_t>(needs.num_generations)));
          request.on_rollout = [&m](std::size_t i, const Rollout& r) { m.scoring->Submit(i, r); };
        }
        POSTTRAIN_ASSIGN_OR_RETURN(m.rollouts, CallNoThrow("sampler", [&] { return sampler->Sample(request); }));
      }
      input.rollouts = m.rollouts;
      if (m.has_rewards()) input.rewards = StepRewards([&m] { return m.WaitRewards(); });
      StepOutput output;
      {
        Autocast autocast(options.bf16);
        POSTTRAIN_ASSIGN_OR_RETURN(output, CallNoThrow(absl::StrCat("trainer '", trainer_config.type(), "'"),
                                                       [&] { return trainer->Step(input); }));
        if (output.loss.defined()) {
          if (!std::isfinite(output.loss.item<double>())) {
            return absl::InternalError(absl::StrCat("trainer '", trainer_config.type(), "' produced a non-finite loss at step ", step));
          }
          loss_sum += output.loss.item<double>();
          if (output.loss.requires_grad()) {
            (output.loss / static_cast<double>(accumulation)).backward();
            trained = true;
          }
        }
      }
      // A failing reward fails the step even if the trainer never waited for it.
      const RewardTable* table = nullptr;
      if (m.has_rewards()) {
        POSTTRAIN_ASSIGN_OR_RETURN(table, m.WaitRewards());
      }
      micro_metrics.Add(output.metrics);
      // Completions with their rewards, on the logging cadence.
      if (log_completions) {
        for (size_t i = 0; i < m.rollouts.size(); ++i) {
          nlohmann::json row = {{"step", step},
                                {"prompt", m.batch[static_cast<size_t>(m.rollouts[i].prompt_index)]->prompt},
                                {"completion", m.rollouts[i].completion},
                                {"finish_reason", FinishReasonName(m.rollouts[i].finish_reason)}};
          if (table != nullptr) {
            row["reward"] = table->total[i];
            for (const auto& [name, scores] : table->per_function) {
              row["rewards"][name] = std::isnan(scores[i]) ? nlohmann::json() : nlohmann::json(scores[i]);
            }
          }
          POSTTRAIN_RETURN_IF_ERROR(completions_out.Write(row));
        }
      }
    }
    ++iteration;
    step_metrics = micro_metrics.Means();
    if (trained) {
      // Data-parallel reduction point (world size 1 this round).
      std::vector<at::Tensor> grads;
      for (auto& [name, p] : trainable) grads.push_back(p.grad());
      POSTTRAIN_RETURN_IF_ERROR(process_group->AllReduceMean(grads));
      step_metrics["loss"] = loss_sum / static_cast<double>(accumulation);
      step_metrics["grad_norm"] = optimizer.ClipGradNorm(options.max_grad_norm);
      const double lr = ScheduledLearningRate(options.lr_scheduler_type, options.learning_rate, step, max_steps, warmup);
      step_metrics["learning_rate"] = lr;
      optimizer.Step(lr);
      optimizer.ZeroGrad();
    }
    window.Add(step_metrics);
    whole_run.Add(step_metrics);
    if (const MicroRollouts& last = generation.back(); step == max_steps && !last.rollouts.empty()) {
      const size_t shown = std::min<size_t>(4, last.rollouts.size());
      for (size_t k = 0; k < shown; ++k) {
        const Rollout& r = last.rollouts[k * last.rollouts.size() / shown];
        result.sample_completions.push_back({last.batch[static_cast<size_t>(r.prompt_index)]->prompt, r.completion});
      }
    }

    if (step % std::max<std::int64_t>(1, options.logging_steps) == 0 || step == max_steps) {
      nlohmann::json line = {{"step", step}, {"epoch", order.epoch()}};
      for (const auto& [name, value] : window.Means()) line[name] = value;
      POSTTRAIN_RETURN_IF_ERROR(metrics_out.Write(line));
      progress.Update(step, Summary(window.Means()));
      window.Clear();
    }
    if ((options.eval_steps > 0 && step % options.eval_steps == 0) || step == max_steps) {
      POSTTRAIN_RETURN_IF_ERROR(evaluate(step));
    }
    if (options.save_steps > 0 && step % options.save_steps == 0 && step < max_steps && policy != nullptr) {
      nlohmann::json state = {{"global_step", step}, {"max_steps", max_steps}, {"epoch", order.epoch()}, {"seed", recipe.seed()}};
      POSTTRAIN_RETURN_IF_ERROR(SaveCheckpoint(*policy, save, optimizer, trainer_params, state, run_dir.path(), step, options.save_total_limit));
      spdlog::info("saved {}/checkpoint-{}", run_dir.path(), step);
    }
  }
  progress.Finish();
  if (policy != nullptr && trainable.size() > 0 && needs.model) {
    POSTTRAIN_RETURN_IF_ERROR(SaveCausalLM(*policy, run_dir.File("final"), save));
    result.final_model_dir = run_dir.File("final");
    spdlog::info("saved the final model to {}", result.final_model_dir);
  }
  result.output_dir = run_dir.path();
  result.steps = max_steps;
  result.num_train_examples = n;
  result.mean_metrics = whole_run.Means();
  spdlog::info("done: {} steps; run means: {}", max_steps, Summary(result.mean_metrics));
  return result;
}

}  // namespace posttrain

// The engine, in the order a run meets its parts:
//   BuildRun               the recipe's components, built and checked (also `posttrain validate`)
//   RunRecipe              the ranks (process group from the environment) and the run directory
//   Run::Setup             device placement, what trains, rank 0's weights everywhere,
//                          a checkpoint's weights (ResumeWeights), FSDP sharding (ShardModels)
//   Run::Resume            optimizer, trainer state, data order, unfinished generation
//   Run::Train             the step loop, one line per part:
//     NextGeneration       this rank's share of the global batch, sampled and scored
//     TrainMicroBatches    the trainer's steps and backward
//     OptimizerStep        gradients averaged over ranks, clipped; AdamW; the schedule
//     Log / Evaluate / Checkpoint / SaveFinal
#include "posttrain/run/engine.h"

#include <algorithm>
#include <c10/core/GradMode.h>
#include <cmath>
#include <filesystem>
#include <numeric>
#include <optional>
#include <random>

#include <torch/csrc/jit/serialization/pickle.h>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "posttrain/chat/chat_template.h"
#include "posttrain/chat/conversation.h"
#include "posttrain/core/autocast.h"
#include "posttrain/core/device.h"
#include "posttrain/core/threads.h"
#include "posttrain/distributed/collectives.h"
#include "posttrain/distributed/fsdp.h"
#include "posttrain/distributed/process_group.h"
#include "posttrain/generation/generate.h"
#include "posttrain/model/hf_model.h"
#include "posttrain/model/safetensors.h"
#include "posttrain/model/sequence_classifier.h"
#include "posttrain/run/adapters.h"
#include "posttrain/run/engine_options.h"
#include "posttrain/run/progress.h"
#include "posttrain/run/reward_pipeline.h"
#include "posttrain/run/run_directory.h"
#include "posttrain/run/tensorboard.h"
#include "posttrain/core/text_file.h"
#include "posttrain/tokenizer/tokenizer.h"
#include "posttrain/train/adamw.h"
#include "posttrain/train/checkpoint.h"
#include "posttrain/train/tokenize.h"
#include "spdlog/sinks/basic_file_sink.h"
#include "tbb/parallel_for.h"
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

// Means of metrics over a window of steps (weighted by `weight`); its sums go
// into checkpoints, so a resumed run logs the same window means.
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
  // Adds another window's sums (another rank's share of an evaluation).
  void Merge(const nlohmann::json& j) {
    for (const auto& [name, pair] : j.items()) {
      auto& [sum, total] = sums_[name];
      sum += pair.at(0).get<double>();
      total += pair.at(1).get<double>();
    }
  }
  nlohmann::json ToJson() const {
    nlohmann::json out = nlohmann::json::object();
    for (const auto& [name, st] : sums_) out[name] = {st.first, st.second};
    return out;
  }
  void FromJson(const nlohmann::json& j) {
    sums_.clear();
    if (!j.is_object()) return;
    for (const auto& [name, pair] : j.items()) sums_[name] = {pair.at(0).get<double>(), pair.at(1).get<double>()};
  }

 private:
  std::map<std::string, std::pair<double, double>> sums_;
};

// The progress line's metrics: the loss and the trainer's headline ones present.
std::string Headline(const std::map<std::string, double>& metrics) {
  std::vector<std::string> parts;
  for (const char* name : {"loss", "rewards/accuracies", "reward", "kl", "objective/kl", "mean_token_accuracy", "accuracy",
                           "jsd", "rewards/margins"}) {
    auto it = metrics.find(name);
    if (it != metrics.end()) parts.push_back(absl::StrFormat("%s=%.4g", name, it->second));
  }
  return absl::StrJoin(parts, " ");
}

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
  // The epoch the last batch came from (0 before the first).
  std::int64_t current_epoch() const { return std::max<std::int64_t>(epoch_, 0); }
  double epoch() const {
    return epoch_ < 0 ? 0.0 : static_cast<double>(epoch_) + static_cast<double>(cursor_) / static_cast<double>(n_);
  }
  // Where the order stands, for checkpoints: {epoch, cursor}.
  nlohmann::json State() const { return {epoch_, cursor_}; }
  void Seek(const nlohmann::json& state) {
    const auto epoch = state.at(0).get<std::int64_t>(), cursor = state.at(1).get<std::int64_t>();
    epoch_ = epoch >= 0 ? epoch - 1 : -1;
    cursor_ = n_;
    if (epoch >= 0) {
      Next(1);  // enters `epoch`, shuffled as it was
      cursor_ = std::min(cursor, n_);
    }
  }

 private:
  std::int64_t n_;
  std::uint64_t seed_;
  bool shuffle_;
  std::vector<std::int64_t> order_;
  std::int64_t epoch_ = -1;
  std::int64_t cursor_ = n_;  // n_: start a new epoch on the first call
};

// This rank's share of a global micro-batch: contiguous, sizes as even as the
// count allows (the first count % world ranks take one more), so ranks 0..W−1
// together hold the batch one rank would have had, in its order.
std::vector<std::int64_t> Shard(const std::vector<std::int64_t>& global, int rank, int world) {
  const auto n = static_cast<std::int64_t>(global.size());
  const std::int64_t base = n / world, extra = n % world;
  const std::int64_t begin = rank * base + std::min<std::int64_t>(rank, extra);
  const std::int64_t size = base + (rank < extra ? 1 : 0);
  return std::vector<std::int64_t>(global.begin() + begin, global.begin() + begin + size);
}

// Per-metric means over the ranks that report it (each rank's value weighted
// equally: every rank holds an equal share of the batch).
absl::StatusOr<std::map<std::string, double>> MeanOverRanks(ProcessGroup& group, const std::map<std::string, double>& metrics) {
  if (group.world_size() == 1) return metrics;
  nlohmann::json mine = metrics;
  POSTTRAIN_ASSIGN_OR_RETURN(std::vector<std::string> all, group.AllGatherStrings(mine.dump()));
  std::map<std::string, std::pair<double, double>> sums;
  for (const std::string& text : all) {
    const nlohmann::json parsed = nlohmann::json::parse(text);
    for (const auto& [name, value] : parsed.items()) {
      auto& [sum, count] = sums[name];
      sum += value.is_null() ? std::nan("") : value.get<double>();
      count += 1;
    }
  }
  std::map<std::string, double> out;
  for (const auto& [name, sc] : sums) out[name] = sc.first / sc.second;
  return out;
}

// bf16 autocast for a scope on the run's device (fp32 master weights stay fp32).
class Autocast {
 public:
  Autocast(bool enabled, at::Device device) : enabled_(enabled), device_type_(device.type()) {
    if (enabled_) SetAutocast(device_type_, true, at::kBFloat16);
  }
  ~Autocast() {
    if (!enabled_) return;
    SetAutocast(device_type_, false);
    at::autocast::clear_cache();
  }

 private:
  bool enabled_;
  at::DeviceType device_type_;
};

// ---- Building a run ----------------------------------------------------------

// Everything a run is made of, built from the recipe and checked before any step.
struct RunParts {
  std::string trainer_type;
  EngineOptions options;
  TrainerNeeds needs;
  std::unique_ptr<Trainer> trainer;
  std::vector<Example> examples, eval_examples;
  std::unique_ptr<CausalLM> policy, reference;
  // An adapter on the policy ([peft], or [model] adapter): only it trains, and the
  // reference is the policy's base without it (a view: reference_is_view).
  std::unique_ptr<Adapter> adapter;
  bool reference_is_view = false;
  std::unique_ptr<Tokenizer> tokenizer;
  std::optional<ChatTemplate> chat_template;      // when the data is conversational
  std::vector<std::int64_t> end_of_turn_ids;      // the template's end-of-turn token
  std::string model_path;
  // model_path's classification head when it holds a reward model or PRM
  // (TrainerContext::classifier_head), and its token classifier's dropout.
  std::optional<ClassifierHead> classifier_head;
  double classifier_dropout = 0.1;
  std::unique_ptr<Sampler> sampler;
  std::unique_ptr<RewardPipeline> rewards;
  std::vector<TokenizedExample> train_tokens, eval_tokens;
};

// Renders conversational examples (chat/conversation.h) with the model's chat
// template, or the recipe's chat_template_path; the first error stops the run.
absl::Status RenderConversations(RunParts& parts, const ComponentConfig* model_config, std::vector<Example>& examples) {
  const bool any = std::any_of(examples.begin(), examples.end(), [](const Example& e) { return e.conversational(); }) ||
                   std::any_of(parts.eval_examples.begin(), parts.eval_examples.end(),
                               [](const Example& e) { return e.conversational(); });
  if (parts.needs.assistant_only_loss) {
    for (const Example& e : examples) {
      if (!e.conversational() || e.format != ExampleFormat::kLanguageModeling) {
        return absl::InvalidArgumentError(absl::StrCat(
            ExampleLocation(e), ": assistant_only_loss needs conversational language-modeling data (a \"messages\" list "
            "per record), as in TRL"));
      }
    }
  }
  if (!any) return absl::OkStatus();
  if (parts.tokenizer == nullptr || model_config == nullptr) {
    return absl::InvalidArgumentError("conversational data needs a [model] whose tokenizer (or chat_template_path) gives a chat template");
  }
  const std::string tokenizer_path =
      model_config->GetString("tokenizer").empty() ? parts.model_path : model_config->GetString("tokenizer");
  absl::StatusOr<ChatTemplate> chat = ChatTemplate::Load(tokenizer_path, parts.options.chat_template_path);
  if (!chat.ok()) return Annotate(chat.status(), "conversational data");
  parts.chat_template = std::move(*chat);
  parts.end_of_turn_ids = EndOfTurnTokenIds(*parts.chat_template, *parts.tokenizer);
  ConversationOptions options;
  options.assistant_spans = parts.needs.assistant_only_loss;
  for (std::vector<Example>* set : {&examples, &parts.eval_examples}) {
    std::vector<absl::Status> status(set->size());
    tbb::parallel_for(std::size_t{0}, set->size(), [&](std::size_t i) {
      status[i] = RenderConversation(*parts.chat_template, (*set)[i], options);
    });
    for (const absl::Status& s : status) POSTTRAIN_RETURN_IF_ERROR(s);
  }
  spdlog::info("chat template {}: conversations rendered{}", parts.chat_template->origin(),
               parts.end_of_turn_ids.empty() ? std::string()
                                             : absl::StrCat("; generation also stops at token ", parts.end_of_turn_ids[0]));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Example>> LoadExamples(const ComponentConfig& config, const Registry& registry,
                                                  std::int64_t* skipped) {
  POSTTRAIN_ASSIGN_OR_RETURN(std::unique_ptr<DataAdapter> adapter, registry.Create<DataAdapter>(config));
  absl::StatusOr<std::vector<Example>> loaded = CallNoThrow("data adapter", [&] { return adapter->Load(); });
  if (!loaded.ok()) return Annotate(loaded.status(), config.where());
  if (const std::int64_t n = adapter->num_skipped(); n > 0) {
    const std::vector<std::string> rows = adapter->skipped_rows();
    for (const std::string& row : rows) spdlog::warn("skipped a bad row: {}", row);
    if (n > static_cast<std::int64_t>(rows.size())) spdlog::warn("... and {} more bad rows skipped", n - rows.size());
  }
  if (skipped != nullptr) *skipped = adapter->num_skipped();
  return loaded;
}

// Why the engine's own options may go unread (see EngineOptions::FromConfig).
std::string UnreadReason(const std::string& key, const std::string& trainer) {
  if (key == "ref_model") return absl::StrCat("trainer '", trainer, "' uses no reference model");
  if (key == "max_length") {
    return absl::StrCat("trainer '", trainer,
                        "' samples its completions: prompts are cut by max_prompt_length, completions by the "
                        "sampler's max_completion_length");
  }
  if (key == "reward_workers") return absl::StrCat("trainer '", trainer, "' scores no rewards");
  return "no component reads it in this recipe";
}

absl::StatusOr<RunParts> BuildRun(const Recipe& recipe, const Registry& registry) {
  POSTTRAIN_RETURN_IF_ERROR(recipe.Validate(registry));
  RunParts parts;
  POSTTRAIN_ASSIGN_OR_RETURN(ComponentConfig trainer_config, recipe.Component("trainer", registry));
  parts.trainer_type = trainer_config.type();
  POSTTRAIN_ASSIGN_OR_RETURN(parts.trainer, registry.Create<Trainer>(trainer_config));
  parts.needs = parts.trainer->Needs();
  if (!parts.needs.rollout_sources.empty()) {
    bool uses_reference = false;
    for (const RolloutSource& r : parts.needs.rollout_sources) uses_reference |= r.model != RolloutSource::Model::kPolicy;
    if (static_cast<std::int64_t>(parts.needs.rollout_sources.size()) != parts.needs.num_generations ||
        (uses_reference && !parts.needs.reference)) {
      return absl::InternalError(absl::StrCat("trainer '", parts.trainer_type, "' declares ", parts.needs.rollout_sources.size(),
                                              " rollout sources for num_generations = ", parts.needs.num_generations,
                                              uses_reference && !parts.needs.reference ? " and samples from a reference it does not ask for" : ""));
    }
  }
  POSTTRAIN_ASSIGN_OR_RETURN(parts.options, EngineOptions::FromConfig(trainer_config, parts.needs));
  const EngineOptions& options = parts.options;
  std::vector<const ComponentConfig*> configs = {&trainer_config};

  // Data, with the evaluation examples held out or loaded.
  POSTTRAIN_ASSIGN_OR_RETURN(ComponentConfig data_config, recipe.Component("data", registry));
  configs.push_back(&data_config);
  std::int64_t skipped = 0;
  POSTTRAIN_ASSIGN_OR_RETURN(parts.examples, LoadExamples(data_config, registry, &skipped));
  std::vector<Example>& examples = parts.examples;
  if (const double eval_size = recipe.eval_size(); eval_size > 0) {
    const auto held = static_cast<std::int64_t>(eval_size < 1 ? std::round(eval_size * examples.size()) : eval_size);
    if (held >= static_cast<std::int64_t>(examples.size())) {
      return absl::InvalidArgumentError(absl::StrCat(data_config.where(), ": eval_size ", eval_size, " leaves no training examples of ", examples.size()));
    }
    parts.eval_examples.assign(std::make_move_iterator(examples.end() - held), std::make_move_iterator(examples.end()));
    examples.erase(examples.end() - held, examples.end());
  }
  std::optional<ComponentConfig> eval_config;
  if (recipe.HasComponent("eval_data")) {
    POSTTRAIN_ASSIGN_OR_RETURN(eval_config, recipe.Component("eval_data", registry));
    configs.push_back(&*eval_config);
    POSTTRAIN_ASSIGN_OR_RETURN(parts.eval_examples, LoadExamples(*eval_config, registry, nullptr));
  }
  if (examples.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(data_config.where(), ": the data source holds no examples"));
  }
  spdlog::info("{} training examples, {} eval examples{}", examples.size(), parts.eval_examples.size(),
               skipped > 0 ? absl::StrCat(" (", skipped, " bad rows skipped)") : std::string());

  // The policy (and reference), if the recipe names one.
  POSTTRAIN_ASSIGN_OR_RETURN(std::optional<ComponentConfig> model_config, recipe.Model());
  if (parts.needs.model && !model_config) {
    return absl::InvalidArgumentError(absl::StrCat(recipe.source_name(), ": trainer '", parts.trainer_type,
                                                   "' trains a model: add a [model] table with its path"));
  }
  if (model_config) {
    parts.model_path = model_config->GetString("path");
    absl::StatusOr<at::ScalarType> parsed_dtype = ParseDtype(model_config->GetString("dtype"));
    if (!parsed_dtype.ok()) return Annotate(parsed_dtype.status(), model_config->where());
    const at::ScalarType dtype = *parsed_dtype;
    ConfigureThreads(options.bf16 ? at::kBFloat16 : dtype);
    if (options.bf16 && !DetectCpu().native_bf16()) {
      spdlog::warn("bf16 = true, but this CPU has no native bf16 matmul ({}): bf16 autocast is emulated and "
                   "much slower than fp32 here",
                   DetectCpu().Describe());
    }
    bool keeps_freed_pages = false;
    const std::string allocator = DescribeAllocator(&keeps_freed_pages);
    if (keeps_freed_pages) {
      spdlog::debug("allocator: {}", allocator);
    } else {
      spdlog::warn("allocator: {}; training steps will page-fault their tensors anew", allocator);
    }
    POSTTRAIN_ASSIGN_OR_RETURN(LoadedModel loaded, LoadModelAndHead(parts.model_path, dtype));
    parts.policy = std::move(loaded.model);
    parts.classifier_head = std::move(loaded.head);
    parts.classifier_dropout = TokenClassifierDropout(parts.model_path);
    const std::string tokenizer_path =
        model_config->GetString("tokenizer").empty() ? parts.model_path : model_config->GetString("tokenizer");
    POSTTRAIN_ASSIGN_OR_RETURN(parts.tokenizer, LoadTokenizer(tokenizer_path));
    POSTTRAIN_RETURN_IF_ERROR(Annotate(CheckTokenizerFitsModel(*parts.policy, *parts.tokenizer),
                                       absl::StrCat(parts.model_path, " with tokenizer ", tokenizer_path)));
    spdlog::info("model {}: {} layers, hidden {}, vocab {}, {}{}", parts.model_path, parts.policy->config().num_hidden_layers,
                 parts.policy->config().hidden_size, parts.policy->config().vocab_size, DtypeName(dtype),
                 options.bf16 ? " (bf16 autocast)" : "");
    // The policy trains with its config's dropout unless disable_dropout (transformers'
    // train mode); a reference (a copy, a view or another model) never drops.
    const ModelConfig& mc = parts.policy->config();
    if (mc.learned_positions && options.max_length > mc.max_position_embeddings) {
      // Learned positions end there (GPT-2): a longer sequence has no embedding.
      return absl::InvalidArgumentError(absl::StrCat(trainer_config.where(), ": max_length = ", options.max_length,
                                                     " exceeds the ", mc.max_position_embeddings, " positions of '", parts.model_path,
                                                     "' (its n_positions): set max_length <= ", mc.max_position_embeddings));
    }
    parts.policy->set_dropout(!options.disable_dropout);
    if (!options.disable_dropout && (mc.attention_dropout > 0 || mc.residual_dropout > 0 || mc.embedding_dropout > 0)) {
      spdlog::info("dropout in training: attention {}, residual {}, embeddings {} (disable_dropout = true trains without)",
                   mc.attention_dropout, mc.residual_dropout, mc.embedding_dropout);
    }
    // An adapter: a new one ([peft], TRL's peft_config) or a saved one ([model] adapter).
    const std::string adapter_dir = model_config->GetString("adapter");
    if (recipe.HasComponent("peft") && !adapter_dir.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(recipe.source_name(), ": [model] adapter = '", adapter_dir,
                                                     "' loads a saved adapter and [peft] makes a new one: keep one"));
    }
    if (recipe.HasComponent("peft")) {
      POSTTRAIN_ASSIGN_OR_RETURN(ComponentConfig peft_config, recipe.Component("peft", registry));
      POSTTRAIN_ASSIGN_OR_RETURN(parts.adapter, registry.Create<Adapter>(peft_config));
      POSTTRAIN_RETURN_IF_ERROR(Annotate(
          parts.adapter->Attach(parts.policy->config(), parts.policy->options().dtype(at::kFloat), static_cast<std::uint64_t>(recipe.seed())),
          peft_config.where()));
      POSTTRAIN_RETURN_IF_ERROR(Annotate(parts.adapter->Initialize(*parts.policy), peft_config.where()));
    } else if (!adapter_dir.empty()) {
      POSTTRAIN_ASSIGN_OR_RETURN(parts.adapter, LoadSavedAdapter(registry, adapter_dir, *parts.policy));
    }
    if (parts.adapter != nullptr) {
      if (!options.fsdp.empty() && options.fsdp != "no_shard" && !parts.adapter->ModulesToSave().empty()) {
        return absl::UnimplementedError(absl::StrCat(trainer_config.where(), ": fsdp = \"", options.fsdp,
                                                     "\" with an adapter's modules_to_save is not supported yet (they would "
                                                     "train whole, inside the sharded base): leave modules_to_save out or fsdp off"));
      }
      parts.policy->set_adapter(parts.adapter.get());
      std::int64_t n = 0;
      for (const auto& [name, t] : parts.adapter->NamedParameters()) n += t.numel();
      spdlog::info("adapter: {} trainable parameters ({:.3f}% of the model's {})", n,
                   100.0 * static_cast<double>(n) / static_cast<double>(parts.policy->NumParameters()),
                   parts.policy->NumParameters());
    }
    if (parts.needs.reference) {
      if (options.ref_model.empty() && parts.adapter != nullptr) {
        // PEFT's disable_adapter(): the base weights, shared, without the adapter.
        parts.reference = parts.policy->BaseView();
        parts.reference_is_view = true;
      } else if (options.ref_model.empty()) {
        parts.reference = parts.policy->Clone();
      } else {
        POSTTRAIN_ASSIGN_OR_RETURN(parts.reference, LoadCausalLM(options.ref_model, dtype));
        const std::int64_t policy_vocab = parts.policy->config().vocab_size, ref_vocab = parts.reference->config().vocab_size;
        if (ref_vocab != policy_vocab) {
          return absl::InvalidArgumentError(absl::StrCat(
              trainer_config.where(), ": ref_model '", options.ref_model, "' has vocab_size ", ref_vocab, " but the policy '",
              parts.model_path, "' has ", policy_vocab, ": their log-probs are over different tokens"));
        }
      }
    }
  }

  std::optional<ComponentConfig> sampler_config;
  if (recipe.HasComponent("sampler")) {
    POSTTRAIN_ASSIGN_OR_RETURN(sampler_config, recipe.Component("sampler", registry));
    configs.push_back(&*sampler_config);
    POSTTRAIN_ASSIGN_OR_RETURN(parts.sampler, registry.Create<Sampler>(*sampler_config));
    // A trainer that recomputes the sampler's log-probs must use its settings, or
    // the importance ratio is off from the first step.
    for (const char* key : {"temperature", "max_completion_length"}) {
      if (!parts.needs.rollouts || sampler_config->schema().Find(key) == nullptr ||
          trainer_config.schema().Find(key) == nullptr) {
        continue;
      }
      const double trainer_value = trainer_config.GetFloat(key), sampler_value = sampler_config->GetFloat(key);
      if (trainer_value != sampler_value) {
        return absl::InvalidArgumentError(absl::StrCat(
            recipe.source_name(), ": trainer.", key, " = ", trainer_value, trainer_config.Has(key) ? "" : " (default)",
            " but sampler.", key, " = ", sampler_value, sampler_config->Has(key) ? "" : " (default)",
            ": the trainer recomputes the sampler's log-probs and must use the same value; set both"));
      }
    }
  }
  if (parts.needs.rollouts && parts.sampler == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        recipe.source_name(), ": trainer '", parts.trainer_type, "' samples completions: add a [sampler] table (known samplers: ",
        absl::StrJoin(registry.Names(ComponentKind::kSampler), ", "), ")"));
  }
  parts.rewards = std::make_unique<RewardPipeline>(/*chunk_size=*/8, static_cast<int>(options.reward_workers));
  POSTTRAIN_ASSIGN_OR_RETURN(std::vector<Recipe::RewardEntry> reward_entries, recipe.Rewards(registry));
  for (Recipe::RewardEntry& entry : reward_entries) {
    POSTTRAIN_ASSIGN_OR_RETURN(std::unique_ptr<RewardFunction> function, registry.Create<RewardFunction>(entry.config));
    parts.rewards->Add(entry.name, entry.weight, std::move(function), entry.skip_errors);
  }
  for (const Recipe::RewardEntry& entry : reward_entries) configs.push_back(&entry.config);
  if (parts.needs.rewards && parts.rewards->empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        recipe.source_name(), ": trainer '", parts.trainer_type, "' needs rewards: add at least one [[rewards]] table (known reward functions: ",
        absl::StrJoin(registry.Names(ComponentKind::kRewardFunction), ", "), ")"));
  }

  // An option the recipe sets that nothing reads would be silently ignored.
  std::vector<std::string> unread;
  for (const ComponentConfig* config : configs) {
    for (const std::string& key : config->UnreadKeys()) {
      unread.push_back(absl::StrCat(config->where(), ": ", key, ": set, but has no effect: ", UnreadReason(key, parts.trainer_type)));
    }
  }
  if (!unread.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(recipe.source_name(), ": ", unread.size(),
                                                   unread.size() == 1 ? " option" : " options",
                                                   " that nothing uses (remove them):\n  ", absl::StrJoin(unread, "\n  ")));
  }

  // Conversations become text through the model's chat template (oneTBB).
  POSTTRAIN_RETURN_IF_ERROR(RenderConversations(parts, model_config ? &*model_config : nullptr, examples));

  // Tokenization (oneTBB), ahead of every step.
  if (parts.tokenizer != nullptr) {
    TokenizeOptions tokenize{options.max_length, options.max_prompt_length, options.truncation_mode,
                             parts.needs.assistant_only_loss};
    parts.train_tokens = TokenizeExamples(examples, *parts.tokenizer, tokenize);
    parts.eval_tokens = TokenizeExamples(parts.eval_examples, *parts.tokenizer, tokenize);
    if (parts.needs.pack_to_length > 0) {
      // TRL's packing: the training set becomes rows of packed sequences (bfd);
      // each row keeps the Example of its first sequence.
      std::vector<std::int64_t> first;
      std::vector<TokenizedExample> rows = PackExamples(parts.train_tokens, parts.needs.pack_to_length, &first);
      std::vector<Example> row_examples;
      for (std::int64_t i : first) row_examples.push_back(examples[static_cast<size_t>(i)]);
      spdlog::info("packing: {} sequences into {} rows of at most {} tokens (bfd)", parts.train_tokens.size(), rows.size(),
                   parts.needs.pack_to_length);
      parts.train_tokens = std::move(rows);
      examples = std::move(row_examples);
    }
  } else {
    parts.train_tokens.resize(examples.size());
    parts.eval_tokens.resize(parts.eval_examples.size());
  }
  return parts;
}

// ---- Rollouts ----------------------------------------------------------------

// The rollouts of one micro-batch of a generation, reused for
// needs.steps_per_generation steps.
struct MicroRollouts {
  std::vector<std::int64_t> indices;  // examples of the micro-batch
  std::vector<const Example*> batch;
  std::vector<const TokenizedExample*> tokens;
  std::vector<const std::vector<std::int64_t>*> prompt_ids;
  std::vector<Rollout> rollouts;
  // Scoring in progress, then its result (kept for the reuse steps).
  std::unique_ptr<RewardPipeline::Session> scoring;
  std::optional<absl::StatusOr<RewardTable>> rewards;
  // Starts afresh on these examples of `source` (and their tokens).
  void Reset(const std::vector<std::int64_t>& example_indices, const std::vector<Example>& source,
             const std::vector<TokenizedExample>& source_tokens) {
    *this = MicroRollouts();
    for (std::int64_t i : example_indices) {
      indices.push_back(i);
      batch.push_back(&source[static_cast<size_t>(i)]);
      tokens.push_back(&source_tokens[static_cast<size_t>(i)]);
      prompt_ids.push_back(&source_tokens[static_cast<size_t>(i)].prompt_ids);
    }
  }
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

nlohmann::json FloatsToJson(const std::vector<float>& values) {
  nlohmann::json out = nlohmann::json::array();
  for (float v : values) out.push_back(std::isnan(v) ? nlohmann::json() : nlohmann::json(v));
  return out;
}

std::vector<float> FloatsFromJson(const nlohmann::json& j) {
  std::vector<float> out;
  for (const auto& v : j) out.push_back(v.is_null() ? std::nanf("") : v.get<float>());
  return out;
}

FinishReason FinishReasonFromName(const std::string& name) {
  if (name == "length") return FinishReason::kLength;
  if (name == "source") return FinishReason::kSource;
  return FinishReason::kStop;
}

// A generation still being reused, for a checkpoint: per micro-batch the example
// indices, the rollouts and their reward table.
nlohmann::json GenerationToJson(std::vector<MicroRollouts>& generation) {
  nlohmann::json out = nlohmann::json::array();
  for (MicroRollouts& m : generation) {
    nlohmann::json micro = {{"indices", m.indices}, {"rollouts", nlohmann::json::array()}};
    for (const Rollout& r : m.rollouts) {
      micro["rollouts"].push_back({{"prompt_index", r.prompt_index},
                                   {"completion", r.completion},
                                   {"token_ids", r.token_ids},
                                   {"logprobs", FloatsToJson(r.logprobs)},
                                   {"prompt_ids", r.prompt_ids},
                                   {"finish_reason", FinishReasonName(r.finish_reason)}});
    }
    if (m.has_rewards()) {
      absl::StatusOr<const RewardTable*> table = m.WaitRewards();
      if (table.ok()) {
        nlohmann::json t = {{"total", FloatsToJson((*table)->total)}};
        for (const auto& [name, scores] : (*table)->per_function) t["per_function"][name] = FloatsToJson(scores);
        for (const auto& [name, count] : (*table)->skipped) t["skipped"][name] = count;
        micro["rewards"] = t;
      }
    }
    out.push_back(micro);
  }
  return out;
}

absl::Status GenerationFromJson(const nlohmann::json& j, std::vector<Example>& examples,
                                std::vector<TokenizedExample>& tokens, std::vector<MicroRollouts>* generation) {
  try {
    if (!j.is_array() || j.size() != generation->size()) {
      return absl::DataLossError("generation.json does not hold one entry per micro-batch");
    }
    for (size_t k = 0; k < generation->size(); ++k) {
      const nlohmann::json& micro = j[k];
      MicroRollouts& m = (*generation)[k];
      const std::vector<std::int64_t> indices = micro.at("indices").get<std::vector<std::int64_t>>();
      for (std::int64_t i : indices) {
        if (i < 0 || i >= static_cast<std::int64_t>(examples.size())) return absl::DataLossError("generation.json: example index out of range");
      }
      m.Reset(indices, examples, tokens);
      for (const nlohmann::json& r : micro.at("rollouts")) {
        Rollout rollout;
        rollout.prompt_index = r.at("prompt_index").get<std::int64_t>();
        rollout.completion = r.at("completion").get<std::string>();
        rollout.token_ids = r.at("token_ids").get<std::vector<std::int64_t>>();
        rollout.logprobs = FloatsFromJson(r.at("logprobs"));
        rollout.prompt_ids = r.at("prompt_ids").get<std::vector<std::int64_t>>();
        rollout.finish_reason = FinishReasonFromName(r.at("finish_reason").get<std::string>());
        m.rollouts.push_back(std::move(rollout));
      }
      if (micro.contains("rewards")) {
        const nlohmann::json& t = micro["rewards"];
        RewardTable table;
        table.total = FloatsFromJson(t.at("total"));
        if (t.contains("per_function")) {
          for (const auto& [name, scores] : t["per_function"].items()) table.per_function[name] = FloatsFromJson(scores);
        }
        if (t.contains("skipped")) {
          for (const auto& [name, count] : t["skipped"].items()) table.skipped[name] = count.get<std::int64_t>();
        }
        m.rewards = std::move(table);
      }
    }
  } catch (const nlohmann::json::exception& e) {
    return absl::DataLossError(absl::StrCat("generation.json is malformed: ", e.what()));
  }
  return absl::OkStatus();
}

// ---- The run -----------------------------------------------------------------

class Run {
 public:
  Run(const Recipe& recipe, RunParts parts, RunDirectory run_dir, std::unique_ptr<ProcessGroup> group)
      : recipe_(recipe), p_(std::move(parts)), o_(p_.options), run_dir_(std::move(run_dir)),
        order_(static_cast<std::int64_t>(p_.examples.size()), static_cast<std::uint64_t>(recipe.seed()), o_.shuffle),
        group_(std::move(group)), collectives_(group_.get()) {}

  absl::StatusOr<RunResult> Train();

 private:
  // Models and their placement, the optimizer, the schedule; equal weights on every
  // rank (a checkpoint's, when resuming), sharded with fsdp.
  absl::Status Setup();
  absl::Status ResumeWeights();
  absl::Status ShardModels();
  // The rest of a checkpoint: optimizer, trainer state, data order, logs.
  absl::Status Resume();
  // Sharded models whole for a while (generation, evaluation, saving).
  absl::Status GatherModels();
  absl::Status ReleaseModels();
  void LogMemory();
  // Data order and sharding: this rank's share of the step's generation (sampled
  // and scored for online trainers), or the reuse of the last one.
  absl::Status NextGeneration(std::int64_t step, bool fresh);
  // The trainer's steps on the micro-batches, backward; the step's metrics.
  absl::StatusOr<std::map<std::string, double>> TrainMicroBatches(std::int64_t step, bool log_completions, bool* trained);
  // Gradients averaged over ranks, clipped; the optimizer and the schedule.
  absl::Status OptimizerStep(std::int64_t step, std::map<std::string, double>* metrics);
  absl::Status Log(std::int64_t step, const std::map<std::string, double>& step_metrics);
  absl::Status Sample(MicroRollouts& m, std::uint64_t seed, const std::vector<Example>& source,
                      const std::vector<TokenizedExample>& tokens, const std::vector<std::int64_t>& indices);
  absl::Status WriteCompletions(std::int64_t step, MicroRollouts& m, const RewardTable* table);
  absl::Status Evaluate(std::int64_t step);
  absl::Status EvaluateRollouts(std::int64_t step, MetricWindow* window);
  absl::Status Checkpoint(std::int64_t step);
  // Every rank learns whether each succeeded (so that all stop together): this
  // rank's error, or DataLoss naming `what` when another rank failed.
  absl::Status AllOk(const absl::Status& mine, const std::string& what);
  // A sharded checkpoint's shards (any number of ranks wrote them) into this run's.
  absl::Status ResumeShardedWeights();
  absl::Status SaveFinal();
  std::uint64_t Seed() const { return static_cast<std::uint64_t>(recipe_.seed()); }
  // Rank 0 writes the run's files; every rank computes.
  bool Writes() const { return group_->rank() == 0; }
  int rank() const { return group_->rank(); }
  int world() const { return group_->world_size(); }

  const Recipe& recipe_;
  RunParts p_;
  const EngineOptions& o_;
  RunDirectory run_dir_;
  DataOrder order_;
  std::unique_ptr<ProcessGroup> group_;
  at::Device device_ = at::Device(at::kCPU);  // the run's (Setup)
  Collectives collectives_;
  std::unique_ptr<ShardedModel> policy_shards_, reference_shards_;  // fsdp only
  // The policy's weights train as shards (fsdp without an adapter; with one, the
  // base's shards are frozen and the adapter is replicated: saved as without fsdp).
  bool ShardedTraining() const { return policy_shards_ != nullptr && p_.adapter == nullptr; }
  std::optional<LoadedCheckpoint> resumed_;
  std::string resumed_path_;
  std::int64_t grad_bytes_ = 0;
  // >= 0: the policy records its routers' load and each training step's loss gets
  // this times the load-balancing loss (TrainerNeeds::router_aux_loss).
  double router_aux_coef_ = -1.0;
  // Around a trainer step: drop what the policy recorded before it, then add
  // router_aux_loss_coef · aux_loss of the step's forwards to its loss (TRL's) and
  // log aux_loss. No-ops unless router_aux_coef_ >= 0.
  void ClearRouterAuxLoss() {
    if (router_aux_coef_ >= 0) p_.policy->TakeRouterAuxLoss();
  }
  void AddRouterAuxLoss(StepOutput* out) {
    if (router_aux_coef_ < 0) return;
    const at::Tensor aux = p_.policy->TakeRouterAuxLoss();
    if (!aux.defined() || !out->loss.defined()) return;
    out->loss = out->loss + router_aux_coef_ * aux;
    out->metrics["aux_loss"] = aux.item<double>();
  }
  std::vector<std::pair<std::string, at::Tensor>> trainable_, extras_, trainer_params_;
  std::unique_ptr<AdamW> optimizer_;
  SaveOptions save_;
  std::int64_t batch_size_ = 1, accumulation_ = 1, max_steps_ = 1, warmup_ = 0;
  std::int64_t reuse_ = 1;       // optimisation steps per generated batch
  std::int64_t start_step_ = 0;  // from a checkpoint
  std::int64_t iteration_ = 0;   // reuse of the current generation (reuse_: sample next)
  std::vector<MicroRollouts> generation_;
  MetricWindow window_, whole_run_;
  JsonlWriter metrics_out_, completions_out_;
  std::unique_ptr<TensorBoardWriter> tensorboard_;  // report_to = ["tensorboard"]
  // A metrics line to metrics.jsonl and, as scalars, to TensorBoard (HF's tags:
  // eval_x as eval/x, the rest as train/x).
  absl::Status WriteMetrics(const nlohmann::json& line);
  RunResult result_;
};

absl::Status Run::Setup() {
  // The run's device: cpu, or cuda:<LOCAL_RANK> on a CUDA libtorch.
  device_ = group_->device();
  for (CausalLM* model : {p_.policy.get(), p_.reference_is_view ? nullptr : p_.reference.get()}) {
    if (model != nullptr && model->device() != device_) model->MoveTo(device_);
  }
  if (p_.adapter != nullptr) p_.adapter->MoveTo(device_);
  if (p_.reference_is_view && p_.reference->device() != device_) p_.reference = p_.policy->BaseView();
  if (!device_.is_cpu()) spdlog::info("device: {}", device_.str());
  TrainerContext context{p_.policy.get(), p_.reference.get(), p_.tokenizer.get(), &collectives_};
  if (p_.classifier_head.has_value()) context.classifier_head = &*p_.classifier_head;
  context.classifier_dropout = p_.classifier_dropout;
  POSTTRAIN_RETURN_IF_ERROR(CallNoThrow("trainer setup", [&] { return p_.trainer->Setup(context); }));
  if (p_.classifier_head.has_value() && p_.trainer->SavedArchitecture().first.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model '", p_.model_path, "' is a ", p_.policy->config().architecture, " (a classifier, no language-model head); trainer '",
        p_.trainer_type, "' trains a causal LM: start from the causal LM it was trained from"));
  }
  if (p_.policy != nullptr && p_.policy->config().output_router_logits && p_.policy->config().num_experts > 0) {
    const ModelConfig& mc = p_.policy->config();
    if (!p_.needs.router_aux_loss) {
      spdlog::info("output_router_logits: trainer '{}' adds no router load-balancing loss (nor does TRL's)", p_.trainer_type);
    } else if (!o_.fsdp.empty() && o_.fsdp != "no_shard") {
      return absl::UnimplementedError(absl::StrCat(
          "output_router_logits with fsdp = \"", o_.fsdp, "\": sharded layers run their forward without a graph, so the "
          "routers' load-balancing loss could not train them; train without fsdp, or set output_router_logits to false in '",
          p_.model_path, "/config.json'"));
    } else {
      router_aux_coef_ = mc.router_aux_loss_coef;
      p_.policy->set_record_router(true);
      spdlog::info("router load-balancing loss: loss + {} * aux_loss (output_router_logits)", router_aux_coef_);
    }
  }
  if (p_.adapter != nullptr && !p_.trainer->SavedArchitecture().first.empty()) {
    return absl::UnimplementedError(absl::StrCat(
        "trainer '", p_.trainer_type, "' saves a ", p_.trainer->SavedArchitecture().first,
        "; adapters on it (PEFT's SEQ_CLS task) are not supported yet: train it without [peft]"));
  }
  POSTTRAIN_RETURN_IF_ERROR(
      CallNoThrow("trainer prepare", [&] { return p_.trainer->Prepare(p_.train_tokens, p_.eval_tokens); }));
  if (p_.trainer->ReleasesReference() && p_.reference != nullptr) {
    p_.reference.reset();
    spdlog::info("reference model released (the trainer precomputed what it needs)");
  }

  // What the optimizer trains: the policy's parameters and the trainer's own.
  extras_ = p_.trainer->ExtraParameters();
  trainer_params_ = p_.trainer->TrainerParameters();
  if (p_.policy != nullptr && p_.adapter != nullptr) {
    // Only the adapter (and its modules_to_save, by their saved names) trains; the
    // base stays frozen.
    for (const auto& [name, param] : p_.adapter->NamedParameters()) trainable_.push_back({name, param});
    const std::vector<std::string> whole = p_.adapter->ModulesToSave();
    for (const auto& [name, param] : p_.policy->named_parameters()) {
      if (std::find(whole.begin(), whole.end(), name) == whole.end()) continue;
      param.set_requires_grad(true);
      trainable_.push_back({"base_model.model." + name, param});
    }
    p_.adapter->SetTraining(true);
  } else if (p_.policy != nullptr) {
    for (const auto& [name, param] : p_.policy->named_parameters()) {
      if (p_.policy->config().tie_word_embeddings && name == "lm_head.weight") continue;
      param.set_requires_grad(true);
      trainable_.push_back({name, param});
    }
  }
  for (const auto& group : {extras_, trainer_params_}) {
    for (const auto& [name, param] : group) {
      param.set_requires_grad(true);
      trainable_.push_back({name, param});
    }
  }
  if (world() > 1) {
    // Every rank starts from rank 0's weights (a trainer's randomly initialised
    // head included).
    std::vector<at::Tensor> weights;
    for (const auto& [name, param] : trainable_) weights.push_back(param.detach());
    POSTTRAIN_RETURN_IF_ERROR(group_->Broadcast(weights, 0));
  }
  if (!o_.resume_from_checkpoint.empty()) POSTTRAIN_RETURN_IF_ERROR(ResumeWeights());
  POSTTRAIN_RETURN_IF_ERROR(ShardModels());
  if (resumed_.has_value() && !resumed_->shard_files.empty()) POSTTRAIN_RETURN_IF_ERROR(ResumeShardedWeights());
  optimizer_ = std::make_unique<AdamW>(trainable_, AdamWOptions{o_.adam_beta1, o_.adam_beta2, o_.adam_epsilon, o_.weight_decay});
  if (policy_shards_ != nullptr && policy_shards_->trainable()) {
    // A flat shard holds norms and biases too: decay element by element.
    for (const auto& [name, mask] : policy_shards_->ShardMasks(DecaysWeight)) {
      POSTTRAIN_RETURN_IF_ERROR(optimizer_->SetDecayMask(name, mask));
    }
  }
  const auto [architecture, num_labels] = p_.trainer->SavedArchitecture();
  save_.tokenizer_source_dir = p_.model_path;
  save_.extras = extras_;
  save_.architecture = architecture;
  save_.num_labels = num_labels;

  const auto n = static_cast<std::int64_t>(p_.examples.size());
  batch_size_ = o_.per_device_train_batch_size;
  accumulation_ = o_.gradient_accumulation_steps;
  // A global micro-batch is batch_size x world examples (each rank its share).
  const std::int64_t micro_per_epoch = (n + batch_size_ * world() - 1) / (batch_size_ * world());
  max_steps_ = o_.max_steps > 0 ? o_.max_steps
                                : std::max<std::int64_t>(1, static_cast<std::int64_t>(std::ceil(
                                                                o_.num_train_epochs * micro_per_epoch / static_cast<double>(accumulation_))));
  warmup_ = o_.warmup_steps > 0 ? o_.warmup_steps : static_cast<std::int64_t>(std::ceil(o_.warmup_ratio * max_steps_));
  reuse_ = p_.needs.rollouts ? std::max<std::int64_t>(1, p_.needs.steps_per_generation) : 1;
  iteration_ = reuse_;  // sample on the first step
  generation_.resize(static_cast<size_t>(accumulation_));
  return absl::OkStatus();
}

// The checkpoint's weights into the whole model (before any sharding).
absl::Status Run::ResumeWeights() {
  POSTTRAIN_ASSIGN_OR_RETURN(resumed_, LoadCheckpoint(o_.resume_from_checkpoint, run_dir_.path(), &resumed_path_, rank()));
  if (!resumed_->shard_files.empty()) {
    if (o_.fsdp != "full_shard" && o_.fsdp != "shard_grad_op") {
      return absl::FailedPreconditionError(absl::StrCat("checkpoint '", resumed_path_,
                                                        "' is sharded (fsdp): resume it with trainer.fsdp = \"full_shard\" or \"shard_grad_op\""));
    }
    return absl::OkStatus();  // after sharding: ResumeShardedWeights
  }
  if (p_.policy != nullptr) {  // a full checkpoint in Phi-3's layout: qkv_proj, gate_up_proj
    POSTTRAIN_RETURN_IF_ERROR(SplitFusedProjections(p_.policy->config(), &resumed_->tensors));
  }
  c10::NoGradGuard no_grad;
  for (auto& [name, param] : trainable_) {
    const at::Tensor* saved = nullptr;
    for (const auto* source : {&resumed_->tensors, &resumed_->trainer_params}) {
      if (auto it = source->find(name); saved == nullptr && it != source->end()) saved = &it->second;
    }
    if (saved == nullptr || saved->sizes() != param.sizes()) {
      return absl::DataLossError(absl::StrCat("checkpoint '", resumed_path_, "' lacks or mis-shapes '", name, "'"));
    }
    param.copy_(*saved);
  }
  return absl::OkStatus();
}

absl::Status Run::ShardModels() {
  if (o_.fsdp.empty() || o_.fsdp == "no_shard" || p_.policy == nullptr) return absl::OkStatus();
  POSTTRAIN_ASSIGN_OR_RETURN(const ShardedModel::Strategy strategy, ShardedModel::ParseStrategy(o_.fsdp));
  // With an adapter the base is frozen: its shards only gather for the layers, and
  // the adapter (replicated, a few MiB) trains as in data parallelism.
  const bool adapter = p_.adapter != nullptr;
  POSTTRAIN_ASSIGN_OR_RETURN(policy_shards_, ShardedModel::Shard(p_.policy.get(), group_.get(), strategy, /*trainable=*/!adapter));
  if (adapter) {
    // The adapter's parameters by decoder layer ("...model.layers.<i>.…").
    std::vector<std::vector<at::Tensor>> per_layer(static_cast<size_t>(p_.policy->config().num_hidden_layers));
    for (const auto& [name, param] : p_.adapter->NamedParameters()) {
      const std::int64_t layer = DecoderLayerOf(name);
      if (layer >= 0 && layer < static_cast<std::int64_t>(per_layer.size())) per_layer[static_cast<size_t>(layer)].push_back(param);
    }
    policy_shards_->SetLayerExtras(std::move(per_layer));
  }
  if (p_.reference != nullptr && p_.reference_is_view) {
    // The base without the adapter: the policy's own tensors, so its units.
    p_.reference->set_layer_runner(policy_shards_->BaseRunner());
  } else if (p_.reference != nullptr) {
    POSTTRAIN_ASSIGN_OR_RETURN(reference_shards_, ShardedModel::Shard(p_.reference.get(), group_.get(), strategy, false));
  }
  if (!adapter) {
    // The optimizer trains the shards (and the trainer's own, replicated, parameters).
    std::vector<std::pair<std::string, at::Tensor>> trainable = policy_shards_->shards();
    for (const auto& group : {extras_, trainer_params_}) trainable.insert(trainable.end(), group.begin(), group.end());
    trainable_ = std::move(trainable);
  }
  spdlog::info("fsdp {}: {} units, this rank holds {:.2f} MiB of parameter shards", o_.fsdp,
               policy_shards_->shards().size(), static_cast<double>(policy_shards_->ShardBytes()) / (1 << 20));
  return absl::OkStatus();
}

absl::Status Run::ResumeShardedWeights() {
  std::vector<SafetensorsFile> files;
  for (const std::string& path : resumed_->shard_files) {
    POSTTRAIN_ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::Open(path));
    files.push_back(std::move(f));
  }
  // A unit's whole flat buffer: its shards of every saved rank, in rank order
  // (SliceFlat drops the padding and takes this rank's slice of this world).
  auto whole = [&](const std::string& name) -> absl::StatusOr<at::Tensor> {
    std::vector<at::Tensor> parts;
    for (const SafetensorsFile& f : files) {
      POSTTRAIN_ASSIGN_OR_RETURN(at::Tensor part, f.Get(name));
      parts.push_back(part);
    }
    return at::cat(parts);
  };
  auto sharded = [](const std::string& name) { return absl::StartsWith(name, "fsdp."); };
  c10::NoGradGuard no_grad;
  for (auto& [name, param] : trainable_) {
    at::Tensor saved;
    if (sharded(name)) {
      POSTTRAIN_ASSIGN_OR_RETURN(at::Tensor flat, whole(name));
      saved = policy_shards_->SliceFlat(name, flat);
    } else {
      POSTTRAIN_ASSIGN_OR_RETURN(saved, files[0].Get(name));
    }
    if (saved.sizes() != param.sizes()) {
      return absl::DataLossError(absl::StrCat("checkpoint '", resumed_path_, "' mis-shapes '", name, "'"));
    }
    param.copy_(saved);
  }
  // The optimizer state the same way ("optimizer.exp_avg.fsdp.layers.3", ...).
  for (const SafetensorsEntry& e : files[0].entries()) {
    if (!absl::StartsWith(e.name, "optimizer.")) continue;
    const std::string name = e.name.substr(10);
    const size_t dot = name.find('.');
    if (dot != std::string::npos && sharded(name.substr(dot + 1))) {
      POSTTRAIN_ASSIGN_OR_RETURN(at::Tensor flat, whole(e.name));
      resumed_->optimizer[name] = policy_shards_->SliceFlat(name.substr(dot + 1), flat);
    } else {
      POSTTRAIN_ASSIGN_OR_RETURN(resumed_->optimizer[name], files[0].Get(e.name));
    }
  }
  return absl::OkStatus();
}

absl::Status Run::GatherModels() {
  for (ShardedModel* s : {policy_shards_.get(), reference_shards_.get()}) {
    if (s != nullptr) POSTTRAIN_RETURN_IF_ERROR(s->GatherAll());
  }
  return absl::OkStatus();
}

absl::Status Run::ReleaseModels() {
  for (ShardedModel* s : {policy_shards_.get(), reference_shards_.get()}) {
    if (s != nullptr) POSTTRAIN_RETURN_IF_ERROR(s->ReleaseAll());
  }
  return absl::OkStatus();
}

absl::Status Run::Resume() {
  LoadedCheckpoint& checkpoint = *resumed_;
  const std::string& resolved = resumed_path_;
  POSTTRAIN_RETURN_IF_ERROR(Annotate(optimizer_->LoadStateDict(checkpoint.optimizer), resolved));
  // Trainer state comes back on the run's device, where it was saved from.
  std::map<std::string, at::Tensor> trainer_state;
  for (const auto& [name, t] : checkpoint.trainer_state_tensors) trainer_state[name] = t.to(device_);
  POSTTRAIN_RETURN_IF_ERROR(Annotate(CallNoThrow("trainer state", [&] { return p_.trainer->LoadState(trainer_state); }), resolved));
  const nlohmann::json& state = checkpoint.trainer_state;
  start_step_ = state["global_step"].get<std::int64_t>();
  if (state.contains("logging_window")) window_.FromJson(state["logging_window"]);
  if (state.contains("whole_run")) whole_run_.FromJson(state["whole_run"]);
  const int saved_world = state.value("world_size", 1);
  if (state.contains("data_order")) {
    order_.Seek(state["data_order"]);
  } else {
    // Older checkpoints: replay one global batch per micro-batch of each generation begun.
    const std::int64_t generations_begun = (start_step_ + reuse_ - 1) / reuse_;
    for (std::int64_t i = 0; i < generations_begun * accumulation_; ++i) order_.Next(batch_size_ * saved_world);
  }
  // In the middle of a generation's reuse: the same rollouts and rewards go on.
  if (start_step_ % reuse_ != 0) {
    if (saved_world != world()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "checkpoint '", resolved, "' was taken by ", saved_world, " ranks within a generation's reuse (step ", start_step_,
          " of every ", reuse_, "): its rollouts belong to those ranks; resume it with ", saved_world,
          " ranks, or from a checkpoint at a multiple of ", reuse_, " steps"));
    }
    if (checkpoint.generation.is_null()) {
      return absl::DataLossError(absl::StrCat("checkpoint '", resolved, "' was taken within a generation's reuse but holds no generation.json"));
    }
    POSTTRAIN_RETURN_IF_ERROR(Annotate(GenerationFromJson(checkpoint.generation, p_.examples, p_.train_tokens, &generation_), resolved));
    iteration_ = start_step_ % reuse_;
  }
  // The logs go back to the checkpoint, so no step appears twice.
  if (Writes()) {
    POSTTRAIN_RETURN_IF_ERROR(TruncateJsonlAfterStep(run_dir_.File("metrics.jsonl"), start_step_));
    POSTTRAIN_RETURN_IF_ERROR(TruncateJsonlAfterStep(run_dir_.File("completions.jsonl"), start_step_));
  }
  spdlog::info("resumed from {} at step {}", resolved, start_step_);
  resumed_.reset();
  return absl::OkStatus();
}

absl::Status Run::Sample(MicroRollouts& m, std::uint64_t seed, const std::vector<Example>& source,
                         const std::vector<TokenizedExample>& tokens, const std::vector<std::int64_t>& indices) {
  m.Reset(indices, source, tokens);
  const auto G = static_cast<size_t>(p_.needs.num_generations);
  // Generation under the run's autocast, as TRL's (accelerate's mixed precision wraps
  // the model's forward for generate too): with bf16 the prompts' forward and the
  // decode step's products take bf16 operands.
  Autocast autocast(o_.bf16, device_);
  // Rewards score each completion as the sampler finishes it (oneTBB workers),
  // overlapping with the rest of generation and with the trainer's step, which
  // waits for them only when it needs the scores.
  if (!p_.rewards->empty()) {
    m.scoring = std::make_unique<RewardPipeline::Session>(p_.rewards->Start(m.batch, m.batch.size() * G));
  }
  // One call to the sampler per source of generations: all from the policy, or
  // (rollout_sources) generation g of each prompt from source g.
  const std::vector<RolloutSource>& sources = p_.needs.rollout_sources;
  const size_t calls = sources.empty() ? 1 : sources.size();
  std::vector<std::vector<Rollout>> drawn(calls);
  for (size_t call = 0; call < calls; ++call) {
    SampleRequest request;
    request.prompts = m.batch;
    if (p_.tokenizer != nullptr) request.prompt_ids = m.prompt_ids;
    request.num_generations = sources.empty() ? p_.needs.num_generations : 1;
    // Source g > 0 draws from a stream of its own.
    request.seed = call == 0 ? seed : Mix64(seed ^ Mix64(0x50u + call));
    // A seed per example, so its samples do not depend on the rank or batch it is in.
    for (std::int64_t i : m.indices) {
      request.prompt_seeds.push_back(Mix64(request.seed ^ Mix64(static_cast<std::uint64_t>(i))));
    }
    request.policy = Policy{p_.policy.get(), p_.tokenizer.get(), p_.end_of_turn_ids};
    if (!sources.empty()) {
      const RolloutSource& from = sources[call];
      if (from.model == RolloutSource::Model::kReference) request.policy.model = p_.reference.get();
      if (from.model == RolloutSource::Model::kMixture) {
        request.policy.mixture = p_.reference.get();
        const auto epoch = static_cast<size_t>(std::max<std::int64_t>(0, order_.current_epoch()));
        request.policy.mixture_coef = from.mixture_coef.empty() ? 0.5 : from.mixture_coef[std::min(epoch, from.mixture_coef.size() - 1)];
      }
    }
    request.logprobs = p_.needs.sampler_logprobs;
    if (m.scoring != nullptr) {
      // Rollout i of this call is generation `call` of prompt i (grouped by prompt).
      request.on_rollout = [&m, call, calls](std::size_t i, const Rollout& r) {
        m.scoring->Submit(calls == 1 ? i : i * calls + call, r);
      };
    }
    spdlog::debug("phase: generation ({} prompts x {})", request.prompts.size(), request.num_generations);
    absl::StatusOr<std::vector<Rollout>> rollouts = CallNoThrow("sampler", [&] { return p_.sampler->Sample(request); });
    if (!rollouts.ok()) {
      return p_.model_path.empty() ? rollouts.status() : Annotate(rollouts.status(), absl::StrCat("sampling from '", p_.model_path, "'"));
    }
    drawn[call] = std::move(*rollouts);
  }
  if (calls == 1) {
    m.rollouts = std::move(drawn[0]);
    return absl::OkStatus();
  }
  for (size_t i = 0; i < m.batch.size(); ++i) {
    for (size_t call = 0; call < calls; ++call) m.rollouts.push_back(std::move(drawn[call][i]));
  }
  return absl::OkStatus();
}

absl::Status Run::WriteCompletions(std::int64_t step, MicroRollouts& m, const RewardTable* table) {
  std::string lines;
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
    // A sampled completion may end inside a UTF-8 sequence or hold bytes no UTF-8
    // reader accepts (byte-fallback tokens of an untrained model): written with
    // U+FFFD in their place, as HF's decode(errors="replace") shows them.
    lines += row.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  }
  // Rank 0 writes every rank's rollouts, in rank order.
  POSTTRAIN_ASSIGN_OR_RETURN(std::vector<std::string> all, group_->AllGatherStrings(lines));
  if (!Writes()) return absl::OkStatus();
  // TensorBoard: a table of the first completions (TRL's completions table).
  std::string markdown = "| prompt | completion | reward |\n|---|---|---|\n";
  std::int64_t rows = 0;
  auto cell = [](std::string s) {
    s = absl::StrReplaceAll(s, {{"|", "\\|"}, {"\n", " "}});
    return s.size() > 300 ? s.substr(0, 300) + "…" : s;
  };
  for (const std::string& rank_lines : all) {
    for (absl::string_view line : absl::StrSplit(rank_lines, '\n', absl::SkipEmpty())) {
      const nlohmann::json row = nlohmann::json::parse(line);
      POSTTRAIN_RETURN_IF_ERROR(completions_out_.Write(row));
      if (tensorboard_ != nullptr && rows++ < 16) {
        markdown += absl::StrCat("| ", cell(row["prompt"].get<std::string>()), " | ", cell(row["completion"].get<std::string>()),
                              " | ", row.contains("reward") ? row["reward"].dump() : "", " |\n");
      }
    }
  }
  if (tensorboard_ != nullptr) POSTTRAIN_RETURN_IF_ERROR(tensorboard_->AddText(step, "completions", markdown));
  return absl::OkStatus();
}

// Online trainers are evaluated as TRL does: generate on the eval prompts, score
// with the rewards; eval_reward, eval_rewards/<name>/mean, completion lengths.
absl::Status Run::EvaluateRollouts(std::int64_t step, MetricWindow* window) {
  const auto eb = static_cast<size_t>(o_.per_device_eval_batch_size);
  std::vector<std::int64_t> all(p_.eval_examples.size());
  std::iota(all.begin(), all.end(), 0);
  const std::vector<std::int64_t> mine = Shard(all, rank(), world());  // this rank's share
  for (size_t start = 0; start < mine.size(); start += eb) {
    const std::vector<std::int64_t> indices(mine.begin() + static_cast<std::ptrdiff_t>(start),
                                            mine.begin() + static_cast<std::ptrdiff_t>(std::min(mine.size(), start + eb)));
    MicroRollouts m;
    // Seeds of their own: evaluation draws nothing from the training stream
    // (and each example's from its index: Sample).
    const std::uint64_t seed = Seed() * 1000003u + (std::uint64_t{1} << 40) + static_cast<std::uint64_t>(step) * 100003u;
    POSTTRAIN_RETURN_IF_ERROR(Sample(m, seed, p_.eval_examples, p_.eval_tokens, indices));
    std::map<std::string, double> metrics;
    if (m.has_rewards()) {
      POSTTRAIN_ASSIGN_OR_RETURN(const RewardTable* table, m.WaitRewards());
      AddRewardMetrics(*table, &metrics);
    }
    double length = 0, clipped = 0;
    for (const Rollout& r : m.rollouts) {
      length += static_cast<double>(r.token_ids.size());
      clipped += r.finish_reason == FinishReason::kLength ? 1.0 : 0.0;
    }
    const auto count = static_cast<double>(std::max<size_t>(1, m.rollouts.size()));
    metrics["completions/mean_length"] = length / count;
    metrics["completions/clipped_ratio"] = clipped / count;
    window->Add(metrics, count);
  }
  return absl::OkStatus();
}

absl::Status Run::Evaluate(std::int64_t step) {
  if (p_.eval_examples.empty()) return absl::OkStatus();
  spdlog::debug("phase: evaluation at step {}", step);
  c10::NoGradGuard no_grad;
  // The adapter evaluates without dropout, and trains again after.
  struct EvalMode {
    Adapter* a;
    explicit EvalMode(Adapter* a) : a(a) { if (a) a->SetTraining(false); }
    ~EvalMode() { if (a) a->SetTraining(true); }
  } eval_mode(p_.adapter.get());
  MetricWindow eval_window;
  // Each rank evaluates its share; the trainer's collectives stay local (ranks
  // may run different numbers of batches), and the windows' sums are merged.
  // Sharded models are whole meanwhile: no collective inside a forward.
  POSTTRAIN_RETURN_IF_ERROR(GatherModels());
  collectives_.set_local(true);
  if (p_.needs.rollouts) {
    POSTTRAIN_RETURN_IF_ERROR(EvaluateRollouts(step, &eval_window));
  } else {
    Autocast autocast(o_.bf16, device_);
    // The policy's evaluation forwards record their routers too: TRL's eval loss
    // holds router_aux_loss_coef · aux_loss as the training loss does.
    if (router_aux_coef_ >= 0) p_.policy->set_record_router(true, /*without_grad=*/true);
    const auto record_again = absl::MakeCleanup([this] {
      if (router_aux_coef_ >= 0) p_.policy->set_record_router(true);
    });
    const auto eb = static_cast<size_t>(o_.per_device_eval_batch_size);
    std::vector<std::int64_t> all(p_.eval_examples.size());
    std::iota(all.begin(), all.end(), 0);
    const std::vector<std::int64_t> mine = Shard(all, rank(), world());
    for (size_t start = 0; start < mine.size(); start += eb) {
      const size_t end = std::min(mine.size(), start + eb);
      std::vector<const Example*> batch;
      std::vector<const TokenizedExample*> tokens;
      for (size_t k = start; k < end; ++k) {
        batch.push_back(&p_.eval_examples[static_cast<size_t>(mine[k])]);
        tokens.push_back(&p_.eval_tokens[static_cast<size_t>(mine[k])]);
      }
      StepInput input;
      input.step = step;
      input.training = false;
      input.batch = batch;
      input.tokens = tokens;
      ClearRouterAuxLoss();
      POSTTRAIN_ASSIGN_OR_RETURN(StepOutput out, CallNoThrow("trainer eval", [&] { return p_.trainer->Step(input); }));
      AddRouterAuxLoss(&out);
      if (out.loss.defined()) out.metrics["loss"] = out.loss.item<double>();
      // Per-token metrics are weighted by the batch's tokens when the trainer says
      // how many there were, so eval_loss is the exact mean over all eval tokens.
      auto tokens_it = out.metrics.find("num_tokens");
      const double weight = tokens_it != out.metrics.end() ? tokens_it->second : static_cast<double>(end - start);
      eval_window.Add(out.metrics, weight);
    }
  }
  collectives_.set_local(false);
  POSTTRAIN_RETURN_IF_ERROR(ReleaseModels());
  if (world() > 1) {
    POSTTRAIN_ASSIGN_OR_RETURN(std::vector<std::string> windows, group_->AllGatherStrings(eval_window.ToJson().dump()));
    eval_window.Clear();
    for (const std::string& w : windows) eval_window.Merge(nlohmann::json::parse(w));
  }
  nlohmann::json line = {{"step", step}, {"epoch", order_.epoch()}};
  std::map<std::string, double> means = eval_window.Means();
  for (const auto& [name, value] : means) line["eval_" + name] = value;
  spdlog::info("eval at step {}: {}", step, Summary(means));
  return Writes() ? WriteMetrics(line) : absl::OkStatus();
}

absl::Status Run::WriteMetrics(const nlohmann::json& line) {
  POSTTRAIN_RETURN_IF_ERROR(metrics_out_.Write(line));
  if (tensorboard_ == nullptr) return absl::OkStatus();
  std::map<std::string, double> scalars;
  // An evaluation line's epoch is the training line's of the same step: logged once.
  const bool evaluation = std::any_of(line.items().begin(), line.items().end(),
                                      [](const auto& item) { return absl::StartsWith(item.key(), "eval_"); });
  for (const auto& [key, value] : line.items()) {
    if (key == "step" || !value.is_number() || (evaluation && key == "epoch")) continue;
    scalars[absl::StartsWith(key, "eval_") ? "eval/" + key.substr(5) : "train/" + key] = value.get<double>();
  }
  return tensorboard_->AddScalars(line.at("step").get<std::int64_t>(), scalars);
}

// A rank's own checkpoint contents as bytes, for gathering on rank 0: the
// generation and tensor names as JSON, then the tensors pickled.
std::string PackRankContents(const RankContents& r) {
  nlohmann::json head = {{"generation", r.generation}, {"names", nlohmann::json::array()}};
  c10::impl::GenericList tensors(c10::TensorType::get());
  for (const auto& [name, t] : r.trainer_state_tensors) {
    head["names"].push_back(name);
    tensors.push_back(t.detach().contiguous());
  }
  const std::string json = head.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);  // completions: see WriteCompletions
  const std::vector<char> pickled = torch::jit::pickle_save(c10::IValue(tensors));
  std::string out = absl::StrCat(json.size(), "\n", json);
  out.append(pickled.data(), pickled.size());
  return out;
}

RankContents UnpackRankContents(const std::string& bytes) {
  const size_t newline = bytes.find('\n');
  const size_t json_size = std::stoul(bytes.substr(0, newline));
  const nlohmann::json head = nlohmann::json::parse(bytes.substr(newline + 1, json_size));
  const std::vector<char> pickled(bytes.begin() + static_cast<std::ptrdiff_t>(newline + 1 + json_size), bytes.end());
  const c10::List<c10::IValue> tensors = torch::jit::pickle_load(pickled).toList();
  RankContents r;
  r.generation = head.at("generation");
  for (size_t i = 0; i < head.at("names").size(); ++i) {
    r.trainer_state_tensors.push_back({head["names"][i].get<std::string>(), tensors.get(i).toTensor()});
  }
  return r;
}

absl::Status Run::AllOk(const absl::Status& mine, const std::string& what) {
  at::Tensor failed = at::full({1}, mine.ok() ? 0.0 : 1.0, HostOptions(at::kDouble));
  std::vector<at::Tensor> flag = {failed};
  POSTTRAIN_RETURN_IF_ERROR(group_->AllReduceSum(flag));
  POSTTRAIN_RETURN_IF_ERROR(mine);
  if (failed.item<double>() > 0) return absl::DataLossError(absl::StrCat(what, " failed on another rank"));
  return absl::OkStatus();
}

absl::Status Run::Checkpoint(std::int64_t step) {
  spdlog::debug("phase: checkpoint-{}", step);
  CheckpointContents contents;
  contents.trainer_params = trainer_params_;
  POSTTRAIN_ASSIGN_OR_RETURN(contents.trainer_state_tensors, CallNoThrow("trainer state", [&]() -> absl::StatusOr<std::vector<std::pair<std::string, at::Tensor>>> {
                               return p_.trainer->State();
                             }));
  contents.trainer_state = {{"global_step", step},        {"max_steps", max_steps_},
                            {"epoch", order_.epoch()},    {"seed", recipe_.seed()},
                            {"data_order", order_.State()}, {"world_size", world()},
                            {"logging_window", window_.ToJson()}, {"whole_run", whole_run_.ToJson()}};
  // Within a generation's reuse the next steps need its rollouts and rewards.
  if (step % reuse_ != 0) contents.generation = GenerationToJson(generation_);
  if (world() > 1) {
    // Weights and optimizer state are equal on every rank; the trainer's state
    // and the generation are each rank's own: rank 0 writes them all.
    absl::StatusOr<std::string> packed =
        CallNoThrow("packing the trainer state", [&]() -> absl::StatusOr<std::string> {
          return PackRankContents({contents.trainer_state_tensors, contents.generation});
        });
    POSTTRAIN_RETURN_IF_ERROR(packed.status());
    POSTTRAIN_ASSIGN_OR_RETURN(std::vector<std::string> all, group_->AllGatherStrings(*packed));
    if (Writes()) {
      for (size_t r = 1; r < all.size(); ++r) {
        POSTTRAIN_ASSIGN_OR_RETURN(RankContents rc, CallNoThrow("unpacking a rank's trainer state", [&]() -> absl::StatusOr<RankContents> {
                                     return UnpackRankContents(all[r]);
                                   }));
        contents.other_ranks.push_back(std::move(rc));
      }
    }
  }
  const std::string& out = run_dir_.path();
  if (!ShardedTraining()) {
    absl::Status saved = absl::OkStatus();
    if (p_.adapter != nullptr) {
      // The adapter alone (PEFT's files) and its optimizer state: a few MiB.
      contents.write_model = [this](const std::string& dir) { return p_.adapter->Save(dir, *p_.policy, p_.model_path); };
    }
    if (Writes()) saved = SaveCheckpoint(p_.policy.get(), save_, optimizer_->StateDict(), contents, out, step, o_.save_total_limit);
    POSTTRAIN_RETURN_IF_ERROR(AllOk(saved, absl::StrCat("writing checkpoint-", step)));
  } else {
    // Sharded: every rank writes its own shards and optimizer state; rank 0 then
    // the rest, trainer_state.json last, and renames the directory complete.
    POSTTRAIN_RETURN_IF_ERROR(AllOk(Writes() ? PrepareCheckpointDir(out, step) : absl::OkStatus(), "preparing a checkpoint"));
    std::vector<std::pair<std::string, at::Tensor>> tensors = trainable_;
    for (const auto& [name, t] : optimizer_->StateDict()) tensors.push_back({"optimizer." + name, t});
    POSTTRAIN_RETURN_IF_ERROR(AllOk(WriteCheckpointShard(out, step, rank(), tensors), absl::StrCat("writing checkpoint-", step)));
    contents.trainer_state["fsdp_world_size"] = world();
    absl::Status saved = absl::OkStatus();
    if (Writes()) saved = SaveCheckpoint(nullptr, save_, {}, contents, out, step, o_.save_total_limit);
    POSTTRAIN_RETURN_IF_ERROR(AllOk(saved, absl::StrCat("completing checkpoint-", step)));
  }
  if (Writes()) spdlog::info("saved {}/checkpoint-{}", out, step);
  return absl::OkStatus();
}

absl::Status Run::NextGeneration(std::int64_t step, bool fresh) {
  if (!fresh) return absl::OkStatus();
  // Sampling runs on the whole policy (ZeRO-3's unwrap_model_for_generation);
  // the sampler never reads the reference, which stays sharded.
  if (p_.needs.rollouts && policy_shards_ != nullptr) POSTTRAIN_RETURN_IF_ERROR(policy_shards_->GatherAll());
  const bool samples_reference = std::any_of(p_.needs.rollout_sources.begin(), p_.needs.rollout_sources.end(),
                                             [](const RolloutSource& r) { return r.model != RolloutSource::Model::kPolicy; });
  if (samples_reference && reference_shards_ != nullptr) POSTTRAIN_RETURN_IF_ERROR(reference_shards_->GatherAll());
  // Sample the whole generation first: a trainer may need statistics over all
  // of its micro-batches (DAPO's token count).
  for (std::int64_t micro = 0; micro < accumulation_; ++micro) {
    MicroRollouts& m = generation_[static_cast<size_t>(micro)];
    const std::vector<std::int64_t> indices = Shard(order_.Next(batch_size_ * world()), rank(), world());
    if (p_.needs.rollouts) {
      const std::uint64_t seed = Seed() * 1000003u + static_cast<std::uint64_t>(step * accumulation_ + micro);
      POSTTRAIN_RETURN_IF_ERROR(Sample(m, seed, p_.examples, p_.train_tokens, indices));
    } else {
      m.Reset(indices, p_.examples, p_.train_tokens);
    }
  }
  if (p_.needs.rollouts && policy_shards_ != nullptr) POSTTRAIN_RETURN_IF_ERROR(policy_shards_->ReleaseAll());
  if (samples_reference && reference_shards_ != nullptr) POSTTRAIN_RETURN_IF_ERROR(reference_shards_->ReleaseAll());
  return absl::OkStatus();
}

absl::StatusOr<std::map<std::string, double>> Run::TrainMicroBatches(std::int64_t step, bool log_completions, bool* trained) {
  std::vector<absl::Span<const Rollout>> generation_spans(generation_.size());
  for (size_t k = 0; k < generation_.size(); ++k) generation_spans[k] = generation_[k].rollouts;
  MetricWindow micro_metrics;
  double loss_sum = 0.0;
  *trained = false;
  for (std::int64_t micro = 0; micro < accumulation_; ++micro) {
    MicroRollouts& m = generation_[static_cast<size_t>(micro)];
    StepInput input;
    input.step = step;
    input.iteration = iteration_;
    input.micro_batch = micro;
    input.batch = m.batch;
    input.tokens = m.tokens;
    if (p_.needs.rollouts) {
      input.rollouts = m.rollouts;
      input.generation = generation_spans;
    }
    if (m.has_rewards()) input.rewards = StepRewards([&m] { return m.WaitRewards(); });
    StepOutput output;
    {
      Autocast autocast(o_.bf16, device_);
      ClearRouterAuxLoss();
      POSTTRAIN_ASSIGN_OR_RETURN(output, CallNoThrow(absl::StrCat("trainer '", p_.trainer_type, "'"),
                                                     [&] { return p_.trainer->Step(input); }));
      AddRouterAuxLoss(&output);
      if (output.loss.defined()) {
        const double loss = output.loss.item<double>();
        if (!std::isfinite(loss)) {
          return absl::InternalError(absl::StrCat("trainer '", p_.trainer_type, "' produced a non-finite loss at step ", step,
                                                  world() > 1 ? absl::StrCat(" on rank ", rank()) : ""));
        }
        loss_sum += loss;
        if (output.loss.requires_grad()) {
          (output.loss / static_cast<double>(accumulation_)).backward();
          *trained = true;
        }
      }
    }
    // A failing reward fails the step even if the trainer never waited for it.
    const RewardTable* table = nullptr;
    if (m.has_rewards()) {
      POSTTRAIN_ASSIGN_OR_RETURN(table, m.WaitRewards());
    }
    micro_metrics.Add(output.metrics);
    if (log_completions) POSTTRAIN_RETURN_IF_ERROR(WriteCompletions(step, m, table));
  }
  std::map<std::string, double> metrics = micro_metrics.Means();
  if (*trained) metrics["loss"] = loss_sum / static_cast<double>(accumulation_);
  return metrics;
}

absl::Status Run::OptimizerStep(std::int64_t step, std::map<std::string, double>* metrics) {
  // Data parallel: every rank's gradients are averaged, so every rank takes the
  // same step and the weights stay equal.
  // Sharded parameters' gradients were reduce-scattered already (mean over ranks).
  auto sharded = [](const std::string& name) { return absl::StartsWith(name, "fsdp."); };
  std::vector<at::Tensor> grads;
  for (auto& [name, param] : trainable_) {
    if (!sharded(name)) grads.push_back(param.grad());
  }
  POSTTRAIN_RETURN_IF_ERROR(group_->AllReduceMean(grads));
  grad_bytes_ = 0;
  for (auto& [name, param] : trainable_) {
    if (param.grad().defined()) grad_bytes_ += param.grad().numel() * static_cast<std::int64_t>(param.grad().element_size());
  }
  if (policy_shards_ == nullptr) {
    (*metrics)["grad_norm"] = optimizer_->ClipGradNorm(o_.max_grad_norm);
  } else {
    // The global norm: every rank's shards once, the replicated parameters once.
    const double w = static_cast<double>(world());
    POSTTRAIN_ASSIGN_OR_RETURN(const double squares, Collectives(group_.get()).Sum(optimizer_->GradSquares([&](const std::string& name) {
      return sharded(name) ? 1.0 : 1.0 / w;
    })));
    const double norm = std::sqrt(squares);
    optimizer_->ClipToNorm(norm, o_.max_grad_norm);
    (*metrics)["grad_norm"] = norm;
  }
  const double lr = ScheduledLearningRate(o_.lr_scheduler_type, o_.learning_rate, step, max_steps_, warmup_);
  (*metrics)["learning_rate"] = lr;
  optimizer_->Step(lr);
  optimizer_->ZeroGrad();
  return absl::OkStatus();
}

absl::Status Run::Log(std::int64_t step, const std::map<std::string, double>& step_metrics) {
  window_.Add(step_metrics);
  whole_run_.Add(step_metrics);
  // A few completions of the first and of the last step, for a look at the end.
  for (auto* samples : {&result_.first_completions, &result_.sample_completions}) {
    const MicroRollouts& last = generation_.back();
    const bool wanted = samples == &result_.first_completions ? step == start_step_ + 1 : step == max_steps_;
    if (!wanted || last.rollouts.empty()) continue;
    const size_t shown = std::min<size_t>(4, last.rollouts.size());
    for (size_t k = 0; k < shown; ++k) {
      const Rollout& r = last.rollouts[k * last.rollouts.size() / shown];
      samples->push_back({last.batch[static_cast<size_t>(r.prompt_index)]->prompt, r.completion});
    }
  }
  if (step % o_.logging_steps != 0 && step != max_steps_) return absl::OkStatus();
  nlohmann::json line = {{"step", step}, {"epoch", order_.epoch()}};
  const std::map<std::string, double> means = window_.Means();
  for (const auto& [name, value] : means) line[name] = value;
  if (Writes()) POSTTRAIN_RETURN_IF_ERROR(WriteMetrics(line));
  if (result_.first_metrics.empty()) result_.first_metrics = means;
  result_.last_metrics = means;
  window_.Clear();
  return absl::OkStatus();
}

// What this rank holds at the end of training, for scale-out planning.
void Run::LogMemory() {
  auto mib = [](std::int64_t bytes) { return static_cast<double>(bytes) / (1 << 20); };
  std::int64_t params = 0, optimizer = 0;
  for (const auto& [name, p] : trainable_) params += p.numel() * static_cast<std::int64_t>(p.element_size());
  if (p_.adapter != nullptr) {  // the frozen base under the adapter (the reference shares it)
    for (const auto& [name, p] : p_.policy->named_parameters()) {
      if (!p.requires_grad()) params += p.numel() * static_cast<std::int64_t>(p.element_size());
    }
  }
  if (reference_shards_ != nullptr) params += reference_shards_->ShardBytes();
  if (policy_shards_ != nullptr && p_.adapter != nullptr) params += policy_shards_->ShardBytes();  // the frozen base's shards
  if (reference_shards_ == nullptr && p_.reference != nullptr && !p_.reference_is_view) {
    for (const auto& [name, p] : p_.reference->named_parameters()) params += p.numel() * static_cast<std::int64_t>(p.element_size());
  }
  if (optimizer_ != nullptr) {
    for (const auto& [name, t] : optimizer_->StateDict()) optimizer += t.numel() * static_cast<std::int64_t>(t.element_size());
  }
  std::int64_t peak_kib = 0;
  if (std::FILE* f = std::fopen("/proc/self/status", "r")) {
    char line[256];
    while (std::fgets(line, sizeof(line), f) != nullptr) {
      if (std::sscanf(line, "VmHWM: %ld kB", &peak_kib) == 1) break;
    }
    std::fclose(f);
  }
  spdlog::info("memory (rank {} of {}{}): parameters {:.3f} MiB, gradients {:.3f} MiB, optimizer state {:.3f} MiB, peak RSS {:.1f} MiB",
               rank(), world(), o_.fsdp.empty() ? "" : absl::StrCat(", fsdp ", o_.fsdp), mib(params), mib(grad_bytes_),
               mib(optimizer), static_cast<double>(peak_kib) / 1024);
}

absl::Status Run::SaveFinal() {
  if (p_.policy == nullptr || trainable_.empty() || !p_.needs.model) return absl::OkStatus();
  spdlog::debug("phase: final/");
  SaveOptions save = save_;
  if (policy_shards_ != nullptr) {
    // A unit at a time: gathered (every rank), written (rank 0), released; the
    // whole model is never in one process's memory.
    save.tensor_groups = policy_shards_->UnitParameterNames();
    save.materialize = [this](size_t unit, bool whole) {
      return whole ? policy_shards_->GatherUnit(unit) : policy_shards_->ReleaseUnit(unit);
    };
  }
  absl::Status saved = absl::OkStatus();
  if (Writes() && p_.adapter != nullptr) {
    // PEFT's layout (PeftModel.from_pretrained, posttrain merge), with the tokenizer.
    saved = p_.adapter->Save(run_dir_.File("final"), *p_.policy, p_.model_path);
    if (saved.ok()) saved = CopyTokenizerFiles(p_.model_path, run_dir_.File("final"));
  } else if (Writes()) {
    saved = SaveCausalLM(*p_.policy, run_dir_.File("final"), save);
  } else if (ShardedTraining()) {
    for (size_t unit = 0; unit < save.tensor_groups.size(); ++unit) {
      POSTTRAIN_RETURN_IF_ERROR(save.materialize(unit, true));
      POSTTRAIN_RETURN_IF_ERROR(save.materialize(unit, false));
    }
  }
  if (!saved.ok() && Writes()) {
    // No final/ that looks complete but is not (config.json without weights).
    std::error_code ec;
    std::filesystem::remove_all(run_dir_.File("final"), ec);
  }
  POSTTRAIN_RETURN_IF_ERROR(AllOk(saved.ok() ? saved : Annotate(saved, "writing final/ (removed; the checkpoints written so far are intact)"),
                                  "writing final/"));
  if (Writes()) spdlog::info("saved the final model to {}", run_dir_.File("final"));
  result_.final_model_dir = run_dir_.File("final");
  // No rank reports success before final/ is complete.
  return group_->Barrier();
}

absl::StatusOr<RunResult> Run::Train() {
  POSTTRAIN_RETURN_IF_ERROR(Setup());
  const bool resuming = !o_.resume_from_checkpoint.empty();
  if (resuming) POSTTRAIN_RETURN_IF_ERROR(Resume());
  if (Writes()) {
    POSTTRAIN_ASSIGN_OR_RETURN(metrics_out_, JsonlWriter::Open(run_dir_.File("metrics.jsonl"), resuming));
    if (p_.needs.rollouts) {
      POSTTRAIN_ASSIGN_OR_RETURN(completions_out_, JsonlWriter::Open(run_dir_.File("completions.jsonl"), resuming));
    }
    if (o_.tensorboard) {
      const std::string dir = o_.logging_dir.empty() ? run_dir_.File("runs") : o_.logging_dir;
      POSTTRAIN_ASSIGN_OR_RETURN(tensorboard_, TensorBoardWriter::Open(dir, resuming ? start_step_ : -1));
      if (start_step_ == 0) {
        absl::StatusOr<std::string> resolved = ReadTextFile(run_dir_.File("recipe.resolved.toml"));
        if (resolved.ok()) POSTTRAIN_RETURN_IF_ERROR(tensorboard_->AddText(0, "recipe", "```toml\n" + *resolved + "```"));
      }
      spdlog::info("TensorBoard events: {}", tensorboard_->path());
    }
  }
  if (o_.eval_on_start && start_step_ == 0) POSTTRAIN_RETURN_IF_ERROR(Evaluate(0));
  ProgressLine progress("train", max_steps_, /*min_interval_s=*/5.0, start_step_);
  std::int64_t tokens = 0;  // processed by every rank since the start (for tok/s)
  for (std::int64_t step = start_step_ + 1; step <= max_steps_; ++step) {
    const bool fresh = iteration_ >= reuse_;
    if (fresh) iteration_ = 0;
    // A generation's completions are written if a logging step falls in its steps.
    bool log_completions = false;
    for (std::int64_t k = step; p_.needs.rollouts && fresh && k < step + reuse_ && k <= max_steps_; ++k) {
      log_completions |= k % o_.logging_steps == 0 || k == max_steps_;
    }
    POSTTRAIN_RETURN_IF_ERROR(NextGeneration(step, fresh));
    bool trained = false;
    using Metrics = std::map<std::string, double>;
    for (ShardedModel* s : {policy_shards_.get(), reference_shards_.get()}) {
      if (s != nullptr) POSTTRAIN_RETURN_IF_ERROR(s->BeginStep());
    }
    spdlog::debug("phase: training step {}", step);
    // Random numbers drawn by the model in a step (an adapter's dropout) come from
    // libtorch's default generators, seeded per step and rank: a run repeats, and a
    // resumed run draws what the uninterrupted one drew.
    at::manual_seed(Seed() * 1000003u + (std::uint64_t{1} << 41) + static_cast<std::uint64_t>(step) * 100003u +
                    static_cast<std::uint64_t>(rank()));
    POSTTRAIN_ASSIGN_OR_RETURN(Metrics step_metrics, TrainMicroBatches(step, log_completions, &trained));
    for (ShardedModel* s : {policy_shards_.get(), reference_shards_.get()}) {
      if (s != nullptr) POSTTRAIN_RETURN_IF_ERROR(s->EndStep());
    }
    ++iteration_;
    // Every rank's metrics, averaged (each holds an equal share of the batch).
    POSTTRAIN_ASSIGN_OR_RETURN(step_metrics, MeanOverRanks(*group_, step_metrics));
    if (trained) POSTTRAIN_RETURN_IF_ERROR(OptimizerStep(step, &step_metrics));
    for (const MicroRollouts& m : generation_) {
      std::int64_t n = 0;
      for (const Rollout& r : m.rollouts) n += static_cast<std::int64_t>(r.prompt_ids.size() + r.token_ids.size());
      for (const TokenizedExample* t : m.tokens) {
        if (!m.rollouts.empty()) break;
        n += static_cast<std::int64_t>(t->prompt_ids.size() + t->completion_ids.size() + t->chosen_ids.size() + t->rejected_ids.size());
        for (const auto& s : t->step_ids) n += static_cast<std::int64_t>(s.size());
        for (const TokenizedExample& p : t->packed) n += static_cast<std::int64_t>(p.prompt_ids.size() + p.completion_ids.size());
      }
      tokens += n * world();
    }
    POSTTRAIN_RETURN_IF_ERROR(Log(step, step_metrics));
    progress.Update(step, Headline(step_metrics), tokens);
    if ((o_.eval_steps > 0 && step % o_.eval_steps == 0) || step == max_steps_) {
      POSTTRAIN_RETURN_IF_ERROR(Evaluate(step));
    }
    if (o_.save_steps > 0 && step % o_.save_steps == 0 && step < max_steps_ && p_.policy != nullptr) {
      POSTTRAIN_RETURN_IF_ERROR(Checkpoint(step));
    }
  }
  progress.Finish();
  LogMemory();
  POSTTRAIN_RETURN_IF_ERROR(SaveFinal());
  result_.output_dir = run_dir_.path();
  result_.steps = max_steps_;
  result_.num_train_examples = static_cast<std::int64_t>(p_.examples.size());
  result_.mean_metrics = whole_run_.Means();
  spdlog::info("done: {} steps; run means: {}", max_steps_, Summary(result_.mean_metrics));
  return result_;
}

}  // namespace

absl::Status CheckRecipe(const Recipe& recipe, const Registry& registry) {
  return BuildRun(recipe, registry).status();
}

absl::StatusOr<RunResult> RunRecipe(const Recipe& recipe, const Registry& registry) {
  POSTTRAIN_RETURN_IF_ERROR(recipe.Validate(registry));
  POSTTRAIN_ASSIGN_OR_RETURN(ComponentConfig trainer_config, recipe.Component("trainer", registry));
  const bool resuming = trainer_config.Has("resume_from_checkpoint") && !trainer_config.GetString("resume_from_checkpoint").empty();
  POSTTRAIN_ASSIGN_OR_RETURN(DistributedEnv env, DistributedEnv::FromEnvironment());
  // Before anything touches a GPU (cuBLAS reads its workspace setting once).
  if (trainer_config.Has("full_determinism") && trainer_config.GetBool("full_determinism")) EnableFullDeterminism();
  const bool writes = env.rank == 0;
  // Rank 0 owns the run directory; the others only compute.
  std::optional<RunDirectory> run_dir;
  if (writes) {
    POSTTRAIN_ASSIGN_OR_RETURN(run_dir, RunDirectory::Create(recipe.output_dir(), recipe.overwrite_output_dir() || resuming));
  } else {
    run_dir = RunDirectory::At(recipe.output_dir());
  }
  // Everything is built and checked before the run directory's files change.
  POSTTRAIN_ASSIGN_OR_RETURN(RunParts parts, BuildRun(recipe, registry));
  if (env.world_size > 1) spdlog::info("data parallel: {}", env.Describe());
  POSTTRAIN_ASSIGN_OR_RETURN(const at::Device device,
                             RunDevice(env.local_rank, env.local_world_size, parts.options.use_cpu));
  POSTTRAIN_ASSIGN_OR_RETURN(std::unique_ptr<ProcessGroup> group,
                             ProcessGroup::Create(env, std::chrono::seconds(parts.options.ddp_timeout), device));
  std::optional<RunLog> run_log;
  if (writes) {
    POSTTRAIN_RETURN_IF_ERROR(WriteFileAtomic(run_dir->File("recipe.resolved.toml"), recipe.ResolvedToml(registry)));
    run_log.emplace(run_dir->File("run.log"), resuming);
    spdlog::info("run directory: {}", run_dir->path());
  }
  // No rank reads the run directory before rank 0 has made it.
  POSTTRAIN_RETURN_IF_ERROR(group->Barrier());
  Run run(recipe, std::move(parts), std::move(*run_dir), std::move(group));
  return run.Train();
}

}  // namespace posttrain

#include "posttrain/model/sequence_classifier.h"

#include <ATen/CPUGeneratorImpl.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "posttrain/core/device.h"
#include "posttrain/core/status.h"
#include "posttrain/core/text_file.h"
#include "posttrain/model/model_config.h"
#include "posttrain/model/safetensors.h"

namespace posttrain {

namespace fs = std::filesystem;

namespace {

const char* TaskSuffix(ClassifierTask task) {
  return task == ClassifierTask::kToken ? "ForTokenClassification" : "ForSequenceClassification";
}

// GPT-2's, GPT-Neo's, GPTBigCode's, GPT-NeoX's, BLOOM's and Falcon's token
// classifiers call their head `classifier`; every other family (and every sequence
// classifier) `score`.
std::string HeadName(const ModelConfig& config, ClassifierTask task) {
  const std::string& type = config.model_type;
  const bool classifier = task == ClassifierTask::kToken && (type == "gpt2" || type == "gpt_neo" || type == "gpt_bigcode" ||
                                                             type == "gpt_neox" || type == "bloom" || type == "falcon");
  return classifier ? "classifier" : "score";
}

std::string ShapeText(const at::Tensor& t) {
  std::string s = "[";
  for (std::int64_t d = 0; d < t.dim(); ++d) absl::StrAppend(&s, d > 0 ? ", " : "", t.size(d));
  return s + "]";
}

// Moves a classifier's head out of `tensors`: `score.*`, or `classifier.*` (old Phi
// checkpoints call it that too, so either name is read for any family).
absl::StatusOr<ClassifierHead> TakeHead(const std::string& dir, const ModelConfig& config, ClassifierTask task,
                                        std::map<std::string, at::Tensor>* tensors) {
  ClassifierHead head;
  head.task = task;
  for (const char* name : {"score", "classifier"}) {
    if (tensors->count(absl::StrCat(name, ".weight")) > 0) {
      head.name = name;
      break;
    }
  }
  auto weight = tensors->find(head.name + ".weight");
  if (weight == tensors->end()) {
    return absl::InvalidArgumentError(absl::StrCat("'", dir, "' holds a ", config.architecture,
                                                   " but lacks its head 'score.weight' (or 'classifier.weight')"));
  }
  head.weight = weight->second;
  tensors->erase(weight);
  if (head.weight.dim() != 2 || head.weight.size(0) < 1 || head.weight.size(1) != config.output_size()) {
    return absl::InvalidArgumentError(absl::StrCat("'", dir, "': ", head.name, ".weight is ", ShapeText(head.weight),
                                                   ", expected [num_labels, ", config.output_size(), "]"));
  }
  if (auto bias = tensors->find(head.name + ".bias"); bias != tensors->end()) {
    head.bias = bias->second;
    tensors->erase(bias);
    if (head.bias.dim() != 1 || head.bias.size(0) != head.weight.size(0)) {
      return absl::InvalidArgumentError(absl::StrCat("'", dir, "': ", head.name, ".bias is ", ShapeText(head.bias),
                                                     ", expected [", head.weight.size(0), "] (num_labels)"));
    }
  }
  for (at::Tensor* t : {&head.weight, &head.bias}) {
    if (t->defined() && !at::isFloatingType(t->scalar_type())) {
      return absl::InvalidArgumentError(absl::StrCat("'", dir, "': the head ", head.name, " has non-float dtype ",
                                                     c10::toString(t->scalar_type())));
    }
  }
  return head;
}

absl::StatusOr<SequenceClassifier> LoadClassifier(const std::string& dir, at::ScalarType dtype, ClassifierTask task,
                                                  absl::string_view what, absl::string_view hint) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat("reward model directory '", dir, "' does not exist"));
  }
  POSTTRAIN_ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::FromJsonFile((fs::path(dir) / "config.json").string()));
  if (!absl::EndsWith(config.architecture, TaskSuffix(task))) {
    return absl::InvalidArgumentError(absl::StrCat("'", dir, "' holds a ", config.architecture, ", not a ", what, " (", hint, ")"));
  }
  POSTTRAIN_ASSIGN_OR_RETURN(LoadedModel loaded, LoadModelAndHead(dir, dtype));
  return SequenceClassifier{std::move(loaded.model), std::move(*loaded.head)};
}

}  // namespace

std::vector<std::pair<std::string, at::Tensor>> ClassifierHead::Named() const {
  std::vector<std::pair<std::string, at::Tensor>> named = {{name + ".weight", weight}};
  if (bias.defined()) named.push_back({name + ".bias", bias});
  return named;
}

std::string ClassifierArchitecture(const std::string& causal_architecture, ClassifierTask task) {
  // LlamaForCausalLM, GPT2LMHeadModel, or already a classifier (LlamaForTokenClassification).
  size_t stem = causal_architecture.find("For");
  if (stem == std::string::npos) stem = causal_architecture.find("LMHeadModel");
  return causal_architecture.substr(0, stem) + TaskSuffix(task);
}

absl::Status TransformersHasClassifier(const ModelConfig& config, ClassifierTask task) {
  // The families transformers gives no classifier of either kind, then OPT's missing
  // token classifier; the class is named from the causal architecture's stem.
  const std::string& type = config.model_type;
  const bool none = type == "cohere" || type == "cohere2" || type == "glm4_moe" || type == "mamba" || type == "falcon_mamba" ||
                    type == "dbrx" || type == "olmo";
  if (none || (task == ClassifierTask::kToken && type == "opt")) {
    return absl::UnimplementedError(absl::StrCat("transformers has no ", ClassifierArchitecture(config.architecture, task)));
  }
  return absl::OkStatus();
}

ClassifierHead NewClassifierHead(const ModelConfig& config, ClassifierTask task, std::int64_t num_labels,
                                 std::uint64_t seed, const at::TensorOptions& options) {
  ClassifierHead head;
  head.task = task;
  head.name = HeadName(config, task);
  at::Generator gen = at::detail::createCPUGenerator(seed);
  head.weight = at::normal(0.0, config.initializer_range, {num_labels, config.output_size()}, gen).to(options);
  if (task == ClassifierTask::kToken) head.bias = at::zeros({num_labels}, options);
  return head;
}

absl::StatusOr<ClassifierHead> StartingClassifierHead(const ClassifierHead* existing, const ModelConfig& config,
                                                      ClassifierTask task, std::int64_t num_labels, std::uint64_t seed,
                                                      const at::TensorOptions& options) {
  if (existing == nullptr) return NewClassifierHead(config, task, num_labels, seed, options);
  if (existing->task != task || existing->num_labels() != num_labels) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the model is a ", config.architecture, " with num_labels ", existing->num_labels(), "; this trainer trains a ",
        ClassifierArchitecture(config.architecture, task), " with num_labels ", num_labels,
        ": start from that or from the causal LM"));
  }
  ClassifierHead head = *existing;
  head.weight = existing->weight.to(options, /*non_blocking=*/false, /*copy=*/true);
  if (existing->bias.defined()) head.bias = existing->bias.to(options, /*non_blocking=*/false, /*copy=*/true);
  return head;
}

double TokenClassifierDropout(const std::string& model_dir) {
  absl::StatusOr<std::string> text = ReadTextFile((fs::path(model_dir) / "config.json").string());
  if (!text.ok()) return 0.1;
  const nlohmann::json json = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object()) return 0.1;
  for (const char* key : {"classifier_dropout", "hidden_dropout"}) {
    auto it = json.find(key);
    if (it != json.end() && it->is_number()) {
      const double p = it->get<double>();
      if (p >= 0.0 && p < 1.0) return p;
    }
  }
  return 0.1;
}

absl::StatusOr<LoadedModel> LoadModelAndHead(const std::string& dir, at::ScalarType dtype) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return absl::NotFoundError(absl::StrCat("model directory '", dir, "' does not exist"));
  POSTTRAIN_ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::FromJsonFile((fs::path(dir) / "config.json").string()));
  POSTTRAIN_ASSIGN_OR_RETURN(auto tensors, LoadSafetensorsDir(dir));
  LoadedModel loaded;
  for (ClassifierTask task : {ClassifierTask::kSequence, ClassifierTask::kToken}) {
    if (!absl::EndsWith(config.architecture, TaskSuffix(task))) continue;
    POSTTRAIN_ASSIGN_OR_RETURN(ClassifierHead head, TakeHead(dir, config, task, &tensors));
    head.weight = head.weight.to(dtype).contiguous();
    if (head.bias.defined()) head.bias = head.bias.to(dtype).contiguous();
    loaded.head = std::move(head);
    // A classifier has no LM head; an untied backbone needs a placeholder for one.
    if (!config.tie_word_embeddings && tensors.count("lm_head.weight") == 0) {
      tensors["lm_head.weight"] = at::zeros({config.vocab_size, config.output_size()}, HostOptions(at::kFloat));
    }
    if (config.lm_head_bias && tensors.count("lm_head.bias") == 0) {  // Phi's
      tensors["lm_head.bias"] = at::zeros({config.vocab_size}, HostOptions(at::kFloat));
    }
  }
  absl::StatusOr<std::unique_ptr<CausalLM>> model = CausalLM::FromTensors(config, std::move(tensors), dtype);
  if (!model.ok()) return Annotate(model.status(), absl::StrCat("loading model '", dir, "'"));
  loaded.model = std::move(*model);
  return loaded;
}

absl::StatusOr<SequenceClassifier> LoadSequenceClassifier(const std::string& dir, at::ScalarType dtype) {
  return LoadClassifier(dir, dtype, ClassifierTask::kSequence, "sequence classifier",
                        "train one with the `reward` trainer: its final/ directory is a LlamaForSequenceClassification");
}

absl::StatusOr<SequenceClassifier> LoadTokenClassifier(const std::string& dir, at::ScalarType dtype) {
  return LoadClassifier(dir, dtype, ClassifierTask::kToken, "token classifier",
                        "train a process reward model with the `prm` trainer: its final/ directory is a LlamaForTokenClassification");
}

at::Tensor SequenceScores(const CausalLM& backbone, const ClassifierHead& head, const CompletionBatch& batch) {
  // Padding-free: each row's prompt + completion as one sequence of a packed stream.
  const std::int64_t rows = batch.input_ids.size(0);
  const at::Tensor ids_cpu = batch.input_ids.to(at::kCPU);
  auto ids = ids_cpu.accessor<std::int64_t, 2>();
  std::vector<std::vector<std::int64_t>> sequences;
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t len = batch.prompt_lengths[static_cast<size_t>(r)] + batch.completion_lengths[static_cast<size_t>(r)];
    TORCH_CHECK(len >= 1, "sequence scores need a non-empty row (row ", r, ")");
    sequences.emplace_back(ids[r].data(), ids[r].data() + len);
  }
  PackedSequences packed = PackSequences(sequences);
  packed.input_ids = packed.input_ids.to(batch.input_ids.device());
  packed.position_ids = packed.position_ids.to(batch.input_ids.device());
  const at::Tensor hidden = backbone.PackedHidden(packed);  // [tokens, H]
  std::vector<std::int64_t> last;
  for (std::int64_t r = 0; r < rows; ++r) last.push_back(packed.offsets[static_cast<size_t>(r) + 1] - 1);
  const at::Tensor index = at::tensor(last, hidden.options().dtype(at::kLong));
  return head(hidden.index_select(0, index)).to(at::kFloat);
}

}  // namespace posttrain

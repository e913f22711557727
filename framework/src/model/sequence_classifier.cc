#include "posttrain/model/sequence_classifier.h"

#include <filesystem>

#include "absl/strings/match.h"
#include "posttrain/core/device.h"
#include "posttrain/core/status.h"
#include "posttrain/model/model_config.h"
#include "posttrain/model/safetensors.h"

namespace posttrain {

namespace {

// A classifier directory whose architecture ends in `suffix`; `what` and `hint` for
// the message when it does not.
absl::StatusOr<SequenceClassifier> LoadClassifier(const std::string& dir, at::ScalarType dtype, absl::string_view suffix,
                                                  absl::string_view what, absl::string_view hint) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat("reward model directory '", dir, "' does not exist"));
  }
  POSTTRAIN_ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::FromJsonFile((fs::path(dir) / "config.json").string()));
  if (!absl::EndsWith(config.architecture, suffix)) {
    return absl::InvalidArgumentError(absl::StrCat("'", dir, "' holds a ", config.architecture, ", not a ", what, " (", hint, ")"));
  }
  POSTTRAIN_ASSIGN_OR_RETURN(auto tensors, LoadSafetensorsDir(dir));
  auto head = tensors.find("score.weight");
  if (head == tensors.end()) {
    return absl::InvalidArgumentError(absl::StrCat("'", dir, "' lacks the classifier head 'score.weight'"));
  }
  at::Tensor score = head->second;
  tensors.erase(head);
  if (score.dim() != 2 || score.size(1) != config.output_size()) {
    return absl::InvalidArgumentError(absl::StrCat("'", dir, "': score.weight must be [num_labels, ",
                                                   config.output_size(), "]"));
  }
  // A classifier has no LM head; an untied backbone needs a placeholder for one.
  if (!config.tie_word_embeddings && tensors.count("lm_head.weight") == 0) {
    tensors["lm_head.weight"] = at::zeros({config.vocab_size, config.output_size()}, HostOptions(at::kFloat));
  }
  if (config.lm_head_bias && tensors.count("lm_head.bias") == 0) {  // Phi's
    tensors["lm_head.bias"] = at::zeros({config.vocab_size}, HostOptions(at::kFloat));
  }
  absl::StatusOr<std::unique_ptr<CausalLM>> backbone = CausalLM::FromTensors(config, std::move(tensors), dtype);
  if (!backbone.ok()) return Annotate(backbone.status(), absl::StrCat("loading reward model '", dir, "'"));
  return SequenceClassifier{std::move(*backbone), score.to(dtype).contiguous()};
}

}  // namespace

absl::StatusOr<SequenceClassifier> LoadSequenceClassifier(const std::string& dir, at::ScalarType dtype) {
  return LoadClassifier(dir, dtype, "ForSequenceClassification", "sequence classifier",
                        "train one with the `reward` trainer: its final/ directory is a LlamaForSequenceClassification");
}

absl::StatusOr<SequenceClassifier> LoadTokenClassifier(const std::string& dir, at::ScalarType dtype) {
  return LoadClassifier(dir, dtype, "ForTokenClassification", "token classifier",
                        "train a process reward model with the `prm` trainer: its final/ directory is a LlamaForTokenClassification");
}

at::Tensor SequenceScores(const CausalLM& backbone, const at::Tensor& score, const CompletionBatch& batch) {
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
  return at::linear(hidden.index_select(0, index), score).to(at::kFloat);
}

}  // namespace posttrain

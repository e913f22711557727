#include "posttrain/model/sequence_classifier.h"

#include <filesystem>

#include "absl/strings/match.h"
#include "posttrain/core/status.h"
#include "posttrain/model/model_config.h"
#include "posttrain/model/safetensors.h"

namespace posttrain {

absl::StatusOr<SequenceClassifier> LoadSequenceClassifier(const std::string& dir, at::ScalarType dtype) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat("reward model directory '", dir, "' does not exist"));
  }
  POSTTRAIN_ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::FromJsonFile((fs::path(dir) / "config.json").string()));
  if (!absl::EndsWith(config.architecture, "ForSequenceClassification")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", dir, "' holds a ", config.architecture,
        ", not a sequence classifier (train one with the `reward` trainer: its final/ directory is a "
        "LlamaForSequenceClassification)"));
  }
  POSTTRAIN_ASSIGN_OR_RETURN(auto tensors, LoadSafetensorsDir(dir));
  auto head = tensors.find("score.weight");
  if (head == tensors.end()) {
    return absl::InvalidArgumentError(absl::StrCat("'", dir, "' lacks the classifier head 'score.weight'"));
  }
  at::Tensor score = head->second;
  tensors.erase(head);
  if (score.dim() != 2 || score.size(1) != config.hidden_size) {
    return absl::InvalidArgumentError(absl::StrCat("'", dir, "': score.weight must be [num_labels, ",
                                                   config.hidden_size, "]"));
  }
  // A classifier has no LM head; an untied backbone needs a placeholder for one.
  if (!config.tie_word_embeddings && tensors.count("lm_head.weight") == 0) {
    tensors["lm_head.weight"] = at::zeros({config.vocab_size, config.hidden_size}, at::kFloat);
  }
  absl::StatusOr<std::unique_ptr<CausalLM>> backbone = CausalLM::FromTensors(config, std::move(tensors), dtype);
  if (!backbone.ok()) return Annotate(backbone.status(), absl::StrCat("loading reward model '", dir, "'"));
  return SequenceClassifier{std::move(*backbone), score.to(dtype).contiguous()};
}

at::Tensor SequenceScores(const CausalLM& backbone, const at::Tensor& score, const CompletionBatch& batch) {
  const std::int64_t rows = batch.input_ids.size(0), length = batch.input_ids.size(1);
  at::Tensor positions = at::arange(length, at::kLong).unsqueeze(0).expand({rows, length}).contiguous();
  at::Tensor hidden = backbone.Hidden(batch.input_ids, positions, batch.attention_mask, nullptr);
  std::vector<std::int64_t> last;
  for (std::int64_t r = 0; r < rows; ++r) {
    last.push_back(batch.prompt_lengths[static_cast<size_t>(r)] + batch.completion_lengths[static_cast<size_t>(r)] - 1);
  }
  at::Tensor index = at::tensor(last, at::kLong).view({rows, 1, 1}).expand({rows, 1, hidden.size(2)});
  return at::linear(hidden.gather(1, index).squeeze(1), score).to(at::kFloat);
}

}  // namespace posttrain

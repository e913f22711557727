// Hugging Face model directories: config.json + safetensors (+ tokenizer files).
//
//   POSTTRAIN_ASSIGN_OR_RETURN(auto model, LoadCausalLM("models/stories260K", at::kFloat));
//   POSTTRAIN_RETURN_IF_ERROR(SaveCausalLM(*model, "runs/x/final", {.source_dir = "models/stories260K"}));
//
// A saved directory is what transformers' AutoModelForCausalLM.from_pretrained
// loads: config.json (architectures, model_type, dims, torch_dtype),
// generation_config.json, model.safetensors (sharded with an index when large),
// and the tokenizer files copied from the source directory.
#pragma once

#include <functional>

#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "posttrain/model/causal_lm.h"

namespace posttrain {

// Parses "float32"/"fp32", "bfloat16"/"bf16"; "float16" is refused (no CPU matmul).
absl::StatusOr<at::ScalarType> ParseDtype(absl::string_view name);
// "float32", "bfloat16", "float16".
std::string DtypeName(at::ScalarType dtype);

absl::StatusOr<std::unique_ptr<CausalLM>> LoadCausalLM(const std::string& dir, at::ScalarType dtype);

struct SaveOptions {
  // Copy tokenizer.json, tokenizer_config.json, special_tokens_map.json,
  // tokenizer.model from here, if present.
  std::string tokenizer_source_dir;
  // Written to generation_config.json (HF keys, e.g. {"do_sample": true}).
  nlohmann::json generation_config = nlohmann::json::object();
  std::uint64_t max_shard_bytes = 5ull << 30;
  // Tensors saved beside the model's own (e.g. a reward head "score.weight").
  std::vector<std::pair<std::string, at::Tensor>> extras;
  // Architecture override (e.g. "LlamaForSequenceClassification", which drops
  // lm_head.weight) and its num_labels; "" keeps the model's own.
  std::string architecture;
  std::int64_t num_labels = 0;
  // Streaming, for a model whose parameters are whole only a group at a time
  // (FSDP-style sharding): the parameters by name in groups, each written to its
  // own file (model-0000g-of-0000G.safetensors + index; extras with the last);
  // materialize(g, true) makes group g whole before its file is written,
  // materialize(g, false) releases it after. Called for every group, in order,
  // even after a write failed (it may be a collective).
  std::vector<std::vector<std::string>> tensor_groups;
  std::function<absl::Status(size_t group, bool whole)> materialize;
};

// Writes the directory (created if needed); each file atomically.
absl::Status SaveCausalLM(const CausalLM& model, const std::string& dir, const SaveOptions& options = {});

// Copies tokenizer.json, tokenizer_config.json, special_tokens_map.json,
// tokenizer.model and chat_template.jinja from `from_dir` (those present) into `to_dir`.
absl::Status CopyTokenizerFiles(const std::string& from_dir, const std::string& to_dir);

}  // namespace posttrain

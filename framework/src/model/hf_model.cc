#include "posttrain/model/hf_model.h"

#include <filesystem>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "posttrain/core/status.h"
#include "posttrain/core/text_file.h"
#include "posttrain/model/safetensors.h"
#include "posttrain/core/atomic_file.h"

namespace posttrain {
namespace fs = std::filesystem;

absl::StatusOr<at::ScalarType> ParseDtype(absl::string_view name) {
  const std::string n = absl::AsciiStrToLower(name);
  if (n == "float32" || n == "fp32") return at::kFloat;
  if (n == "bfloat16" || n == "bf16") return at::kBFloat16;
  if (n == "float16" || n == "fp16") {
    // libtorch's CPU kernels have no Half matmul (addmm): refuse it up front
    // rather than abort in the first forward.
    return absl::InvalidArgumentError(absl::StrCat("dtype '", name, "' is not supported on the CPU: use bfloat16 or float32"));
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown dtype '", name, "' (float32, bfloat16)"));
}

std::string DtypeName(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return "float32";
    case at::kBFloat16: return "bfloat16";
    case at::kHalf: return "float16";
    default: return c10::toString(dtype);
  }
}

absl::StatusOr<std::unique_ptr<CausalLM>> LoadCausalLM(const std::string& dir, at::ScalarType dtype) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return absl::NotFoundError(absl::StrCat("model directory '", dir, "' does not exist"));
  POSTTRAIN_ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::FromJsonFile((fs::path(dir) / "config.json").string()));
  POSTTRAIN_ASSIGN_OR_RETURN(auto tensors, LoadSafetensorsDir(dir));
  absl::StatusOr<std::unique_ptr<CausalLM>> model = CausalLM::FromTensors(config, std::move(tensors), dtype);
  if (!model.ok()) return Annotate(model.status(), absl::StrCat("loading model '", dir, "'"));
  return model;
}

namespace {

// SaveOptions::tensor_groups: one safetensors file per group, each made whole
// (materialize) just for its writing, then the index.
absl::Status SaveGroups(const CausalLM& model, const std::string& dir, const SaveOptions& options, bool classifier) {
  std::map<std::string, at::Tensor> by_name(model.named_parameters().begin(), model.named_parameters().end());
  const size_t groups = options.tensor_groups.size();
  nlohmann::ordered_json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", nlohmann::ordered_json::object()}};
  std::uint64_t total = 0;
  absl::Status failed = absl::OkStatus();
  for (size_t g = 0; g < groups; ++g) {
    absl::Status whole = options.materialize(g, true);
    if (!whole.ok()) return whole;  // a collective failed: nothing to keep in step with
    const std::string file = absl::StrFormat("model-%05d-of-%05d.safetensors", g + 1, groups);
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    for (const std::string& name : options.tensor_groups[g]) {
      if (classifier && absl::StartsWith(name, "lm_head.")) continue;
      tensors.push_back({name, by_name.at(name).detach()});
    }
    tensors = FuseProjections(model.config(), std::move(tensors));  // Phi-3's layout (a group holds whole layers)
    if (g + 1 == groups) {
      for (const auto& [name, t] : options.extras) tensors.push_back({name, t.detach().to(model.dtype())});
    }
    if (failed.ok()) {
      failed = SaveSafetensors((fs::path(dir) / file).string(), tensors, {{"format", "pt"}});
      for (const auto& [name, t] : tensors) {
        index["weight_map"][name] = file;
        total += static_cast<std::uint64_t>(t.numel()) * t.element_size();
      }
    }
    POSTTRAIN_RETURN_IF_ERROR(options.materialize(g, false));
  }
  POSTTRAIN_RETURN_IF_ERROR(failed);
  index["metadata"]["total_size"] = total;
  std::error_code ec;
  fs::remove(fs::path(dir) / "model.safetensors", ec);
  return WriteFileAtomic((fs::path(dir) / "model.safetensors.index.json").string(), index.dump(2) + "\n");
}

}  // namespace

absl::Status SaveCausalLM(const CausalLM& model, const std::string& dir, const SaveOptions& options) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create '", dir, "': ", ec.message()));
  ModelConfig config = model.config();
  config.torch_dtype = DtypeName(model.dtype());
  // A classifier has its head (in extras) instead of the LM head.
  const bool classifier = absl::EndsWith(options.architecture, "ForSequenceClassification") ||
                          absl::EndsWith(options.architecture, "ForTokenClassification");
  if (!options.architecture.empty()) config.architecture = options.architecture;
  if (options.num_labels > 0) config.num_labels = options.num_labels;
  POSTTRAIN_RETURN_IF_ERROR(WriteFileAtomic((fs::path(dir) / "config.json").string(), config.ToJson().dump(2) + "\n"));
  nlohmann::ordered_json generation = {{"_from_model_config", true}};
  if (config.bos_token_id) generation["bos_token_id"] = *config.bos_token_id;
  if (config.eos_token_ids.size() == 1) generation["eos_token_id"] = config.eos_token_ids[0];
  if (config.eos_token_ids.size() > 1) generation["eos_token_id"] = config.eos_token_ids;
  for (const auto& [k, v] : options.generation_config.items()) generation[k] = v;
  generation["transformers_version"] = "4.46.0";
  POSTTRAIN_RETURN_IF_ERROR(WriteFileAtomic((fs::path(dir) / "generation_config.json").string(), generation.dump(2) + "\n"));
  if (options.materialize) {
    POSTTRAIN_RETURN_IF_ERROR(SaveGroups(model, dir, options, classifier));
  } else {
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    for (const auto& [name, t] : model.named_parameters()) {
      if (classifier && absl::StartsWith(name, "lm_head.")) continue;  // a classifier has a score head instead
      tensors.push_back({name, t.detach()});
    }
    tensors = FuseProjections(config, std::move(tensors));  // Phi-3's qkv_proj / gate_up_proj
    for (const auto& [name, t] : options.extras) tensors.push_back({name, t.detach().to(model.dtype())});
    POSTTRAIN_RETURN_IF_ERROR(SaveSafetensorsDir(dir, tensors, options.max_shard_bytes));
  }
  if (!options.tokenizer_source_dir.empty()) POSTTRAIN_RETURN_IF_ERROR(CopyTokenizerFiles(options.tokenizer_source_dir, dir));
  return absl::OkStatus();
}

absl::Status CopyTokenizerFiles(const std::string& from_dir, const std::string& to_dir) {
  std::error_code ec;
  if (fs::weakly_canonical(from_dir, ec) == fs::weakly_canonical(to_dir, ec)) return absl::OkStatus();
  for (const char* name : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                           "chat_template.jinja"}) {
    const fs::path from = fs::path(from_dir) / name;
    if (!fs::exists(from, ec)) continue;
    POSTTRAIN_ASSIGN_OR_RETURN(std::string content, ReadTextFile(from.string()));
    POSTTRAIN_RETURN_IF_ERROR(WriteFileAtomic((fs::path(to_dir) / name).string(), content));
  }
  return absl::OkStatus();
}

}  // namespace posttrain

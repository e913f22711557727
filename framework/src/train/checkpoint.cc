#include "posttrain/train/checkpoint.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "posttrain/core/status.h"
#include "posttrain/core/text_file.h"
#include "posttrain/model/hf_model.h"
#include "posttrain/model/safetensors.h"
#include "posttrain/core/atomic_file.h"

namespace posttrain {
namespace fs = std::filesystem;

namespace {

std::vector<std::pair<std::int64_t, fs::path>> Checkpoints(const std::string& output_dir) {
  std::vector<std::pair<std::int64_t, fs::path>> found;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(output_dir, ec)) {
    const std::string name = entry.path().filename().string();
    std::int64_t step = 0;
    if (entry.is_directory() && absl::StartsWith(name, "checkpoint-") &&
        absl::SimpleAtoi(name.substr(11), &step)) {
      found.push_back({step, entry.path()});
    }
  }
  std::sort(found.begin(), found.end());
  return found;
}

}  // namespace

absl::Status PrepareCheckpointDir(const std::string& output_dir, std::int64_t step) {
  const fs::path tmp = fs::path(output_dir) / absl::StrCat("checkpoint-", step, ".tmp");
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp / "fsdp", ec);
  if (ec) return absl::DataLossError(absl::StrCat("cannot create '", (tmp / "fsdp").string(), "': ", ec.message()));
  return absl::OkStatus();
}

absl::Status WriteCheckpointShard(const std::string& output_dir, std::int64_t step, int rank,
                                  const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
  const fs::path file = fs::path(output_dir) / absl::StrCat("checkpoint-", step, ".tmp") / "fsdp" / absl::StrCat("rank-", rank, ".safetensors");
  std::vector<std::pair<std::string, at::Tensor>> detached;
  for (const auto& [name, t] : tensors) detached.push_back({name, t.detach().contiguous()});
  return Annotate(SaveSafetensors(file.string(), detached), absl::StrCat("writing checkpoint-", step, " (earlier checkpoints are intact)"));
}

absl::Status SaveCheckpoint(const CausalLM* model, const SaveOptions& save,
                            const std::vector<std::pair<std::string, at::Tensor>>& optimizer,
                            const CheckpointContents& contents, const std::string& output_dir, std::int64_t step,
                            std::int64_t save_total_limit) {
  const fs::path final_dir = fs::path(output_dir) / absl::StrCat("checkpoint-", step);
  const fs::path tmp = fs::path(output_dir) / absl::StrCat("checkpoint-", step, ".tmp");
  std::error_code ec;
  if (model != nullptr) fs::remove_all(tmp, ec);  // sharded: the ranks' files are there already
  auto detached = [](const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
    std::vector<std::pair<std::string, at::Tensor>> out;
    for (const auto& [name, t] : tensors) out.push_back({name, t.detach()});
    return out;
  };
  absl::Status written = [&]() -> absl::Status {
    if (model != nullptr && contents.write_model) {
      fs::create_directories(tmp, ec);
      if (ec) return absl::DataLossError(absl::StrCat("cannot create '", tmp.string(), "': ", ec.message()));
      POSTTRAIN_RETURN_IF_ERROR(contents.write_model(tmp.string()));
      POSTTRAIN_RETURN_IF_ERROR(SaveSafetensors((tmp / "optimizer.safetensors").string(), optimizer));
    } else if (model != nullptr) {
      POSTTRAIN_RETURN_IF_ERROR(SaveCausalLM(*model, tmp.string(), save));
      POSTTRAIN_RETURN_IF_ERROR(SaveSafetensors((tmp / "optimizer.safetensors").string(), optimizer));
    }
    if (!contents.trainer_params.empty()) {
      POSTTRAIN_RETURN_IF_ERROR(
          SaveSafetensors((tmp / "trainer_params.safetensors").string(), detached(contents.trainer_params)));
    }
    if (!contents.trainer_state_tensors.empty()) {
      POSTTRAIN_RETURN_IF_ERROR(
          SaveSafetensors((tmp / "trainer_state.safetensors").string(), detached(contents.trainer_state_tensors)));
    }
    if (!contents.generation.is_null()) {
      POSTTRAIN_RETURN_IF_ERROR(WriteFileAtomic((tmp / "generation.json").string(), contents.generation.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n"));
    }
    for (size_t k = 0; k < contents.other_ranks.size(); ++k) {
      const RankContents& r = contents.other_ranks[k];
      if (r.trainer_state_tensors.empty() && r.generation.is_null()) continue;
      const fs::path dir = tmp / absl::StrCat("rank-", k + 1);
      fs::create_directories(dir, ec);
      if (ec) return absl::DataLossError(absl::StrCat("cannot create '", dir.string(), "': ", ec.message()));
      if (!r.trainer_state_tensors.empty()) {
        POSTTRAIN_RETURN_IF_ERROR(SaveSafetensors((dir / "trainer_state.safetensors").string(), detached(r.trainer_state_tensors)));
      }
      if (!r.generation.is_null()) {
        POSTTRAIN_RETURN_IF_ERROR(WriteFileAtomic((dir / "generation.json").string(), r.generation.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n"));
      }
    }
    return WriteFileAtomic((tmp / "trainer_state.json").string(), contents.trainer_state.dump(2) + "\n");
  }();
  if (!written.ok()) {
    // Disk full, a read-only directory: the half-written checkpoint goes, the
    // earlier ones stay as they were.
    fs::remove_all(tmp, ec);
    return Annotate(written, absl::StrCat("writing checkpoint-", step, " (earlier checkpoints are intact)"));
  }
  fs::remove_all(final_dir, ec);
  fs::rename(tmp, final_dir, ec);
  if (ec) {
    const std::string why = ec.message();
    fs::remove_all(tmp, ec);
    return absl::DataLossError(absl::StrCat("writing checkpoint-", step, " (earlier checkpoints are intact): cannot rename '",
                                            tmp.string(), "' to '", final_dir.string(), "': ", why));
  }
  if (save_total_limit > 0) {
    auto all = Checkpoints(output_dir);
    for (size_t i = 0; i + static_cast<size_t>(save_total_limit) < all.size(); ++i) fs::remove_all(all[i].second, ec);
  }
  return absl::OkStatus();
}

absl::StatusOr<LoadedCheckpoint> LoadCheckpoint(const std::string& path, const std::string& output_dir,
                                                std::string* resolved_path, int rank) {
  fs::path dir = path;
  if (path == "latest") {
    auto all = Checkpoints(output_dir);
    if (all.empty()) {
      return absl::NotFoundError(absl::StrCat("resume_from_checkpoint = \"latest\": no checkpoint-<step> in '", output_dir, "'"));
    }
    dir = all.back().second;
  }
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return absl::NotFoundError(absl::StrCat("checkpoint '", dir.string(), "' does not exist"));
  *resolved_path = dir.string();
  LoadedCheckpoint loaded;
  if (fs::is_directory(dir / "fsdp", ec)) {
    // Sharded: every rank's file must be there (trainer_state.json says how many).
    for (int r = 0; fs::exists(dir / "fsdp" / absl::StrCat("rank-", r, ".safetensors"), ec); ++r) {
      loaded.shard_files.push_back((dir / "fsdp" / absl::StrCat("rank-", r, ".safetensors")).string());
    }
  } else if (fs::exists(dir / "adapter_model.safetensors", ec)) {
    POSTTRAIN_ASSIGN_OR_RETURN(SafetensorsFile adapter, SafetensorsFile::Open((dir / "adapter_model.safetensors").string()));
    for (const SafetensorsEntry& e : adapter.entries()) {
      POSTTRAIN_ASSIGN_OR_RETURN(loaded.tensors[e.name], adapter.Get(e.name));
    }
    POSTTRAIN_ASSIGN_OR_RETURN(SafetensorsFile opt, SafetensorsFile::Open((dir / "optimizer.safetensors").string()));
    for (const SafetensorsEntry& e : opt.entries()) {
      POSTTRAIN_ASSIGN_OR_RETURN(loaded.optimizer[e.name], opt.Get(e.name));
    }
  } else {
    POSTTRAIN_ASSIGN_OR_RETURN(loaded.tensors, LoadSafetensorsDir(dir.string()));
    POSTTRAIN_ASSIGN_OR_RETURN(SafetensorsFile opt, SafetensorsFile::Open((dir / "optimizer.safetensors").string()));
    for (const SafetensorsEntry& e : opt.entries()) {
      POSTTRAIN_ASSIGN_OR_RETURN(loaded.optimizer[e.name], opt.Get(e.name));
    }
  }
  if (fs::exists(dir / "trainer_params.safetensors", ec)) {
    POSTTRAIN_ASSIGN_OR_RETURN(SafetensorsFile params, SafetensorsFile::Open((dir / "trainer_params.safetensors").string()));
    for (const SafetensorsEntry& e : params.entries()) {
      POSTTRAIN_ASSIGN_OR_RETURN(loaded.trainer_params[e.name], params.Get(e.name));
    }
  }
  // A rank's own state, where the checkpoint has it.
  const fs::path rank_dir = dir / absl::StrCat("rank-", rank);
  const fs::path state_dir = rank > 0 && fs::is_directory(rank_dir, ec) ? rank_dir : dir;
  if (fs::exists(state_dir / "trainer_state.safetensors", ec)) {
    POSTTRAIN_ASSIGN_OR_RETURN(SafetensorsFile state, SafetensorsFile::Open((state_dir / "trainer_state.safetensors").string()));
    for (const SafetensorsEntry& e : state.entries()) {
      POSTTRAIN_ASSIGN_OR_RETURN(loaded.trainer_state_tensors[e.name], state.Get(e.name));
    }
  }
  if (fs::exists(state_dir / "generation.json", ec)) {
    POSTTRAIN_ASSIGN_OR_RETURN(std::string text, ReadTextFile((state_dir / "generation.json").string()));
    loaded.generation = nlohmann::json::parse(text, nullptr, false);
    if (loaded.generation.is_discarded()) {
      return absl::DataLossError(absl::StrCat("'", (state_dir / "generation.json").string(), "' is not valid JSON"));
    }
  }
  POSTTRAIN_ASSIGN_OR_RETURN(std::string state, ReadTextFile((dir / "trainer_state.json").string()));
  loaded.trainer_state = nlohmann::json::parse(state, nullptr, false);
  if (loaded.trainer_state.is_discarded() || !loaded.trainer_state.contains("global_step")) {
    return absl::DataLossError(absl::StrCat("'", (dir / "trainer_state.json").string(), "' is not a trainer state"));
  }
  if (loaded.trainer_state.contains("fsdp_world_size")) {
    const auto expected = loaded.trainer_state["fsdp_world_size"].get<size_t>();
    if (loaded.shard_files.size() != expected) {
      return absl::DataLossError(absl::StrCat("checkpoint '", dir.string(), "' was written by ", expected, " ranks but holds ",
                                              loaded.shard_files.size(), " of their shard files (fsdp/rank-<r>.safetensors)"));
    }
  }
  return loaded;
}

}  // namespace posttrain

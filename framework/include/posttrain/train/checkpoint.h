// Checkpoints and saved models of a training run.
//
//   output_dir/checkpoint-<step>/   config.json, generation_config.json,
//                                   model.safetensors (+ tokenizer files): a loadable
//                                   Hugging Face model, plus
//                                   optimizer.safetensors (AdamW state by name),
//                                   trainer_params.safetensors (the trainer's own
//                                   parameters, e.g. PPO's value head; if any),
//                                   trainer_state.safetensors (Trainer::State: running
//                                   means, tensors fixed for a generation's reuse; if any),
//                                   generation.json (the rollouts and rewards of a
//                                   generation still being reused; if any) and
//                                   trainer_state.json (global_step, epoch, metric
//                                   sums of the open logging window, ...), last
//                                   rank-<r>/ (data parallel, r >= 1): that rank's
//                                   trainer_state.safetensors and generation.json
//   output_dir/checkpoint-<step>/   with FSDP-style sharding instead of the model and
//                                   optimizer.safetensors: fsdp/rank-<r>.safetensors,
//                                   rank r's parameter shards and optimizer state,
//                                   each written by its rank; trainer_state.json
//                                   ("fsdp_world_size") is written last
//   output_dir/checkpoint-<step>/   with an adapter: adapter_config.json and
//                                   adapter_model.safetensors (PEFT's) instead of the
//                                   model; optimizer.safetensors for the adapter only
//   output_dir/final/               the model alone (with an adapter: the adapter)
//
// Each checkpoint is written into `checkpoint-<step>.tmp/` (every file fsynced) and
// then renamed, so a run killed at any moment leaves only complete checkpoints.
// Resuming restores the weights, the optimizer state, the trainer's state, an
// unfinished generation and the step; the data order, the sampling seeds and the
// schedule are functions of (seed, step), so the run continues exactly.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "posttrain/model/causal_lm.h"
#include "posttrain/model/hf_model.h"
#include "posttrain/train/adamw.h"

namespace posttrain {

// What one rank (r >= 1) of a data-parallel run carries for itself.
struct RankContents {
  std::vector<std::pair<std::string, at::Tensor>> trainer_state_tensors;
  nlohmann::json generation;  // null: none
};

// What a checkpoint holds besides the model.
struct CheckpointContents {
  std::vector<std::pair<std::string, at::Tensor>> trainer_params;  // trainer_params.safetensors
  std::vector<std::pair<std::string, at::Tensor>> trainer_state_tensors;  // trainer_state.safetensors
  nlohmann::json trainer_state;  // trainer_state.json; must hold "global_step"
  nlohmann::json generation;     // generation.json; null: none
  std::vector<RankContents> other_ranks;  // rank-1/, rank-2/, ...
  // Writes the trained weights into the checkpoint directory instead of the whole
  // model (an adapter: adapter_config.json + adapter_model.safetensors).
  std::function<absl::Status(const std::string& dir)> write_model;
};

// The model is written by SaveCausalLM with `save` (extras, architecture, tokenizer).
// `optimizer` is AdamW::StateDict(). `model` null: a sharded checkpoint, whose
// ranks have written their shards (WriteCheckpointShard) into the directory
// PrepareCheckpointDir made; this writes the rest and makes it complete.
absl::Status SaveCheckpoint(const CausalLM* model, const SaveOptions& save,
                            const std::vector<std::pair<std::string, at::Tensor>>& optimizer,
                            const CheckpointContents& contents, const std::string& output_dir, std::int64_t step,
                            std::int64_t save_total_limit);

// Rank 0, before the ranks write their shards: an empty checkpoint-<step>.tmp/.
absl::Status PrepareCheckpointDir(const std::string& output_dir, std::int64_t step);
// Each rank: its tensors into checkpoint-<step>.tmp/fsdp/rank-<rank>.safetensors (fsynced).
absl::Status WriteCheckpointShard(const std::string& output_dir, std::int64_t step, int rank,
                                  const std::vector<std::pair<std::string, at::Tensor>>& tensors);

struct LoadedCheckpoint {
  std::map<std::string, at::Tensor> tensors;    // model.safetensors (or adapter_model.safetensors)
  std::map<std::string, at::Tensor> optimizer;  // optimizer.safetensors
  std::map<std::string, at::Tensor> trainer_params;  // trainer_params.safetensors (may be absent)
  std::map<std::string, at::Tensor> trainer_state_tensors;  // trainer_state.safetensors (may be absent)
  nlohmann::json trainer_state;
  nlohmann::json generation;  // null if absent
  // A sharded checkpoint: fsdp/rank-<r>.safetensors for r = 0 .. size-1 (then
  // `tensors` and `optimizer` are empty).
  std::vector<std::string> shard_files;
};

// `path` is a checkpoint directory, or "latest" with `output_dir` to pick the
// newest checkpoint-<n> there. NotFound if there is none. `rank` >= 1 reads that
// rank's trainer state and generation from rank-<rank>/ where the checkpoint has
// one (else the top-level ones: a run resumed on more ranks than it was saved from).
absl::StatusOr<LoadedCheckpoint> LoadCheckpoint(const std::string& path, const std::string& output_dir,
                                                std::string* resolved_path, int rank = 0);

}  // namespace posttrain

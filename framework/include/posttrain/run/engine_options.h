// The engine's options as it reads them from a [trainer] table (their schema, with
// TRL's / transformers' names, defaults and ranges: posttrain/api/training_arguments.h).
//
// One source of truth per option: the engine reads only the options that act on
// this run — `ref_model` only for a trainer with a reference, `max_length` only for
// offline trainers (an online trainer's completions are the sampler's
// max_completion_length), `reward_workers` only with rewards — so a key the recipe
// sets that nothing reads is reported as an error (ComponentConfig::UnreadKeys)
// instead of being silently ignored.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "posttrain/api/trainer.h"
#include "posttrain/core/component_config.h"

namespace posttrain {

const ComponentSchema& EngineSchema();

struct EngineOptions {
  std::int64_t per_device_train_batch_size = 8;
  std::int64_t per_device_eval_batch_size = 8;
  std::int64_t gradient_accumulation_steps = 1;
  std::int64_t max_steps = -1;
  double num_train_epochs = 3.0;
  double learning_rate = 5e-5;
  double weight_decay = 0.0;
  double adam_beta1 = 0.9, adam_beta2 = 0.999, adam_epsilon = 1e-8;
  double max_grad_norm = 1.0;
  std::string lr_scheduler_type = "linear";
  double warmup_ratio = 0.0;
  std::int64_t warmup_steps = 0;
  std::int64_t logging_steps = 10;
  std::int64_t eval_steps = 0;
  bool eval_on_start = false;
  std::int64_t save_steps = 0;
  std::int64_t save_total_limit = -1;
  std::string resume_from_checkpoint;
  bool bf16 = false;
  bool disable_dropout = false;  // TRL's: train without the model's dropout
  bool use_cpu = false;  // HF's: the CPU even where CUDA is there
  bool full_determinism = false;  // HF's: deterministic kernels only (EnableFullDeterminism)
  std::int64_t ddp_timeout = 1800;  // seconds
  std::string fsdp;                  // "", "no_shard", "full_shard", "shard_grad_op"
  bool shuffle = true;
  std::int64_t max_length = 1024;  // -1 for online trainers (not read)
  std::int64_t max_prompt_length = 512;
  std::int64_t reward_workers = 8;
  std::string truncation_mode = "keep_end";
  std::string ref_model;
  std::string chat_template_path;  // TRL's name; "" = the tokenizer's template
  bool tensorboard = false;        // report_to holds "tensorboard" (or "all")
  std::string logging_dir;         // "" = <output_dir>/runs

  // Reads the options that act for a trainer with `needs` (their ranges were
  // checked with the recipe). A StatusOr so that checks across options, which a
  // schema range cannot express, have a place to report.
  static absl::StatusOr<EngineOptions> FromConfig(const ComponentConfig& config, const TrainerNeeds& needs);
};

}  // namespace posttrain

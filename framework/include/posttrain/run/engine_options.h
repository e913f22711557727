// The engine's options: the loop every trainer shares (TRL's TrainingArguments
// names and defaults). They are accepted in every [trainer] table on top of the
// trainer's own options, and `posttrain describe <trainer>` lists them.
#pragma once

#include <cstdint>

#include "posttrain/core/component_config.h"

namespace posttrain {

const ComponentSchema& EngineSchema();

struct EngineOptions {
  std::int64_t per_device_train_batch_size = 8;  // examples per step
  std::int64_t max_steps = -1;                   // > 0 overrides num_train_epochs
  double num_train_epochs = 3.0;                 // passes over the training data
  std::int64_t logging_steps = 10;               // metrics.jsonl line every N steps
  bool shuffle = true;                           // reshuffle the data every epoch

  static EngineOptions FromConfig(const ComponentConfig& config);
};

}  // namespace posttrain

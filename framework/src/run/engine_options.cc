#include "posttrain/run/engine_options.h"

namespace posttrain {

const ComponentSchema& EngineSchema() {
  static const ComponentSchema* schema = new ComponentSchema(
      ComponentSchema("The engine's loop, shared by every trainer.")
          .Int("per_device_train_batch_size", 8, "Examples (prompts, pairs) per step.")
          .Int("max_steps", -1,
               "Total optimisation steps; if > 0 it overrides num_train_epochs.")
          .Float("num_train_epochs", 3.0, "Passes over the training data.")
          .Int("logging_steps", 10, "Write a metrics.jsonl line every this many steps.")
          .Bool("shuffle", true, "Reshuffle the training data every epoch (seeded)."));
  return *schema;
}

EngineOptions EngineOptions::FromConfig(const ComponentConfig& config) {
  EngineOptions options;
  options.per_device_train_batch_size = config.GetInt("per_device_train_batch_size");
  options.max_steps = config.GetInt("max_steps");
  options.num_train_epochs = config.GetFloat("num_train_epochs");
  options.logging_steps = config.GetInt("logging_steps");
  options.shuffle = config.GetBool("shuffle");
  return options;
}

}  // namespace posttrain

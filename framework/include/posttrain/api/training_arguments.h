// The options every trainer accepts besides its own: the engine's loop (the names
// and defaults of transformers' TrainingArguments as TRL uses them). The registry
// adds them to each trainer's schema, so a [trainer] table holds both, and
// `posttrain describe <trainer>` lists them with their ranges. A trainer may
// redeclare one with its own default (TRL's DPOConfig does the same for
// learning_rate). The engine reads them (posttrain/run/engine_options.h).
#pragma once

#include "posttrain/core/component_config.h"

namespace posttrain {

const ComponentSchema& TrainingArgumentsSchema();

}  // namespace posttrain

// Saved adapters: loading one onto a model by its own config (PEFT's
// adapter_config.json), for training further, evaluating, generating or merging.
//
//   POSTTRAIN_ASSIGN_OR_RETURN(std::unique_ptr<Adapter> lora, LoadSavedAdapter(host.registry(), "runs/x/final", *model));
//   model->set_adapter(lora.get());          // or: lora->MergeInto(*model)
//
// The adapter kind is the config's peft_type in lower case ("LORA" → plugin "lora");
// its options are the config's keys the plugin's schema declares (PEFT's names), the
// rest of PEFT's bookkeeping is left to the plugin's Load, which refuses settings
// it does not implement by name.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "posttrain/api/adapter.h"
#include "posttrain/model/causal_lm.h"
#include "posttrain/plugin/registry.h"

namespace posttrain {

// Creates, attaches (fp32 weights on the model's device) and loads the adapter saved
// in `dir` for `model`; does not install it. NotFound without adapter_config.json,
// InvalidArgument for an unknown peft_type or mismatched shapes.
absl::StatusOr<std::unique_ptr<Adapter>> LoadSavedAdapter(const Registry& registry, const std::string& dir, CausalLM& model);

// Whether `dir` holds a saved adapter (adapter_config.json).
bool IsAdapterDir(const std::string& dir);

}  // namespace posttrain

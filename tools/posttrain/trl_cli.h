// The TRL-style command line: `posttrain sft|dpo|grpo|... [--config recipe.toml]
// [--model_name_or_path P] [--dataset_name P] [--output_dir D] [--<key> V ...]`.
// A TRL user's command line works after changing `trl` to `posttrain`: the flags
// become a recipe, validated like any recipe and saved with the run as
// recipe.resolved.toml.
//
//   flag                                      recipe
//   --config F                                the recipe F, the flags applied over it
//   --model_name_or_path P                    [model] path
//   --dataset_name P                          [data] path (a local .jsonl[.gz] or .txt;
//                                             nothing downloads), type from the suffix
//   --output_dir D, --seed N                  top level (default output_dir: runs/<trainer>)
//   --use_peft, --lora_r, --lora_alpha,       [peft] type = "lora", r, lora_alpha,
//   --lora_dropout, --lora_target_modules     lora_dropout, target_modules
//   --reward_funcs a b ...                    one [[rewards]] table per name
//   --<key> V (V W ... for a list)            every one of [trainer], [data], [sampler],
//                                             [peft] whose plugin has option <key>
// `--key=value` works too; a flag without a value is `true`. An online trainer gets
// the default sampler. An unknown flag is an error with a did-you-mean.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "posttrain/plugin/registry.h"
#include "posttrain/recipe/recipe.h"

namespace posttrain::cli {

// The recipe for `posttrain <trainer> <args...>`.
absl::StatusOr<Recipe> CommandLineRecipe(const Registry& registry, const std::string& trainer,
                                         const std::vector<std::string>& args);

}  // namespace posttrain::cli

// The engine: runs a validated recipe end to end. The loop lives here once; a
// trainer plugin only defines its step.
//
//   load data (split eval_size), the trainer, [model] (+ reference), tokenize (oneTBB)
//   for step in 1..max_steps:                       (from a checkpoint's step on resume)
//     repeat gradient_accumulation_steps times:
//       batch    ← next per_device_train_batch_size examples (reshuffled every epoch)
//       rollouts ← sampler(batch, num_generations)            if the trainer needs them
//       rewards  ← RewardPipeline(batch, rollouts)  (oneTBB)  if the trainer needs them
//       loss     ← trainer.Step(...)   (bf16 autocast if asked); backward(loss / GA)
//     clip to max_grad_norm; AdamW at the scheduled learning rate
//     every logging_steps: metrics.jsonl (window means), completions.jsonl, progress
//     every eval_steps and at the end: eval_* metrics on the held-out examples
//     every save_steps: checkpoint-<step>/ (atomic)
//   final/: the trained model in Hugging Face format
//
//   POSTTRAIN_ASSIGN_OR_RETURN(RunResult result, RunRecipe(recipe, host.registry()));
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "posttrain/plugin/registry.h"
#include "posttrain/recipe/recipe.h"

namespace posttrain {

struct RunResult {
  std::string output_dir;
  std::int64_t steps = 0;
  std::int64_t num_train_examples = 0;
  // Each metric's mean over the whole run.
  std::map<std::string, double> mean_metrics;
  // A few (prompt, completion) pairs of the first and the last step, for a look
  // at the end (online trainers).
  std::vector<std::pair<std::string, std::string>> first_completions;
  std::vector<std::pair<std::string, std::string>> sample_completions;
  // The first and the last logged metrics (window means): before and after.
  std::map<std::string, double> first_metrics, last_metrics;
  // output_dir/final, when a model was trained.
  std::string final_model_dir;
};

// Everything `RunRecipe` checks before its first step — the recipe, every
// component's creation, option ranges and options that nothing reads, the data,
// the model and tokenizer files, the reference — without writing anything.
absl::Status CheckRecipe(const Recipe& recipe, const Registry& registry);

// Validates the recipe, creates the run directory and runs it. Errors name the
// component and the input that failed; what was written before stays on disk.
absl::StatusOr<RunResult> RunRecipe(const Recipe& recipe, const Registry& registry);

}  // namespace posttrain

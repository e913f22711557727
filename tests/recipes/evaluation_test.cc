// Every trainer evaluates on held-out data and runs to final/: offline trainers
// report eval_loss and their metrics; online trainers generate on the eval prompts
// and score them with the rewards, as TRL does (eval_reward,
// eval_rewards/<name>/mean, eval_completions/mean_length).
#include <filesystem>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "test_support.h"

namespace posttrain {
namespace {

struct EvalCase {
  const char* name;
  const char* recipe;
  const char* overrides;
  std::vector<const char*> eval_keys;
};

void PrintTo(const EvalCase& c, std::ostream* os) { *os << c.name; }

class EvaluationTest : public ::testing::TestWithParam<EvalCase> {};

TEST_P(EvaluationTest, ARecipeWithEvalDataRunsToFinal) {
  const EvalCase& c = GetParam();
  const std::string dir = testing::TempDir(absl::StrCat("eval_", c.name));
  std::string out;
  ASSERT_EQ(testing::RunCommand(absl::StrCat("cd ", testing::SourceDir(), " && ", testing::CliPath(), " run ", c.recipe,
                                             " output_dir=", dir, " model.path=", testing::Stories260KDir(),
                                             " trainer.max_steps=2 trainer.eval_steps=1 trainer.logging_steps=1 ", c.overrides),
                                &out),
            0)
      << out;
  EXPECT_TRUE(std::filesystem::exists(dir + "/final/model.safetensors"));
  std::istringstream lines(testing::ReadFile(dir + "/metrics.jsonl"));
  int evaluations = 0;
  for (std::string line; std::getline(lines, line);) {
    nlohmann::json row = nlohmann::json::parse(line);
    if (!row.contains(c.eval_keys.front())) continue;
    ++evaluations;
    for (const char* key : c.eval_keys) {
      ASSERT_TRUE(row.contains(key)) << key << " in " << line;
      EXPECT_TRUE(std::isfinite(row[key].get<double>())) << key;
    }
  }
  EXPECT_EQ(evaluations, 2) << "evaluations at steps 1 and 2";
}

// Online recipes hold out 4 prompts; offline ones have [eval_data], cut short.
INSTANTIATE_TEST_SUITE_P(
    EveryTrainer, EvaluationTest,
    ::testing::Values(
        EvalCase{"grpo", "recipes/grpo/stories260K_keyword.toml",
                 "data.eval_size=4 trainer.per_device_train_batch_size=2 trainer.num_generations=4 "
                 "sampler.max_completion_length=16 trainer.max_completion_length=16",
                 {"eval_reward", "eval_reward_std", "eval_rewards/keyword/mean", "eval_rewards/repetition/mean",
                  "eval_completions/mean_length"}},
        EvalCase{"rloo", "recipes/rloo/stories260K_keyword.toml",
                 "data.eval_size=4 trainer.per_device_train_batch_size=2 trainer.num_generations=4 "
                 "sampler.max_completion_length=16",
                 {"eval_reward", "eval_rewards/keyword/mean", "eval_completions/mean_length"}},
        EvalCase{"ppo", "recipes/ppo/stories260K_keyword.toml",
                 "data.eval_size=4 trainer.per_device_train_batch_size=4 sampler.max_completion_length=16",
                 {"eval_reward", "eval_rewards/keyword/mean", "eval_completions/mean_length"}},
        EvalCase{"online_dpo", "recipes/online_dpo/stories260K_keyword.toml",
                 "data.eval_size=4 trainer.per_device_train_batch_size=2 sampler.max_completion_length=16",
                 {"eval_reward", "eval_rewards/keyword/mean", "eval_completions/mean_length"}},
        EvalCase{"sft", "recipes/sft/stories260K_gsm8k.toml",
                 "eval_data.max_examples=4 trainer.per_device_train_batch_size=2 trainer.max_length=96 "
                 "trainer.max_prompt_length=48 trainer.eval_on_start=false",
                 {"eval_loss", "eval_mean_token_accuracy"}},
        EvalCase{"dpo", "recipes/dpo/stories260K_hh_harmless.toml",
                 "eval_data.max_examples=4 data.max_examples=16 trainer.per_device_train_batch_size=2 "
                 "trainer.max_length=96 trainer.max_prompt_length=48 trainer.eval_on_start=false",
                 {"eval_loss", "eval_rewards/accuracies", "eval_rewards/margins"}},
        EvalCase{"kto", "recipes/kto/stories260K_hh_harmless.toml",
                 "eval_data.max_examples=4 data.max_examples=16 trainer.per_device_train_batch_size=2 "
                 "trainer.max_length=96 trainer.max_prompt_length=48 trainer.eval_on_start=false",
                 {"eval_loss", "eval_kl"}},
        EvalCase{"orpo", "recipes/orpo/stories260K_hh_harmless.toml",
                 "eval_data.max_examples=4 data.max_examples=16 trainer.per_device_train_batch_size=2 "
                 "trainer.max_length=96 trainer.max_prompt_length=48 trainer.eval_on_start=false",
                 {"eval_loss", "eval_nll_loss"}},
        EvalCase{"cpo_simpo", "recipes/cpo/stories260K_hh_harmless_simpo.toml",
                 "eval_data.max_examples=4 data.max_examples=16 trainer.per_device_train_batch_size=2 "
                 "trainer.max_length=96 trainer.max_prompt_length=48 trainer.eval_on_start=false",
                 {"eval_loss"}},
        EvalCase{"reward", "recipes/reward/stories260K_hh_harmless.toml",
                 "eval_data.max_examples=4 data.max_examples=16 trainer.per_device_train_batch_size=2 "
                 "trainer.max_length=96 trainer.max_prompt_length=48 trainer.eval_on_start=false",
                 {"eval_loss", "eval_rewards/accuracies"}}),
    [](const ::testing::TestParamInfo<EvalCase>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace posttrain

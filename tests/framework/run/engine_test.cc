#include "posttrain/run/engine.h"

#include <filesystem>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "test_support.h"

namespace posttrain {
namespace {

using ::testing::HasSubstr;

std::vector<nlohmann::json> ReadJsonl(const std::string& path) {
  std::vector<nlohmann::json> rows;
  std::istringstream in(testing::ReadFile(path));
  for (std::string line; std::getline(in, line);) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

// 10 prompt-completion examples; completion i mentions "dog" iff i is even.
std::string MakeData(const std::string& dir) {
  std::string data;
  for (int i = 0; i < 10; ++i) {
    data += nlohmann::json{{"prompt", "p" + std::to_string(i)},
                           {"completion", i % 2 == 0 ? "a dog" : "a cat"}}
                .dump() +
            "\n";
  }
  testing::WriteFile(dir + "/data.jsonl", data);
  return dir + "/data.jsonl";
}

std::string RecipeText(const std::string& dir) {
  return absl::StrCat("output_dir = '", dir, "/run'\n", "[data]\ntype = 'jsonl'\npath = '",
                      MakeData(dir),
                      "'\n[sampler]\ntype = 'dataset'\n"
                      "[[rewards]]\ntype = 'keyword'\nkeywords = ['dog']\n"
                      "[trainer]\ntype = 'reward_eval'\nper_device_train_batch_size = 4\n"
                      "num_train_epochs = 2.0\nlogging_steps = 2\nnum_generations = 2\n");
}

TEST(EngineTest, RunsARecipeAndWritesTheRunDirectory) {
  const std::string dir = testing::TempDir("engine");
  absl::StatusOr<Recipe> recipe = Recipe::Parse(RecipeText(dir), "engine.toml");
  ASSERT_TRUE(recipe.ok()) << recipe.status();
  absl::StatusOr<RunResult> result = RunRecipe(*recipe, testing::BuiltinHost().registry());
  ASSERT_TRUE(result.ok()) << result.status();
  // 10 examples, batch 4 → 3 steps per epoch (4, 4, 2), 2 epochs → 6 steps.
  EXPECT_EQ(result->steps, 6);
  std::vector<nlohmann::json> metrics = ReadJsonl(dir + "/run/metrics.jsonl");
  ASSERT_EQ(metrics.size(), 3u);  // steps 2, 4, 6
  EXPECT_EQ(metrics[0]["step"], 2);
  EXPECT_EQ(metrics[2]["step"], 6);
  EXPECT_NEAR(metrics[2]["epoch"].get<double>(), 2.0, 1e-9);
  EXPECT_TRUE(metrics[0].contains("rewards/keyword/mean"));
  std::vector<nlohmann::json> completions = ReadJsonl(dir + "/run/completions.jsonl");
  // Logged at steps 2, 4, 6, whose batches hold 4, 4 and 2 prompts (the last batch
  // of each epoch is short).
  for (const auto& row : completions) {
    EXPECT_EQ(row["finish_reason"], "source");
    const bool dog = row["completion"] == "a dog";
    EXPECT_EQ(row["rewards"]["keyword"].get<double>(), dog ? 1.0 : 0.0);
  }
  EXPECT_EQ(completions.size(), 2u * (4 + 4 + 2));  // num_generations = 2
  EXPECT_THAT(testing::ReadFile(dir + "/run/recipe.resolved.toml"), HasSubstr("whole_word = true"));
  EXPECT_TRUE(std::filesystem::exists(dir + "/run/run.log"));
}

// A reward that fails stops the step naming the reward and the sample, unless the
// recipe says on_error = "skip": then its samples are skipped and counted.
TEST(EngineTest, AFailingRewardStopsTheRunOrIsSkippedAndCounted) {
  const std::string dir = testing::TempDir("engine_reward_error");
  const std::string base = absl::StrCat(
      "output_dir = '", dir, "/run'\noverwrite_output_dir = true\n[data]\ntype = 'jsonl'\npath = '", MakeData(dir),
      "'\n[sampler]\ntype = 'dataset'\n[[rewards]]\ntype = 'keyword'\nkeywords = ['dog']\n"
      "[[rewards]]\ntype = 'command'\ncommand = ['python3', '-c', 'import sys; sys.exit(\"judge offline\")']\n");
  const std::string trainer = "[trainer]\ntype = 'reward_eval'\nper_device_train_batch_size = 4\nmax_steps = 2\n";
  absl::StatusOr<Recipe> stop = Recipe::Parse(base + trainer, "stop.toml");
  ASSERT_TRUE(stop.ok()) << stop.status();
  absl::Status failed = RunRecipe(*stop, testing::BuiltinHost().registry()).status();
  ASSERT_FALSE(failed.ok());
  EXPECT_THAT(std::string(failed.message()), HasSubstr("reward 'command'"));
  EXPECT_THAT(std::string(failed.message()), HasSubstr("data.jsonl:"));
  EXPECT_THAT(std::string(failed.message()), HasSubstr("judge offline"));

  absl::StatusOr<Recipe> skip = Recipe::Parse(base + "on_error = 'skip'\n" + trainer, "skip.toml");
  ASSERT_TRUE(skip.ok()) << skip.status();
  absl::StatusOr<RunResult> result = RunRecipe(*skip, testing::BuiltinHost().registry());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_DOUBLE_EQ(result->mean_metrics.at("rewards/command/skipped"), 4.0);  // every sample of each step
  // The skipped reward adds nothing to the total.
  EXPECT_DOUBLE_EQ(result->mean_metrics.at("reward"), result->mean_metrics.at("rewards/keyword/mean"));
}

TEST(EngineTest, RefusesToOverwriteAnExistingRun) {
  const std::string dir = testing::TempDir("engine");
  absl::StatusOr<Recipe> recipe = Recipe::Parse(RecipeText(dir), "engine.toml");
  ASSERT_TRUE(recipe.ok());
  ASSERT_TRUE(RunRecipe(*recipe, testing::BuiltinHost().registry()).ok());
  const std::string before = testing::ReadFile(dir + "/run/metrics.jsonl");
  absl::Status s = RunRecipe(*recipe, testing::BuiltinHost().registry()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("already holds a run"));
  EXPECT_EQ(testing::ReadFile(dir + "/run/metrics.jsonl"), before);  // nothing lost
}

TEST(EngineTest, SameSeedSameDataOrder) {
  std::vector<std::string> runs;
  for (int i = 0; i < 2; ++i) {
    const std::string dir = testing::TempDir("run" + std::to_string(i));
    absl::StatusOr<Recipe> recipe = Recipe::Parse(RecipeText(dir), "engine.toml");
    ASSERT_TRUE(recipe.ok());
    ASSERT_TRUE(RunRecipe(*recipe, testing::BuiltinHost().registry()).ok());
    runs.push_back(testing::ReadFile(dir + "/run/completions.jsonl"));
  }
  EXPECT_EQ(runs[0], runs[1]);
}

TEST(EngineTest, MalformedDataStopsTheRunNamingFileAndLine) {
  const std::string dir = testing::TempDir("engine");
  std::string text = RecipeText(dir);
  testing::WriteFile(dir + "/data.jsonl", "{\"prompt\": \"a\", \"completion\": \"b\"}\n{oops\n");
  absl::StatusOr<Recipe> recipe = Recipe::Parse(text, "engine.toml");
  ASSERT_TRUE(recipe.ok());
  absl::Status s = RunRecipe(*recipe, testing::BuiltinHost().registry()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("data.jsonl:2: malformed JSON"));
}

}  // namespace
}  // namespace posttrain

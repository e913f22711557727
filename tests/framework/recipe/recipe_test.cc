#include "posttrain/recipe/recipe.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test_support.h"

namespace posttrain {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// The built-in plugins plus the fixture trainer with DPO-style options.
const Registry& TestRegistry() {
  static PluginHost* host = [] {
    auto* h = new PluginHost();
    EXPECT_TRUE(h->LoadDirectory(testing::BuiltinPluginDir()).ok());
    EXPECT_TRUE(h->LoadDirectory(testing::FixturePluginDir("preference")).ok());
    return h;
  }();
  return host->registry();
}

constexpr const char* kGood = R"(
output_dir = "runs/x"
seed = 7

[data]
type = "jsonl"
path = "data.jsonl"

[trainer]
type = "fixture_preference"
beta = 0.1
)";

absl::Status Validate(const std::string& text, const std::vector<std::string>& overrides = {}) {
  absl::StatusOr<Recipe> recipe = Recipe::Parse(text, "recipe.toml", overrides);
  if (!recipe.ok()) return recipe.status();
  return recipe->Validate(TestRegistry());
}

TEST(RecipeTest, AValidRecipeValidates) {
  absl::StatusOr<Recipe> recipe = Recipe::Parse(kGood, "recipe.toml");
  ASSERT_TRUE(recipe.ok()) << recipe.status();
  EXPECT_TRUE(recipe->Validate(TestRegistry()).ok()) << recipe->Validate(TestRegistry());
  EXPECT_EQ(recipe->output_dir(), "runs/x");
  EXPECT_EQ(recipe->seed(), 7);
}

TEST(RecipeTest, MisspeltKeyNamesFileTableKeyAndSuggestion) {
  std::string text = kGood;
  text.replace(text.find("beta = 0.1"), 10, "betta = 0.1");
  absl::Status s = Validate(text);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("recipe.toml:11:1: trainer.betta: unknown option (did you mean 'beta'?)"));
}

TEST(RecipeTest, UnknownPluginListsKnownNamesOfItsKind) {
  std::string text = kGood;
  text.replace(text.find("\"jsonl\""), 7, "\"parquet\"");
  absl::Status s = Validate(text);
  EXPECT_THAT(std::string(s.message()), HasSubstr("data.type: unknown data_adapter 'parquet'"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("known data_adapters: jsonl, text"));
}

TEST(RecipeTest, SyntaxErrorShowsLineAndColumn) {
  absl::StatusOr<Recipe> recipe = Recipe::Parse("seed = 1\n[trainer\ntype = 'x'\n", "bad.toml");
  ASSERT_FALSE(recipe.ok());
  EXPECT_EQ(recipe.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(recipe.status().message()), HasSubstr("bad.toml:2:9: TOML syntax error"));
}

TEST(RecipeTest, EveryErrorIsReportedAtOnce) {
  absl::Status s = Validate(R"(
sead = 1
[data]
type = "jsonl"
[trainer]
type = "fixture_preference"
beta = "high"
loss_type = "sigmod"
)");
  EXPECT_THAT(std::string(s.message()), HasSubstr("4 errors"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("recipe.toml:2:1: sead: unknown top-level key (did you mean 'seed'?)"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("data.path: required option"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("trainer.beta: expected float, got string"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("trainer.loss_type: 'sigmod' is not one of: sigmoid, ipo, hinge (did you mean 'sigmoid'?)"));
}

TEST(RecipeTest, MissingTablesAndTypes) {
  absl::Status s = Validate("[data]\npath = 'x'\n");
  EXPECT_THAT(std::string(s.message()), HasSubstr("data.type: missing"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("trainer: missing table [trainer]"));
}

TEST(RecipeTest, RewardsAreAnArrayOfTables) {
  std::string text = std::string(kGood) + "\n[[rewards]]\ntype = 'keyword'\nkeywords = ['dog']\nweight = 2\n"
                                          "\n[[rewards]]\ntype = 'length'\nwieght = 1\n";
  absl::Status s = Validate(text);
  EXPECT_THAT(std::string(s.message()), HasSubstr("rewards.1.wieght: unknown option (did you mean 'weight'?)"));
  EXPECT_THAT(std::string(s.message()), Not(HasSubstr("rewards.0")));
}

TEST(RecipeTest, OverridesReplaceAndAddValues) {
  absl::StatusOr<Recipe> recipe =
      Recipe::Parse(kGood, "recipe.toml", {"trainer.beta=0.25", "output_dir=runs/other", "seed=9"});
  ASSERT_TRUE(recipe.ok()) << recipe.status();
  ASSERT_TRUE(recipe->Validate(TestRegistry()).ok());
  absl::StatusOr<ComponentConfig> trainer = recipe->Component("trainer", TestRegistry());
  ASSERT_TRUE(trainer.ok());
  EXPECT_DOUBLE_EQ(trainer->GetFloat("beta"), 0.25);
  EXPECT_EQ(recipe->output_dir(), "runs/other");
  EXPECT_EQ(recipe->seed(), 9);
}

TEST(RecipeTest, OverrideErrorsSayTheyCameFromTheCommandLine) {
  absl::Status s = Validate(kGood, {"trainer.betta=3"});
  EXPECT_THAT(std::string(s.message()), HasSubstr("recipe.toml (command-line override): trainer.betta: unknown option"));
  absl::StatusOr<Recipe> bad = Recipe::Parse(kGood, "recipe.toml", {"no_equals_sign"});
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("not of the form table.key=value"));
  bad = Recipe::Parse(kGood, "recipe.toml", {"seed.x=1"});
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("'seed' is a value, not a table"));
}

TEST(RecipeTest, OverridesIndexArraysOfTables) {
  std::string text = std::string(kGood) + "\n[[rewards]]\ntype = 'keyword'\nkeywords = ['dog']\n";
  absl::StatusOr<Recipe> recipe = Recipe::Parse(text, "r.toml", {"rewards.0.weight=3"});
  ASSERT_TRUE(recipe.ok()) << recipe.status();
  absl::StatusOr<std::vector<Recipe::RewardEntry>> rewards = recipe->Rewards(TestRegistry());
  ASSERT_TRUE(rewards.ok()) << rewards.status();
  ASSERT_EQ(rewards->size(), 1u);
  EXPECT_DOUBLE_EQ((*rewards)[0].weight, 3.0);
  EXPECT_EQ((*rewards)[0].name, "keyword");
}

TEST(RecipeTest, ResolvedRecipeFillsDefaultsAndParsesBackTheSame) {
  absl::StatusOr<Recipe> recipe = Recipe::Parse(kGood, "recipe.toml", {"trainer.beta=0.3"});
  ASSERT_TRUE(recipe.ok());
  const std::string resolved = recipe->ResolvedToml(TestRegistry());
  EXPECT_THAT(resolved, HasSubstr("loss_type = 'sigmoid'"));
  EXPECT_THAT(resolved, HasSubstr("max_steps = -1"));
  absl::StatusOr<Recipe> again = Recipe::Parse(resolved, "resolved.toml");
  ASSERT_TRUE(again.ok()) << again.status();
  ASSERT_TRUE(again->Validate(TestRegistry()).ok()) << again->Validate(TestRegistry());
  EXPECT_DOUBLE_EQ(again->Component("trainer", TestRegistry())->GetFloat("beta"), 0.3);
  const std::string twice = again->ResolvedToml(TestRegistry());
  EXPECT_EQ(twice.substr(twice.find('\n')), resolved.substr(resolved.find('\n')));
}

TEST(RecipeTest, LoadFileReportsAMissingFile) {
  absl::StatusOr<Recipe> recipe = Recipe::LoadFile("/nonexistent/recipe.toml");
  EXPECT_EQ(recipe.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(recipe.status().message()), HasSubstr("/nonexistent/recipe.toml"));
}

TEST(RecipeTest, DefaultOutputDirComesFromTheFileName) {
  absl::StatusOr<Recipe> recipe = Recipe::Parse("[data]\n", "recipes/dpo/stories_hh.toml");
  ASSERT_TRUE(recipe.ok());
  EXPECT_EQ(recipe->output_dir(), "runs/stories_hh");
}

// Found by tests/fuzz/fuzz_recipe.cc: an override whose value is neither TOML nor
// valid text (a 0xff byte) threw out of Parse; now an error naming the override.
// The fuzzer's input is kept as tests/fuzz/regressions/recipe_override_invalid_utf8.
TEST(RecipeTest, AnOverrideThatIsNeitherTomlNorTextIsAnError) {
  const std::string input = testing::ReadFile(testing::SourceDir() + "/tests/fuzz/regressions/recipe_override_invalid_utf8");
  const size_t newline = input.find('\n');
  ASSERT_NE(newline, std::string::npos);
  absl::StatusOr<Recipe> r = Recipe::Parse(input.substr(newline + 1), "fuzz.toml", {input.substr(0, newline)});
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), ::testing::HasSubstr("command line: override '# SimPO"));
  absl::StatusOr<Recipe> bad = Recipe::Parse("[trainer]\ntype = \"sft\"\n", "r.toml", {"trainer.note=a\xff\x01b"});
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), ::testing::HasSubstr("the value is neither a TOML value nor text"));
}

}  // namespace
}  // namespace posttrain

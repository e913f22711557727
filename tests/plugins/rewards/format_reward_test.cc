#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "reward_test_util.h"
#include "test_support.h"

namespace posttrain {
namespace {

using ::testing::ElementsAre;

std::vector<float> Score(std::map<std::string, OptionValue> options, const std::vector<std::string>& completions) {
  auto reward = testing::CreateBuiltin<RewardFunction>("format", std::move(options));
  EXPECT_TRUE(reward.ok()) << reward.status();
  return *testing::ScoreRows(**reward, "p", completions, {nlohmann::json::object()});
}

TEST(FormatRewardTest, FullMatchByDefaultWithDotAll) {
  const std::string pattern = R"(<think>.*?</think>\s*<answer>.*?</answer>)";
  EXPECT_THAT(Score({{"pattern", pattern}},
                    {"<think>a\nb</think>\n<answer>4</answer>", "<think>a</think><answer>4</answer> trailing",
                     "x <think>a</think><answer>4</answer>", "<answer>4</answer>"}),
              ElementsAre(1, 0, 0, 0));
  EXPECT_THAT(Score({{"pattern", pattern}, {"full_match", false}},
                    {"<think>a</think><answer>4</answer> trailing", "x <think>a</think><answer>4</answer>"}),
              ElementsAre(1, 1));
  EXPECT_THAT(Score({{"pattern", std::string("a.b")}, {"dotall", false}}, {"a\nb", "a-b"}), ElementsAre(0, 1));
  EXPECT_THAT(Score({{"pattern", std::string("dog")}, {"case_insensitive", true}}, {"DOG", "cat"}), ElementsAre(1, 0));
}

TEST(FormatRewardTest, ABadPatternIsARecipeErrorWithTheOffset) {
  auto reward = testing::CreateBuiltin<RewardFunction>("format", {{"pattern", std::string("a(b")}});
  ASSERT_FALSE(reward.ok());
  EXPECT_THAT(std::string(reward.status().message()), ::testing::HasSubstr("pattern"));
  EXPECT_THAT(std::string(reward.status().message()), ::testing::HasSubstr("offset 3"));
}

}  // namespace
}  // namespace posttrain

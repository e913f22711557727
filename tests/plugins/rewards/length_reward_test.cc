#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test_support.h"

namespace posttrain {
namespace {

using ::testing::ElementsAre;
using ::testing::FloatEq;
using testing::CreateBuiltin;

std::vector<float> Score(std::map<std::string, OptionValue> options,
                         const std::vector<std::string>& completions) {
  auto reward = CreateBuiltin<RewardFunction>("length", std::move(options));
  EXPECT_TRUE(reward.ok()) << reward.status();
  const nlohmann::json metadata = nlohmann::json::object();
  std::vector<RewardInput> inputs;
  for (const std::string& c : completions) inputs.push_back({"", c, &metadata});
  return *(*reward)->Score(inputs);
}

TEST(LengthRewardTest, CountsWordsOrChars) {
  EXPECT_THAT(Score({}, {"one two  three", "", "  x\ny\t"}), ElementsAre(3, 0, 2));
  EXPECT_THAT(Score({{"unit", std::string("chars")}}, {"abc", "héllo"}), ElementsAre(3, 6));
}

TEST(LengthRewardTest, TargetGivesNegativeDistanceTimesScale) {
  // |3 - 5| * 0.5 = 1 ; |7 - 5| * 0.5 = 1 ; |5 - 5| = 0
  EXPECT_THAT(Score({{"target", 5.0}, {"scale", 0.5}}, {"a b c", "a b c d e f g", "a b c d e"}),
              ElementsAre(FloatEq(-1), FloatEq(-1), FloatEq(0)));
}

}  // namespace
}  // namespace posttrain

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test_support.h"

namespace posttrain {
namespace {

using ::testing::ElementsAre;
using testing::CreateBuiltin;

std::vector<float> Score(std::map<std::string, OptionValue> options,
                         const std::vector<std::string>& completions) {
  auto reward = CreateBuiltin<RewardFunction>("keyword", std::move(options));
  EXPECT_TRUE(reward.ok()) << reward.status();
  const nlohmann::json metadata = nlohmann::json::object();
  std::vector<RewardInput> inputs;
  for (const std::string& c : completions) inputs.push_back({"prompt", c, &metadata});
  absl::StatusOr<std::vector<float>> scores = (*reward)->Score(inputs);
  EXPECT_TRUE(scores.ok());
  return *scores;
}

TEST(KeywordRewardTest, WholeWordCaseInsensitiveByDefault) {
  EXPECT_THAT(Score({{"keywords", std::vector<std::string>{"dog"}}},
                    {"The Dog ran.", "hotdogs", "a dog", "dog", "cat", "dogma dog."}),
              ElementsAre(1, 0, 1, 1, 0, 1));
}

TEST(KeywordRewardTest, OptionsChangeMatching) {
  EXPECT_THAT(Score({{"keywords", std::vector<std::string>{"dog"}}, {"whole_word", false}},
                    {"hotdogs", "cat"}),
              ElementsAre(1, 0));
  EXPECT_THAT(Score({{"keywords", std::vector<std::string>{"Dog"}}, {"case_sensitive", true}},
                    {"dog", "Dog"}),
              ElementsAre(0, 1));
  EXPECT_THAT(Score({{"keywords", std::vector<std::string>{"cat", "dog"}}}, {"cat", "dog", "cow"}),
              ElementsAre(1, 1, 0));
}

TEST(KeywordRewardTest, EmptyKeywordListIsRefused) {
  auto reward = CreateBuiltin<RewardFunction>("keyword", {{"keywords", std::vector<std::string>{}}});
  EXPECT_EQ(reward.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace posttrain

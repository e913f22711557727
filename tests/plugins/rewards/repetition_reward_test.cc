#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test_support.h"

namespace posttrain {
namespace {

TEST(RepetitionRewardTest, DistinctNgramShareByHand) {
  auto reward = testing::CreateBuiltin<RewardFunction>("repetition", {{"ngram_size", std::int64_t{2}}});
  ASSERT_TRUE(reward.ok()) << reward.status();
  const nlohmann::json metadata = nlohmann::json::object();
  std::vector<RewardInput> in = {
      {"", "the dog ran", &metadata},                 // 2 bigrams, 2 distinct → 0
      {"", "dog dog dog dog dog", &metadata},         // 4 bigrams, 1 distinct → −(1 − 1/4)
      {"", "a b a b", &metadata},                     // "a b", "b a", "a b": 3, 2 distinct → −1/3
      {"", "one", &metadata},                         // fewer words than n → 0
      {"", "The DOG the dog", &metadata}};            // case-folded: 3 bigrams, 2 distinct
  auto scores = (*reward)->Score(in);
  ASSERT_TRUE(scores.ok());
  EXPECT_THAT(*scores, ::testing::ElementsAre(::testing::FloatEq(0.0f), ::testing::FloatEq(-0.75f),
                                               ::testing::FloatEq(-1.0f / 3), ::testing::FloatEq(0.0f),
                                               ::testing::FloatEq(-1.0f / 3)));
  EXPECT_EQ(testing::CreateBuiltin<RewardFunction>("repetition", {{"max_penalty", 0.5}}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace posttrain

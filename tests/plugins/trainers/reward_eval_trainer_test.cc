#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test_support.h"

namespace posttrain {
namespace {

TEST(RewardEvalTrainerTest, LogsTrlRewardMetrics) {
  auto trainer = testing::CreateBuiltin<Trainer>("reward_eval", {{"num_generations", std::int64_t{4}}});
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  EXPECT_TRUE((*trainer)->Needs().rollouts);
  EXPECT_EQ((*trainer)->Needs().num_generations, 4);
  RewardTable table;
  table.total = {1, 2, 3, 4};
  table.per_function["a"] = {0, 0, 1, 1};
  StepInput input;
  input.rewards = StepRewards(&table);
  absl::StatusOr<StepOutput> out = (*trainer)->Step(input);
  ASSERT_TRUE(out.ok());
  // mean 2.5; unbiased std of 1,2,3,4 = sqrt(5/3)
  EXPECT_DOUBLE_EQ(out->metrics.at("reward"), 2.5);
  EXPECT_NEAR(out->metrics.at("reward_std"), std::sqrt(5.0 / 3.0), 1e-12);
  EXPECT_DOUBLE_EQ(out->metrics.at("rewards/a/mean"), 0.5);
  EXPECT_NEAR(out->metrics.at("rewards/a/std"), std::sqrt(1.0 / 3.0), 1e-12);
}

}  // namespace
}  // namespace posttrain

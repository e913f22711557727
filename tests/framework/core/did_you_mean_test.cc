#include "posttrain/core/did_you_mean.h"

#include "gtest/gtest.h"

namespace posttrain {
namespace {

TEST(DidYouMeanTest, EditDistance) {
  EXPECT_EQ(EditDistance("beta", "beta"), 0);
  EXPECT_EQ(EditDistance("betta", "beta"), 1);   // one insertion
  EXPECT_EQ(EditDistance("btea", "beta"), 1);    // one transposition
  EXPECT_EQ(EditDistance("", "abc"), 3);
  EXPECT_EQ(EditDistance("kitten", "sitting"), 3);
}

TEST(DidYouMeanTest, ClosestMatch) {
  std::vector<std::string> keys = {"beta", "loss_type", "label_smoothing", "max_steps"};
  EXPECT_EQ(ClosestMatch("betta", keys), "beta");
  EXPECT_EQ(ClosestMatch("max_step", keys), "max_steps");
  EXPECT_EQ(ClosestMatch("losstype", keys), "loss_type");
  EXPECT_EQ(ClosestMatch("learning_rate", keys), "");
  EXPECT_EQ(DidYouMeanSuffix("betta", keys), " (did you mean 'beta'?)");
  EXPECT_EQ(DidYouMeanSuffix("zzzzzz", keys), "");
}

}  // namespace
}  // namespace posttrain

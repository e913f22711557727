#include "posttrain/losses/policy_gradient.h"

#include <cmath>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace posttrain {
namespace {

std::vector<float> Vec(const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

TEST(GroupAdvantagesTest, EveryScaleRewardsModeByHand) {
  // Groups of 4: {1, 0, 0, 1} (mean .5, unbiased std sqrt(1/3)) and {2, 2, 2, 2} (std 0).
  at::Tensor r = at::tensor({1.0f, 0.0f, 0.0f, 1.0f, 2.0f, 2.0f, 2.0f, 2.0f});
  const float s = std::sqrt(1.0f / 3.0f);
  EXPECT_THAT(Vec(*GroupAdvantages(r, 4, "none")), ::testing::ElementsAre(.5f, -.5f, -.5f, .5f, 0, 0, 0, 0));
  auto group = Vec(*GroupAdvantages(r, 4, "group"));
  EXPECT_NEAR(group[0], 0.5 / (s + 1e-4), 1e-5);
  EXPECT_NEAR(group[1], -0.5 / (s + 1e-4), 1e-5);
  EXPECT_EQ(group[4], 0.0f);  // a group of equal rewards has no signal
  // batch: mean 1.25; squared deviations .0625, 1.5625, 1.5625, .0625 and 4 × .5625; unbiased (n − 1 = 7)
  const double batch_std = std::sqrt((0.0625 + 1.5625 + 1.5625 + 0.0625 + 4 * 0.5625) / 7.0);
  EXPECT_NEAR(Vec(*GroupAdvantages(r, 4, "batch"))[0], 0.5 / (batch_std + 1e-4), 1e-5);
  EXPECT_FALSE(GroupAdvantages(r, 3, "group").ok());
  EXPECT_FALSE(GroupAdvantages(r, 4, "rank").ok());
}

TEST(GrpoLossTest, AggregationsByHand) {
  // Ratio 1 (logps = old), β = 0: ℓ_t = −A. Row 0 (A = 1) has 2 tokens, row 1 (A = −1) 3.
  at::Tensor logps = at::full({2, 3}, -1.0f), mask = at::tensor({1.0f, 1.0f, 0.0f, 1.0f, 1.0f, 1.0f}).view({2, 3});
  at::Tensor a = at::tensor({1.0f, -1.0f});
  GrpoLossOptions o;
  o.max_completion_length = 4;
  auto loss = [&](const std::string& type) {
    o.loss_type = type;
    return GrpoLoss(logps, logps, at::Tensor(), a, mask, o)->loss.item<double>();
  };
  EXPECT_NEAR(loss("grpo"), (-1.0 + 1.0) / 2, 1e-6);   // sequence means −1 and +1
  EXPECT_NEAR(loss("bnpo"), (-2.0 + 3.0) / 5, 1e-6);   // token mean
  EXPECT_NEAR(loss("dapo"), (-2.0 + 3.0) / 5, 1e-6);
  EXPECT_NEAR(loss("dr_grpo"), (-2.0 + 3.0) / (2 * 4), 1e-6);
  EXPECT_FALSE(GrpoLoss(logps, logps, at::Tensor(), a, mask, GrpoLossOptions{"ppo"}).ok());
}

TEST(GrpoLossTest, ClippingAndK3ByHand) {
  // ratio 1.5 with A = +1 clips at 1 + ε_high = 1.2: ℓ = −1.2.
  at::Tensor old = at::zeros({1, 1}), logps = at::full({1, 1}, std::log(1.5f)), mask = at::ones({1, 1});
  GrpoLossOptions o;
  o.loss_type = "bnpo";
  auto r = GrpoLoss(logps, old, at::Tensor(), at::tensor({1.0f}), mask, o);
  EXPECT_NEAR(r->loss.item<double>(), -1.2, 1e-6);
  EXPECT_EQ(r->clip_ratio_high, 1.0);
  // ε_high = 0.28 (DAPO): clipped at 1.28 instead.
  o.epsilon_high = 0.28;
  EXPECT_NEAR(GrpoLoss(logps, old, at::Tensor(), at::tensor({1.0f}), mask, o)->loss.item<double>(), -1.28, 1e-6);
  // With A = −1: ℓ = −min(ρ·A, clip(ρ)·A) = −min(−1.5, −1.28) = 1.5 (no clipping helps).
  EXPECT_NEAR(GrpoLoss(logps, old, at::Tensor(), at::tensor({-1.0f}), mask, o)->loss.item<double>(), 1.5, 1e-6);
  // k3 with ref − logp = ln 2: e^{ln 2} − ln 2 − 1 = 1 − ln 2; β = 0.5, ratio 1, A = 0.
  o.beta = 0.5;
  at::Tensor same = at::full({1, 1}, -2.0f), ref = same + std::log(2.0f);
  auto k = GrpoLoss(same, same, ref, at::tensor({0.0f}), mask, o);
  EXPECT_NEAR(k->mean_kl, 1 - std::log(2.0), 1e-6);
  EXPECT_NEAR(k->loss.item<double>(), 0.5 * (1 - std::log(2.0)), 1e-6);
}

}  // namespace
}  // namespace posttrain

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

TEST(RlooTest, LeaveOneOutAdvantagesByHand) {
  // Group {1, 0, 0, 1}: A_0 = 1 − (0 + 0 + 1)/3 = 2/3, A_1 = 0 − 2/3; group {3, 1}: ±2.
  auto a = Vec(*LeaveOneOutAdvantages(at::tensor({1.0f, 0.0f, 0.0f, 1.0f}), 4));
  EXPECT_NEAR(a[0], 2.0 / 3.0, 1e-6);
  EXPECT_NEAR(a[1], -2.0 / 3.0, 1e-6);
  EXPECT_THAT(Vec(*LeaveOneOutAdvantages(at::tensor({3.0f, 1.0f}), 2)), ::testing::ElementsAre(2.0f, -2.0f));
  EXPECT_FALSE(LeaveOneOutAdvantages(at::tensor({1.0f, 2.0f, 3.0f}), 2).ok());
  EXPECT_FALSE(LeaveOneOutAdvantages(at::tensor({1.0f}), 1).ok());
}

TEST(RlooTest, SequenceRatioClippingAndGradientByHand) {
  // Row 0: two tokens, log-ratio 0.1 + 0.2 = 0.3 → ρ = e^0.3 = 1.35 > 1.2, A = +1: clipped, loss −1.2, no gradient.
  // Row 1: one token (second masked), log-ratio −0.05 → ρ = e^−0.05, A = −2: unclipped, loss 2ρ.
  at::Tensor old = at::zeros({2, 2});
  at::Tensor logps = at::tensor({0.1f, 0.2f, -0.05f, 7.0f}).view({2, 2}).requires_grad_(true);
  at::Tensor mask = at::tensor({1.0f, 1.0f, 1.0f, 0.0f}).view({2, 2});
  RlooLossResult r = RlooLoss(logps, old, at::tensor({1.0f, -2.0f}), mask, 0.2, 0.2);
  const double rho1 = std::exp(-0.05);
  EXPECT_NEAR(r.loss.item<double>(), (-1.2 + 2 * rho1) / 2, 1e-6);
  EXPECT_DOUBLE_EQ(r.clip_ratio, 0.5);
  r.loss.backward();
  // d/dlogp of 2ρ/2 = ρ for row 1's real token; 0 elsewhere (clipped row, masked token).
  EXPECT_THAT(Vec(logps.grad()), ::testing::ElementsAre(0.0f, 0.0f, ::testing::FloatNear(rho1, 1e-6), 0.0f));
}

TEST(PpoTest, GaeByHand) {
  // One row, 3 tokens (+1 padding), γ = 0.9, λ = 0.5, rewards [0, 0, 1], values [0.5, 0.4, 0.2].
  at::Tensor rewards = at::tensor({0.0f, 0.0f, 1.0f, 9.0f}).view({1, 4});
  at::Tensor values = at::tensor({0.5f, 0.4f, 0.2f, 9.0f}).view({1, 4});
  at::Tensor mask = at::tensor({1.0f, 1.0f, 1.0f, 0.0f}).view({1, 4});
  GaeResult g = GeneralizedAdvantages(rewards, values, mask, 0.9, 0.5);
  const double d2 = 1.0 + 0.9 * 0.0 - 0.2;   // last real token: V past the end = 0
  const double d1 = 0.0 + 0.9 * 0.2 - 0.4;
  const double d0 = 0.0 + 0.9 * 0.4 - 0.5;
  const double a2 = d2, a1 = d1 + 0.45 * a2, a0 = d0 + 0.45 * a1;
  auto adv = Vec(g.advantages), ret = Vec(g.returns);
  EXPECT_NEAR(adv[0], a0, 1e-6);
  EXPECT_NEAR(adv[1], a1, 1e-6);
  EXPECT_NEAR(adv[2], a2, 1e-6);
  EXPECT_EQ(adv[3], 0.0f);
  EXPECT_NEAR(ret[0], a0 + 0.5, 1e-6);
  EXPECT_NEAR(ret[2], a2 + 0.2, 1e-6);
}

TEST(PpoTest, MaskedWhitenByHand) {
  // Masked values {1, 2, 3}: mean 2, unbiased var 1 → {−1, 0, 1}; the masked slot is ignored.
  at::Tensor w = MaskedWhiten(at::tensor({1.0f, 2.0f, 3.0f, 100.0f}), at::tensor({1.0f, 1.0f, 1.0f, 0.0f}));
  auto v = Vec(w);
  EXPECT_NEAR(v[0], -1.0, 1e-6);
  EXPECT_NEAR(v[1], 0.0, 1e-6);
  EXPECT_NEAR(v[2], 1.0, 1e-6);
  EXPECT_NEAR(Vec(MaskedWhiten(at::tensor({1.0f, 2.0f, 3.0f}), at::ones({3}), false))[0], 1.0, 1e-6);
}

TEST(PpoTest, ClippedPolicyAndValueLossesByHand) {
  // Two tokens. Token 0: ρ = e^0.5 (clipped to 1.2 for A = 1 → max(−1.65, −1.2) = −1.2);
  // token 1: ρ = 1, A = −1 → 1. pg = (−1.2 + 1)/2 = −0.1.
  at::Tensor logps = at::tensor({0.5f, 0.0f}).view({1, 2}), old = at::zeros({1, 2});
  at::Tensor adv = at::tensor({1.0f, -1.0f}).view({1, 2}), mask = at::ones({1, 2});
  // Values: V = [1.0, 0.0], V_old = [0.5, 0.0], returns = [2.0, 1.0], ε_v = 0.2:
  // token 0: unclipped (1 − 2)² = 1, clipped V 0.7 → (0.7 − 2)² = 1.69 → 1.69; token 1: 1 and 1 → 1.
  // vf = ½ · (1.69 + 1)/2 = 0.6725.
  at::Tensor v = at::tensor({1.0f, 0.0f}).view({1, 2}), v_old = at::tensor({0.5f, 0.0f}).view({1, 2});
  at::Tensor ret = at::tensor({2.0f, 1.0f}).view({1, 2});
  PpoLossOptions o;
  o.vf_coef = 0.1;
  PpoLossResult r = PpoLoss(logps, old, v, v_old, adv, ret, mask, o);
  EXPECT_NEAR(r.pg_loss.item<double>(), -0.1, 1e-6);
  EXPECT_NEAR(r.vf_loss.item<double>(), 0.6725, 1e-6);
  EXPECT_NEAR(r.loss.item<double>(), -0.1 + 0.1 * 0.6725, 1e-6);
  EXPECT_DOUBLE_EQ(r.clipfrac, 0.5);
  EXPECT_DOUBLE_EQ(r.vf_clipfrac, 0.5);
}

// clipfrac counts tokens where the clipped term wins the max (TRL's pg_clipfrac):
// ρ = e^0.5 outside [0.8, 1.2] with A = +1 → clipped −1.2 > −1.65: counted;
// the same ρ with A = −1 → unclipped 1.65 > 1.2: not counted; ρ = e^−0.5 = 0.61
// with A = −1 → clipped 0.8 > 0.61: counted. 2 of 3.
TEST(PpoTest, ClipfracCountsWhereTheClippedTermWins) {
  at::Tensor logps = at::tensor({0.5f, 0.5f, -0.5f}).view({1, 3}), old = at::zeros({1, 3});
  at::Tensor adv = at::tensor({1.0f, -1.0f, -1.0f}).view({1, 3}), mask = at::ones({1, 3});
  PpoLossResult r = PpoLoss(logps, old, at::zeros({1, 3}), at::zeros({1, 3}), adv, at::zeros({1, 3}), mask, PpoLossOptions{});
  EXPECT_NEAR(r.clipfrac, 2.0 / 3.0, 1e-6);
}

}  // namespace
}  // namespace posttrain

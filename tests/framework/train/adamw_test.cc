#include "posttrain/train/adamw.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

namespace posttrain {
namespace {

// A bf16 parameter at 1.0 with a constant gradient of 1: AdamW's bias-corrected
// step is lr · m̂ / (sqrt(v̂) + ε) = lr · 1 / (1 + ε) ≈ lr = 1e-4 per step, far below
// bf16's spacing near 1 (2^-8 ≈ 0.0039). After 200 steps the fp32 master is at
// 1 − 200 · 1e-4 = 0.98, and the bf16 parameter is its rounding (0.98046875).
// Without master weights each update rounds back to 1.0 and nothing moves.
TEST(AdamWTest, SmallUpdatesAccumulateInBf16ThroughFp32MasterWeights) {
  at::Tensor p = at::ones({4}, at::kBFloat16);
  AdamW optimizer({{"w", p}}, AdamWOptions{});
  for (int step = 0; step < 200; ++step) {
    p.mutable_grad() = at::ones({4}, at::kBFloat16);
    optimizer.Step(1e-4);
    optimizer.ZeroGrad();
  }
  EXPECT_EQ(p.scalar_type(), at::kBFloat16);
  EXPECT_NEAR(p.to(at::kFloat)[0].item<float>(), 0.98046875f, 1e-7);
  bool found_master = false;
  for (const auto& [name, t] : optimizer.StateDict()) {
    if (name != "master.w") continue;
    found_master = true;
    EXPECT_EQ(t.scalar_type(), at::kFloat);
    EXPECT_NEAR(t[0].item<float>(), 0.98f, 1e-5);
  }
  EXPECT_TRUE(found_master);
}

// Resuming restores the master weights, so the resumed run continues from 0.99,
// not from the rounded bf16 value.
TEST(AdamWTest, MasterWeightsRoundTripThroughTheStateDict) {
  at::Tensor p = at::ones({2}, at::kBFloat16);
  AdamW first({{"w", p}}, AdamWOptions{});
  for (int step = 0; step < 100; ++step) {
    p.mutable_grad() = at::ones({2}, at::kBFloat16);
    first.Step(1e-4);
  }
  std::map<std::string, at::Tensor> state;
  for (const auto& [name, t] : first.StateDict()) state[name] = t.clone();
  at::Tensor q = p.detach().clone();
  AdamW second({{"w", q}}, AdamWOptions{});
  ASSERT_TRUE(second.LoadStateDict(state).ok());
  for (const auto& [name, t] : second.StateDict()) {
    if (name == "master.w") EXPECT_NEAR(t[0].item<float>(), 0.99f, 1e-5);
  }
}

// fp32 parameters are updated in place, with no master copy; one step by hand:
// m = 0.1·g, v = 0.001·g², m̂ = g, v̂ = g² → θ − lr·g/(|g| + ε) = 0.5 − 0.1·sign(g).
TEST(AdamWTest, Fp32StepByHand) {
  at::Tensor p = at::full({2}, 0.5, at::kFloat);
  AdamW optimizer({{"w", p}}, AdamWOptions{});
  p.mutable_grad() = at::tensor({2.0f, -3.0f});
  optimizer.Step(0.1);
  EXPECT_NEAR(p[0].item<float>(), 0.4f, 1e-6);
  EXPECT_NEAR(p[1].item<float>(), 0.6f, 1e-6);
  for (const auto& [name, t] : optimizer.StateDict()) EXPECT_NE(name, "master.w");
}

}  // namespace
}  // namespace posttrain

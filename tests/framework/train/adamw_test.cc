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

// Weight decay as transformers' Trainer groups the parameters
// (get_decay_parameter_names): biases and norm weights take none, everything else
// (projections, embeddings, LoRA's A and B, heads) decays. One step with zero
// gradients, lr 0.1 and decay 0.5, by hand: a decayed θ = 1 becomes 1 − 0.1·0.5 =
// 0.95 (Adam's term is 0/(0 + ε) = 0); an exempt one stays 1. A flat FSDP shard
// decays element by element (SetDecayMask).
TEST(AdamWTest, WeightDecaySkipsBiasesAndNormWeightsAsTransformersGroupsThem) {
  for (const char* name : {"model.layers.0.self_attn.q_proj.weight", "model.embed_tokens.weight", "lm_head.weight",
                           "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", "score.weight",
                           "model.layers.1.mlp.experts.0.down_proj.weight", "model.normalizer.weight"}) {
    EXPECT_TRUE(DecaysWeight(name)) << name;
  }
  for (const char* name : {"model.norm.weight", "model.layers.0.input_layernorm.weight",
                           "model.layers.0.post_attention_layernorm.weight", "model.layers.0.self_attn.q_norm.weight",
                           "model.embed_norm.weight", "model.layers.0.self_attn.q_proj.bias", "model.embed_norm.bias",
                           "model.layers.1.mlp.gate.e_score_correction_bias", "model.layers.0.pre_feedforward_layernorm.weight",
                           "transformer.ln_f.LayerNorm.weight", "model.RMSNorm.weight", "norm.weight"}) {
    EXPECT_FALSE(DecaysWeight(name)) << name;
  }
  at::Tensor w = at::ones({2}), b = at::ones({2}), n = at::ones({2}), flat = at::ones({3});
  AdamW optimizer({{"model.layers.0.mlp.up_proj.weight", w}, {"model.layers.0.mlp.up_proj.bias", b},
                   {"model.layers.0.input_layernorm.weight", n}, {"fsdp.layers.0", flat}},
                  AdamWOptions{0.9, 0.999, 1e-8, 0.5});
  ASSERT_TRUE(optimizer.SetDecayMask("fsdp.layers.0", at::tensor({1.0f, 0.0f, 1.0f})).ok());
  EXPECT_FALSE(optimizer.SetDecayMask("fsdp.layers.0", at::ones({2})).ok());
  EXPECT_FALSE(optimizer.SetDecayMask("nothing", at::ones({2})).ok());
  for (at::Tensor* p : {&w, &b, &n, &flat}) p->mutable_grad() = at::zeros_like(*p);
  optimizer.Step(0.1);
  EXPECT_FLOAT_EQ(w[0].item<float>(), 0.95f);
  EXPECT_FLOAT_EQ(b[0].item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(n[1].item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(flat[0].item<float>(), 0.95f);
  EXPECT_FLOAT_EQ(flat[1].item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(flat[2].item<float>(), 0.95f);
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

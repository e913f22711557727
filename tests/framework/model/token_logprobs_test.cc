// The chunked LM-head log-probs equal the plain path — full logits, log_softmax,
// gather — in value and in both gradients, for chunks that do not divide the
// positions and with a temperature.
#include "posttrain/model/token_logprobs.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "posttrain/core/autocast.h"
#include "posttrain/model/gemm.h"
#include "posttrain/model/safetensors.h"
#include "test_support.h"

namespace posttrain {
namespace {

TEST(TokenLogprobsTest, ChunkedEqualsFullLogitsInValueAndGradient) {
  at::manual_seed(3);
  const std::int64_t m = 37, h = 24, v = 301;
  for (double temperature : {1.0, 0.7}) {
    for (std::int64_t chunk : {1, 5, 16, 0}) {
      at::Tensor hidden = at::randn({m, h}).requires_grad_(true);
      at::Tensor weight = (at::randn({v, h}) * 0.3).requires_grad_(true);
      at::Tensor targets = at::randint(v, {m}, at::kLong);
      at::Tensor upstream = at::randn({m});
      // Plain: full [M, V] logits.
      at::Tensor plain = at::log_softmax(at::linear(hidden, weight) / temperature, -1).gather(1, targets.unsqueeze(1)).squeeze(1);
      (plain * upstream).sum().backward();
      const at::Tensor plain_dh = hidden.grad().clone(), plain_dw = weight.grad().clone();
      const at::Tensor plain_argmax = at::linear(hidden, weight).argmax(-1);
      hidden.mutable_grad() = at::Tensor();
      weight.mutable_grad() = at::Tensor();
      TokenLogprobsResult r = TokenLogprobs(hidden, weight, targets, temperature, chunk);
      (r.logprobs * upstream).sum().backward();
      EXPECT_LT((r.logprobs - plain).abs().max().item<double>(), 1e-5) << "T " << temperature << " chunk " << chunk;
      EXPECT_LT((hidden.grad() - plain_dh).abs().max().item<double>(), 1e-5) << "chunk " << chunk;
      EXPECT_LT((weight.grad() - plain_dw).abs().max().item<double>(), 1e-5) << "chunk " << chunk;
      EXPECT_TRUE(at::equal(r.argmax, plain_argmax));
      // Entropy from the same pass: −Σ p log p of the tempered full logits.
      const at::Tensor lp = at::log_softmax(at::linear(hidden, weight) / temperature, -1).detach();
      const at::Tensor entropy = -(lp.exp() * lp).sum(-1);
      const TokenLogprobsResult e = TokenLogprobs(hidden, weight, targets, temperature, chunk, false, true);
      EXPECT_LT((e.entropy - entropy).abs().max().item<double>(), 1e-5) << "chunk " << chunk;
      EXPECT_EQ(e.argmax.numel(), 0);
    }
  }
}

// Under bf16 autocast the LM-head products of both chunked functions take bf16
// operands, as autocast's own linear and its backward do (they once ran in fp32: out=
// and in-place ops bypass autocast). With oneDNN (internal::MatmulUsesOneDnn) their
// results stay fp32 (bf16 operands, fp32 accumulation, nothing rounded to bf16);
// without it they are autocast's bf16 products, rounded. Hand transcription, one
// chunk: logits z = bf16(h)·bf16(W)ᵀ, d = u·(onehot(y) − softmax(z)); grad_hidden =
// bf16(d)·bf16(W), grad_weight = bf16(d)ᵀ·bf16(h), in fp64 then (without oneDNN)
// rounded to bf16. The fp32 products of the same d, and the other rounding, are
// further away.
TEST(TokenLogprobsTest, UnderBf16AutocastTheProductsTakeBf16Operands) {
  at::manual_seed(11);
  const std::int64_t m = 40, h = 64, v = 500;
  const at::Tensor hidden = at::randn({m, h}).requires_grad_(true);
  const at::Tensor weight = (at::randn({v, h}) * 0.2).requires_grad_(true);
  const at::Tensor targets = at::randint(v, {m}, at::kLong);
  const at::Tensor upstream = at::randn({m});
  auto bf16 = [](const at::Tensor& t) { return t.detach().to(at::kBFloat16).to(at::kDouble); };
  const bool rounded = !internal::MatmulUsesOneDnn();
  auto result = [&](const at::Tensor& exact) {
    return rounded ? exact.to(at::kBFloat16).to(at::kDouble) : exact.to(at::kFloat).to(at::kDouble);
  };
  at::Tensor d;
  {
    c10::NoGradGuard no_grad;
    const at::Tensor z = result(at::mm(bf16(hidden), bf16(weight).t())).to(at::kFloat);
    d = -at::softmax(z, -1) * upstream.unsqueeze(1);
    d.scatter_add_(1, targets.unsqueeze(1), upstream.unsqueeze(1));
  }
  const at::Tensor expected_dh = result(at::mm(bf16(d), bf16(weight)));
  const at::Tensor expected_dw = result(at::mm(bf16(d).t(), bf16(hidden)));
  const at::Tensor other_dh = rounded ? at::mm(bf16(d), bf16(weight)) : expected_dh.to(at::kBFloat16).to(at::kDouble);
  const at::Tensor other_dw = rounded ? at::mm(bf16(d).t(), bf16(hidden)) : expected_dw.to(at::kBFloat16).to(at::kDouble);
  const at::Tensor fp32_dh = at::mm(d, weight.detach()), fp32_dw = at::mm(d.t(), hidden.detach());
  auto check = [&](const char* what) {
    auto error = [](const at::Tensor& got, const at::Tensor& want) {
      return (got.to(at::kDouble) - want.to(at::kDouble)).abs().max().item<double>() /
             want.abs().max().item<double>();
    };
    const double h_err = error(hidden.grad(), expected_dh), w_err = error(weight.grad(), expected_dw);
    EXPECT_LT(h_err, rounded ? 5e-3 : 1e-4) << what;
    EXPECT_LT(w_err, rounded ? 5e-3 : 1e-4) << what;
    EXPECT_LT(h_err, 0.5 * error(hidden.grad(), fp32_dh)) << what << ": grad_hidden is fp32's product";
    EXPECT_LT(w_err, 0.5 * error(weight.grad(), fp32_dw)) << what << ": grad_weight is fp32's product";
    EXPECT_LT(h_err, 0.5 * error(hidden.grad(), other_dh)) << what << ": grad_hidden rounded otherwise";
    EXPECT_LT(w_err, 0.5 * error(weight.grad(), other_dw)) << what << ": grad_weight rounded otherwise";
    hidden.mutable_grad() = at::Tensor();
    weight.mutable_grad() = at::Tensor();
  };
  SetAutocast(at::kCPU, true, at::kBFloat16);
  (TokenLogprobs(hidden, weight, targets, 1.0, m).logprobs * upstream).sum().backward();
  check("TokenLogprobs");
  WeightedTokenLogprobs(hidden, weight, targets, upstream, m).sum.backward();
  check("WeightedTokenLogprobs");
  SetAutocast(at::kCPU, false);
  at::autocast::clear_cache();
}

TEST(TokenLogprobsTest, NoGradientIsComputedForInputsThatDoNotNeedOne) {
  at::Tensor hidden = at::randn({4, 8}).requires_grad_(true);
  at::Tensor weight = at::randn({11, 8});  // frozen
  TokenLogprobsResult r = TokenLogprobs(hidden, weight, at::tensor({1L, 2L, 3L, 4L}), 1.0, 3);
  r.logprobs.sum().backward();
  EXPECT_TRUE(hidden.grad().defined());
  EXPECT_FALSE(weight.grad().defined());
}

// Gemma 2's final_logit_softcapping inside the chunked functions: the logits are
// c·tanh(h·Wᵀ / c), then divided by the temperature. Against libtorch's autograd
// through the same formula on full logits (tanh's derivative taken by autograd, not
// by the hand-written 1 − tanh² of the chunked backward): values and both gradients
// of all three functions; and the cap does change the values (a cap of 2 on logits
// of size ~3).
TEST(TokenLogprobsTest, SoftCappedLogitsEqualAutogradThroughTanh) {
  at::manual_seed(17);
  const std::int64_t m = 23, h = 16, v = 97;
  const double cap = 2.0;
  auto capped = [&](const at::Tensor& hidden, const at::Tensor& weight, double c) {
    return at::tanh(at::linear(hidden, weight) / c) * c;
  };
  auto grads = [](at::Tensor& a, at::Tensor& b) {
    std::pair<at::Tensor, at::Tensor> g{a.grad().clone(), b.grad().clone()};
    a.mutable_grad() = at::Tensor();
    b.mutable_grad() = at::Tensor();
    return g;
  };
  at::Tensor hidden = at::randn({m, h}).requires_grad_(true);
  at::Tensor weight = (at::randn({v, h}) * 0.8).requires_grad_(true);
  const at::Tensor targets = at::randint(v, {m}, at::kLong);
  const at::Tensor upstream = at::randn({m});
  for (double temperature : {1.0, 0.7}) {
    const at::Tensor plain =
        at::log_softmax(capped(hidden, weight, cap) / temperature, -1).gather(1, targets.unsqueeze(1)).squeeze(1);
    (plain * upstream).sum().backward();
    const auto [plain_dh, plain_dw] = grads(hidden, weight);
    TokenLogprobsResult r = TokenLogprobs(hidden, weight, targets, temperature, /*chunk=*/5, true, false, cap);
    (r.logprobs * upstream).sum().backward();
    const auto [dh, dw] = grads(hidden, weight);
    EXPECT_LT((r.logprobs - plain).abs().max().item<double>(), 1e-5) << "T " << temperature;
    EXPECT_LT((dh - plain_dh).abs().max().item<double>(), 1e-5) << "T " << temperature;
    EXPECT_LT((dw - plain_dw).abs().max().item<double>(), 1e-5) << "T " << temperature;
    const at::Tensor uncapped = TokenLogprobs(hidden, weight, targets, temperature, 5).logprobs;
    EXPECT_GT((uncapped - plain).abs().max().item<double>(), 1e-2) << "the cap changed nothing";
  }
  // The weighted sum (SFT).
  const at::Tensor w = at::randn({m});
  const at::Tensor logp = at::log_softmax(capped(hidden, weight, cap), -1).gather(1, targets.unsqueeze(1)).squeeze(1);
  ((logp * w).sum() * 1.5).backward();
  const auto [plain_dh, plain_dw] = grads(hidden, weight);
  WeightedLogprobSumResult ws = WeightedTokenLogprobs(hidden, weight, targets, w, /*chunk=*/4, cap);
  (ws.sum * 1.5).backward();
  const auto [dh, dw] = grads(hidden, weight);
  EXPECT_NEAR(ws.sum.item<double>(), (logp * w).sum().item<double>(), 1e-4);
  EXPECT_LT((dh - plain_dh).abs().max().item<double>(), 1e-5);
  EXPECT_LT((dw - plain_dw).abs().max().item<double>(), 1e-5);
  // GKD's JSD (β = 0.5), a capped student against a teacher with another cap.
  const at::Tensor ht = at::randn({m, 8}), wt = at::randn({v, 8});
  const double beta = 0.5, temperature = 1.3, teacher_cap = 1.5;
  const at::Tensor ls = at::log_softmax(capped(hidden, weight, cap) / temperature, -1);
  const at::Tensor lt = at::log_softmax(capped(ht, wt, teacher_cap) / temperature, -1);
  const at::Tensor lm = at::logsumexp(at::stack({ls + std::log(1 - beta), lt + std::log(beta)}), 0);
  const at::Tensor per_token = beta * (lt.exp() * (lt - lm)).sum(-1) + (1 - beta) * (ls.exp() * (ls - lm)).sum(-1);
  (per_token * w.abs()).sum().backward();
  const auto [jsd_dh, jsd_dw] = grads(hidden, weight);
  GeneralizedJsdResult jsd = GeneralizedJsd(hidden, weight, ht, wt, w.abs(), beta, temperature, /*chunk=*/6, cap, teacher_cap);
  jsd.sum.backward();
  const auto [got_dh, got_dw] = grads(hidden, weight);
  EXPECT_LT((jsd.per_token - per_token).abs().max().item<double>(), 1e-5);
  EXPECT_LT((got_dh - jsd_dh).abs().max().item<double>(), 1e-5);
  EXPECT_LT((got_dw - jsd_dw).abs().max().item<double>(), 1e-5);
}

}  // namespace
}  // namespace posttrain

namespace posttrain {
namespace {

// The fused weighted sum (gradients computed in forward) against full logits.
TEST(WeightedTokenLogprobsTest, SumAndBothGradientsEqualFullLogits) {
  at::manual_seed(5);
  const std::int64_t m = 29, h = 12, v = 211;
  for (std::int64_t chunk : {1, 7, 0}) {
    at::Tensor hidden = at::randn({m, h}).requires_grad_(true);
    at::Tensor weight = (at::randn({v, h}) * 0.3).requires_grad_(true);
    at::Tensor targets = at::randint(v, {m}, at::kLong);
    at::Tensor w = at::randn({m});  // any fixed weights, negative ones included
    at::Tensor logp = at::log_softmax(at::linear(hidden, weight), -1).gather(1, targets.unsqueeze(1)).squeeze(1);
    const at::Tensor plain = (logp * w).sum();
    (plain * 2.5).backward();  // an upstream gradient other than 1
    const at::Tensor plain_dh = hidden.grad().clone(), plain_dw = weight.grad().clone();
    hidden.mutable_grad() = at::Tensor();
    weight.mutable_grad() = at::Tensor();
    WeightedLogprobSumResult r = WeightedTokenLogprobs(hidden, weight, targets, w, chunk);
    (r.sum * 2.5).backward();
    EXPECT_NEAR(r.sum.item<double>(), plain.item<double>(), 1e-4) << "chunk " << chunk;
    EXPECT_LT((r.logprobs - logp.detach()).abs().max().item<double>(), 1e-5);
    EXPECT_LT((hidden.grad() - plain_dh).abs().max().item<double>(), 1e-5) << "chunk " << chunk;
    EXPECT_LT((weight.grad() - plain_dw).abs().max().item<double>(), 1e-5) << "chunk " << chunk;
    EXPECT_TRUE(at::equal(r.argmax, at::linear(hidden, weight).argmax(-1)));
  }
}

TEST(WeightedTokenLogprobsTest, WithoutGradModeNoGradientIsKept) {
  at::Tensor hidden = at::randn({4, 8}).requires_grad_(true);
  at::Tensor weight = at::randn({11, 8});
  c10::NoGradGuard no_grad;
  WeightedLogprobSumResult r = WeightedTokenLogprobs(hidden, weight, at::randint(11, {4}, at::kLong), at::ones({4}));
  EXPECT_FALSE(r.sum.requires_grad());
  EXPECT_TRUE(std::isfinite(r.sum.item<double>()));
}

// GKD's generalized JSD against TRL's generalized_jsd_loss transcribed into
// python3-torch (fp64 autograd): value, per-token divergences and the gradients
// w.r.t. the student's hidden states and LM head, for β ∈ {0, 0.5, 1} and two
// temperatures, chunked smaller than the rows.
TEST(GeneralizedJsdTest, MatchesTrlsFormulaInValueAndGradient) {
  at::manual_seed(21);
  const std::int64_t M = 7, H = 6, Ht = 5, V = 11;
  for (const double beta : std::vector<double>{0.0, 0.5, 1.0}) {
    for (const double temperature : std::vector<double>{1.0, 2.0}) {
      const at::Tensor hs = at::randn({M, H}), ws = at::randn({V, H}) * 0.7, ht = at::randn({M, Ht}), wt = at::randn({V, Ht});
      const at::Tensor weights = at::rand({M}) + 0.1;
      const std::string dir = posttrain::testing::TempDir(absl::StrCat("jsd_", beta, "_", temperature));
      ASSERT_TRUE(SaveSafetensors(dir + "/in.safetensors", {{"hs", hs}, {"ws", ws}, {"ht", ht}, {"wt", wt}, {"weights", weights}}).ok());
      posttrain::testing::WriteFile(dir + "/in.json", absl::StrCat("{\"beta\": ", beta, ", \"temperature\": ", temperature, "}"));
      std::string out;
      ASSERT_EQ(posttrain::testing::RunCommand(posttrain::testing::Python() + " " + posttrain::testing::SourceDir() + "/tests/framework/model/jsd_reference.py " + dir, &out), 0)
          << out;
      auto ref = SafetensorsFile::Open(dir + "/out.safetensors");
      ASSERT_TRUE(ref.ok());
      const at::Tensor h = hs.clone().requires_grad_(true), w = ws.clone().requires_grad_(true);
      GeneralizedJsdResult r = GeneralizedJsd(h, w, ht, wt, weights, beta, temperature, /*chunk=*/3);
      r.sum.backward();
      const std::string what = absl::StrCat("beta ", beta, " temperature ", temperature);
      EXPECT_NEAR(r.sum.item<double>(), (*ref->Get("loss")).item<double>(), 1e-5) << what;
      EXPECT_LT((r.per_token - *ref->Get("per_token")).abs().max().item<double>(), 1e-5) << what;
      EXPECT_LT((h.grad() - *ref->Get("grad_hs")).abs().max().item<double>(), 1e-5) << what;
      EXPECT_LT((w.grad() - *ref->Get("grad_ws")).abs().max().item<double>(), 1e-5) << what;
    }
  }
  // Different vocabularies are refused.
  EXPECT_THROW((GeneralizedJsd(at::randn({2, 3}), at::randn({5, 3}), at::randn({2, 3}), at::randn({6, 3}), at::ones({2}), 0.5)),
               c10::Error);
}

}  // namespace
}  // namespace posttrain

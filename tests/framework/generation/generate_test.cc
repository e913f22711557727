#include "posttrain/generation/generate.h"

#include <c10/core/GradMode.h>
#include <cmath>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "posttrain/generation/logprobs.h"
#include "posttrain/model/hf_model.h"
#include "posttrain/model/safetensors.h"
#include "test_support.h"

namespace posttrain {
namespace {

using ::testing::ElementsAre;

std::vector<float> Row(const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

constexpr float kInf = std::numeric_limits<float>::infinity();

TEST(ProcessLogitsTest, ProcessorsMatchHandDerivations) {
  at::Tensor logits = at::tensor({2.0f, 1.0f, -1.0f, 0.0f}).unsqueeze(0);
  SamplingParams p;
  // Temperature 2 halves the logits.
  p.temperature = 2.0;
  EXPECT_THAT(Row(ProcessLogits(logits, {}, p)), ElementsAre(1.0f, 0.5f, -0.5f, 0.0f));
  // top_k = 2 keeps the two largest.
  p = SamplingParams();
  p.top_k = 2;
  EXPECT_THAT(Row(ProcessLogits(logits, {}, p)), ElementsAre(2.0f, 1.0f, -kInf, -kInf));
  // top_p = 0.7: probs ≈ .644 .237 .032 .087; sorted ascending cumulative
  // .032 .119 .356 1.0; drop cumulative ≤ 0.3 → tokens 2 (−1) and 3 (0).
  p = SamplingParams();
  p.top_p = 0.7;
  EXPECT_THAT(Row(ProcessLogits(logits, {}, p)), ElementsAre(2.0f, 1.0f, -kInf, -kInf));
  // min_p = 0.2: threshold .2·.644 = .129 → keep tokens 0 and 1.
  p = SamplingParams();
  p.min_p = 0.2;
  EXPECT_THAT(Row(ProcessLogits(logits, {}, p)), ElementsAre(2.0f, 1.0f, -kInf, -kInf));
  // Repetition penalty 2 on seen tokens 0 (positive: /2) and 2 (negative: ×2).
  p = SamplingParams();
  p.repetition_penalty = 2.0;
  at::Tensor seen = at::tensor({1, 0, 1, 0}).to(at::kBool).unsqueeze(0);
  EXPECT_THAT(Row(ProcessLogits(logits, seen, p)), ElementsAre(1.0f, 1.0f, -2.0f, 0.0f));
}

// Inverse-CDF draws, derived by hand: logits log(1, 2, 3, 0, 4) give probabilities
// .1 .2 .3 0 .4 (running sums .1 .3 .6 .6 1), so the 1,000 evenly spaced uniforms
// (i + .5) / 1000 draw tokens 0-4 exactly 100, 200, 300, 0 and 400 times, in order;
// a uniform next to 1 draws the last token of nonzero probability, and a masked
// token (−inf) is never drawn even where the running sum stands on its boundary.
TEST(SampleCategoricalTest, DrawsByInverseCdfAndNeverAMaskedToken) {
  const at::Tensor logits = at::log(at::tensor({1.0f, 2.0f, 3.0f, 0.0f, 4.0f})).unsqueeze(0).expand({1000, 5});
  std::vector<double> uniforms;
  for (int i = 0; i < 1000; ++i) uniforms.push_back((i + 0.5) / 1000);
  const at::Tensor drawn = SampleCategorical(logits, uniforms);
  ASSERT_EQ(drawn.scalar_type(), at::kLong);
  std::vector<int> counts(5, 0);
  for (int i = 0; i < 1000; ++i) {
    const std::int64_t token = drawn[i].item<std::int64_t>();
    ASSERT_TRUE(token >= 0 && token < 5) << token;
    ++counts[static_cast<size_t>(token)];
    if (i > 0) EXPECT_GE(token, drawn[i - 1].item<std::int64_t>()) << "draws follow the uniforms' order";
  }
  EXPECT_THAT(counts, ElementsAre(100, 200, 300, 0, 400));
  // Rows 1 0 1 0 (unnormalised): u = .5 · 2 = 1 equals the running sum after token 0;
  // the draw must pass over the masked token 1 to token 2. Near 1: token 2, not 3.
  const at::Tensor masked = at::tensor({0.0f, -kInf, 0.0f, -kInf}).unsqueeze(0).expand({3, 4});
  const at::Tensor edges = SampleCategorical(masked, {0.5, 1.0 - 0x1p-53, 0.0});
  EXPECT_THAT(std::vector<std::int64_t>(edges.data_ptr<std::int64_t>(), edges.data_ptr<std::int64_t>() + 3),
              ElementsAre(2, 2, 0));
}

class GenerateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto model = LoadCausalLM(testing::Stories260KDir(), at::kFloat);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model);
    auto tokenizer = LoadTokenizer(testing::Stories260KDir());
    ASSERT_TRUE(tokenizer.ok());
    tokenizer_ = std::move(*tokenizer);
  }
  std::unique_ptr<CausalLM> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(GenerateTest, SampledLogprobsEqualATeacherForcedRecomputationAlone) {
  SamplingParams params;
  params.temperature = 0.7;
  params.top_k = 50;
  params.max_new_tokens = 24;
  params.seed = 11;
  std::vector<std::vector<std::int64_t>> prompts = {tokenizer_->Encode("The cat", true),
                                                    tokenizer_->Encode("Once upon a time there", true)};
  auto out = Generate(*model_, prompts, 3, params, tokenizer_.get());
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), 6u);
  c10::NoGradGuard no_grad;
  for (const Generation& g : *out) {
    std::vector<std::int64_t> seq = prompts[static_cast<size_t>(g.prompt_index)];
    const std::int64_t p = static_cast<std::int64_t>(seq.size());
    seq.insert(seq.end(), g.token_ids.begin(), g.token_ids.end());
    const std::int64_t T = static_cast<std::int64_t>(seq.size());
    at::Tensor ids = at::tensor(seq, at::kLong).unsqueeze(0);
    at::Tensor logits = model_->Forward(ids, at::arange(T, at::kLong).unsqueeze(0), at::Tensor(), nullptr);
    // Token t+1 is predicted at position t; log-softmax of logits / temperature.
    at::Tensor logps = at::log_softmax(logits.narrow(1, p - 1, T - p) / params.temperature, -1)
                           .gather(2, ids.narrow(1, p, T - p).unsqueeze(-1))
                           .squeeze(-1)
                           .squeeze(0);
    for (size_t t = 0; t < g.logprobs.size(); ++t) {
      // Batched with padding vs. alone: equal up to fp32 rounding of other shapes.
      EXPECT_NEAR(g.logprobs[t], logps[static_cast<std::int64_t>(t)].item<float>(), 2e-5);
    }
  }
}

// Each prompt's samples come from its own seed: the same tokens whether it is
// generated alone or beside other prompts (what data parallelism relies on), and
// different samples of one prompt differ.
TEST_F(GenerateTest, APromptsSamplesDependOnItsSeedNotOnItsBatch) {
  SamplingParams params;
  params.max_new_tokens = 20;
  const std::vector<std::int64_t> a = tokenizer_->Encode("Once upon a time", true), b = tokenizer_->Encode("The dog", true),
                                  c = tokenizer_->Encode("Lily saw a big", true);
  params.prompt_seeds = {101, 202, 303};
  auto together = Generate(*model_, {a, b, c}, 3, params, tokenizer_.get());
  params.prompt_seeds = {202};
  auto alone = Generate(*model_, {b}, 3, params, tokenizer_.get());
  ASSERT_TRUE(together.ok() && alone.ok());
  for (size_t k = 0; k < 3; ++k) EXPECT_EQ((*together)[3 + k].token_ids, (*alone)[k].token_ids) << "sample " << k;
  EXPECT_NE((*alone)[0].token_ids, (*alone)[1].token_ids);
  params.prompt_seeds = {203};
  auto reseeded = Generate(*model_, {b}, 3, params, tokenizer_.get());
  ASSERT_TRUE(reseeded.ok());
  EXPECT_NE((*reseeded)[0].token_ids, (*alone)[0].token_ids);
  params.prompt_seeds = {1, 2};
  EXPECT_FALSE(Generate(*model_, {b}, 1, params, tokenizer_.get()).ok());
}

TEST_F(GenerateTest, SeededSamplingIsReproducibleAndGroupedByPrompt) {
  SamplingParams params;
  params.max_new_tokens = 16;
  params.seed = 3;
  std::vector<std::vector<std::int64_t>> prompts = {tokenizer_->Encode("A", true), tokenizer_->Encode("B", true)};
  auto a = Generate(*model_, prompts, 4, params, tokenizer_.get());
  auto b = Generate(*model_, prompts, 4, params, tokenizer_.get());
  ASSERT_TRUE(a.ok() && b.ok());
  for (size_t i = 0; i < a->size(); ++i) {
    EXPECT_EQ((*a)[i].token_ids, (*b)[i].token_ids);
    EXPECT_EQ((*a)[i].prompt_index, static_cast<std::int64_t>(i / 4));
  }
  params.seed = 4;
  auto c = Generate(*model_, prompts, 4, params, tokenizer_.get());
  bool any_different = false;
  for (size_t i = 0; i < a->size(); ++i) any_different |= (*a)[i].token_ids != (*c)[i].token_ids;
  EXPECT_TRUE(any_different);
}

TEST_F(GenerateTest, StopStringsAndEosEndCompletions) {
  SamplingParams params;
  params.do_sample = false;
  params.max_new_tokens = 60;
  params.stop_strings = {"."};
  auto out = Generate(*model_, {tokenizer_->Encode("Once upon a time", true)}, 1, params, tokenizer_.get());
  ASSERT_TRUE(out.ok());
  EXPECT_EQ((*out)[0].finish_reason, FinishReason::kStop);
  EXPECT_EQ((*out)[0].text, ", there was a little girl named Lily");  // cut before the stop string
  params.stop_strings.clear();
  params.max_new_tokens = 5;
  out = Generate(*model_, {tokenizer_->Encode("Once upon a time", true)}, 1, params, tokenizer_.get());
  EXPECT_EQ((*out)[0].finish_reason, FinishReason::kLength);
  EXPECT_EQ((*out)[0].token_ids.size(), 5u);
}

// Counts the tokens a tokenizer is asked to decode.
class CountingTokenizer final : public Tokenizer {
 public:
  explicit CountingTokenizer(const Tokenizer& inner) : inner_(inner) {}
  std::vector<std::int64_t> Encode(absl::string_view text, bool add) const override { return inner_.Encode(text, add); }
  std::string Decode(absl::Span<const std::int64_t> ids, bool skip) const override {
    decoded_ += static_cast<std::int64_t>(ids.size());
    return inner_.Decode(ids, skip);
  }
  std::int64_t vocab_size() const override { return inner_.vocab_size(); }
  std::optional<std::int64_t> TokenToId(absl::string_view token) const override { return inner_.TokenToId(token); }
  std::string IdToToken(std::int64_t id) const override { return inner_.IdToToken(id); }
  std::int64_t decoded() const { return decoded_; }

 private:
  const Tokenizer& inner_;
  mutable std::int64_t decoded_ = 0;
};

// Stop strings are checked on the newest tokens only: generating n tokens with a
// stop string that never appears decodes O(n) tokens in all (re-decoding the whole
// completion each step would be n²/2 = 80,000 for n = 400), and a stop string that
// spans several tokens is still found.
TEST_F(GenerateTest, StopStringChecksAreIncrementalAndFindMultiTokenStrings) {
  CountingTokenizer counting(*tokenizer_);
  SamplingParams params;
  params.do_sample = false;
  params.max_new_tokens = 400;
  params.stop_strings = {"no such text appears here"};
  auto out = Generate(*model_, {tokenizer_->Encode("Once upon a time", true)}, 1, params, &counting);
  ASSERT_TRUE(out.ok());
  ASSERT_EQ((*out)[0].token_ids.size(), 400u);
  EXPECT_LT(counting.decoded(), 400 * 40) << "decoded tokens: " << counting.decoded();
  params.stop_strings = {"girl named Lily"};  // several tokens
  out = Generate(*model_, {tokenizer_->Encode("Once upon a time", true)}, 1, params, &counting);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ((*out)[0].finish_reason, FinishReason::kStop);
  EXPECT_EQ((*out)[0].text, ", there was a little ");
}

TEST_F(GenerateTest, BadPromptsAreRefused) {
  SamplingParams params;
  EXPECT_EQ(Generate(*model_, {{}}, 1, params, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Generate(*model_, {{1, 9999}}, 1, params, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
}

// Nash-MD's mixture sampling: the logits each token is drawn from are
// (1 − c)·z_policy + c·z_reference at every step, against both models' logits
// from the independent python3-torch transcription of the Llama forward
// (tests/framework/model/llama_reference.py) on the generated sequences; c = 0
// samples exactly what the policy alone samples.
TEST_F(GenerateTest, GeometricMixtureDrawsFromTheMixedLogitsOfBothModels) {
  std::unique_ptr<CausalLM> reference = model_->Clone();
  {
    c10::NoGradGuard no_grad;
    at::manual_seed(5);
    for (const auto& [name, p] : reference->named_parameters()) p.add_(at::randn_like(p) * 0.02);
  }
  const std::vector<std::vector<std::int64_t>> prompts = {tokenizer_->Encode("Once upon a time", true)};
  const auto P = static_cast<std::int64_t>(prompts[0].size());
  const std::int64_t G = 3, new_tokens = 10;
  SamplingParams params;
  params.temperature = 0.8;
  params.max_new_tokens = new_tokens;
  params.seed = 3;
  params.mixture_model = reference.get();
  params.mixture_coef = 0.3;
  std::map<std::pair<std::size_t, std::int64_t>, at::Tensor> drawn_from;
  params.on_step_logits = [&](std::size_t index, std::int64_t t, const at::Tensor& logits) {
    drawn_from[{index, t}] = logits.clone();
  };
  auto out = Generate(*model_, prompts, G, params, nullptr);  // no EOS: every row is new_tokens long
  ASSERT_TRUE(out.ok()) << out.status();
  std::vector<std::int64_t> ids;
  for (const Generation& g : *out) {
    ASSERT_EQ(static_cast<std::int64_t>(g.token_ids.size()), new_tokens);
    ids.insert(ids.end(), prompts[0].begin(), prompts[0].end());
    ids.insert(ids.end(), g.token_ids.begin(), g.token_ids.end());
  }
  const at::Tensor batch = at::tensor(ids, at::kLong).view({G, P + new_tokens});
  auto python_logits = [&](const CausalLM& model, const std::string& name) {
    const std::string dir = testing::TempDir(name);
    EXPECT_TRUE(SaveCausalLM(model, dir).ok());
    EXPECT_TRUE(SaveSafetensors(dir + "/ids.safetensors", {{"ids", batch}}).ok());
    std::string log;
    EXPECT_EQ(testing::RunCommand(posttrain::testing::Python() + " " + testing::SourceDir() + "/tests/framework/model/llama_reference.py " + dir, &log), 0) << log;
    auto file = SafetensorsFile::Open(dir + "/reference_logits.safetensors");
    EXPECT_TRUE(file.ok()) << file.status();
    return file.ok() ? *file->Get("logits") : at::Tensor();
  };
  const at::Tensor policy_logits = python_logits(*model_, "mix_policy"), reference_logits = python_logits(*reference, "mix_reference");
  ASSERT_TRUE(policy_logits.defined() && reference_logits.defined());
  ASSERT_EQ(drawn_from.size(), static_cast<size_t>(G * new_tokens));
  double worst = 0, moved = 0;
  for (std::int64_t g = 0; g < G; ++g) {
    for (std::int64_t t = 0; t < new_tokens; ++t) {
      // Token t is predicted at position P − 1 + t.
      const at::Tensor expected = 0.7 * policy_logits[g][P - 1 + t] + 0.3 * reference_logits[g][P - 1 + t];
      const at::Tensor& got = drawn_from.at({static_cast<std::size_t>(g), t});
      worst = std::max(worst, (got - expected).abs().max().item<double>());
      moved = std::max(moved, (got - policy_logits[g][P - 1 + t]).abs().max().item<double>());
    }
  }
  EXPECT_LT(worst, 1e-4);
  EXPECT_GT(moved, 1e-2);  // the reference does move the distribution
  // c = 0: the policy's own samples, token for token.
  params.mixture_coef = 0.0;
  params.on_step_logits = nullptr;
  auto pure = Generate(*model_, prompts, G, params, nullptr);
  params.mixture_model = nullptr;
  auto alone = Generate(*model_, prompts, G, params, nullptr);
  ASSERT_TRUE(pure.ok() && alone.ok());
  for (std::int64_t g = 0; g < G; ++g) EXPECT_EQ((*pure)[g].token_ids, (*alone)[g].token_ids);
  // A mixture model of another vocabulary is refused.
  ModelConfig other = model_->config();
  other.vocab_size += 1;
  auto wrong = CausalLM::Random(other, at::kFloat, 1);
  ASSERT_TRUE(wrong.ok());
  params.mixture_model = wrong->get();
  params.mixture_coef = 0.5;
  EXPECT_THAT(Generate(*model_, prompts, 1, params, nullptr).status().message(), ::testing::HasSubstr("same vocabulary"));
  params.mixture_coef = 1.5;
  EXPECT_THAT(ValidateSamplingParams(params).message(), ::testing::HasSubstr("mixture_coef"));
}

}  // namespace
}  // namespace posttrain

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "posttrain/generation/logprobs.h"
#include "posttrain/model/hf_model.h"
#include "posttrain/train/rollout_batch.h"
#include "posttrain/tokenizer/tokenizer.h"
#include "test_support.h"

namespace posttrain {
namespace {

TEST(DefaultSamplerTest, GeneratesRolloutsWithLogprobsFromThePolicy) {
  auto model = LoadCausalLM(testing::Stories260KDir(), at::kFloat);
  ASSERT_TRUE(model.ok()) << model.status();
  auto tokenizer = LoadTokenizer(testing::Stories260KDir());
  ASSERT_TRUE(tokenizer.ok());
  auto sampler = testing::CreateBuiltin<Sampler>(
      "default", {{"max_completion_length", std::int64_t{12}}, {"temperature", 0.0}, {"stop", std::vector<std::string>{"."}}});
  ASSERT_TRUE(sampler.ok()) << sampler.status();
  std::vector<Example> examples(2);
  examples[0].format = ExampleFormat::kPromptOnly;
  examples[0].prompt = "Once upon a time";
  examples[1].format = ExampleFormat::kPromptOnly;
  examples[1].prompt = "The dog";
  std::vector<const Example*> prompts = {&examples[0], &examples[1]};
  SampleRequest request;
  request.prompts = prompts;
  request.num_generations = 2;
  request.policy = Policy{model->get(), tokenizer->get()};
  auto rollouts = (*sampler)->Sample(request);
  ASSERT_TRUE(rollouts.ok()) << rollouts.status();
  ASSERT_EQ(rollouts->size(), 4u);
  EXPECT_EQ((*rollouts)[0].completion, ", there was a little girl named Lily");
  EXPECT_EQ((*rollouts)[0].finish_reason, FinishReason::kStop);
  EXPECT_EQ((*rollouts)[0].token_ids, (*rollouts)[1].token_ids);  // greedy
  EXPECT_EQ((*rollouts)[2].prompt_index, 1);
  for (const Rollout& r : *rollouts) {
    EXPECT_EQ(r.logprobs.size(), r.token_ids.size());
    for (float lp : r.logprobs) EXPECT_LE(lp, 0.0f);
  }
}

// The contract: with the same weights, the sampler's per-token log-probs
// equal what a trainer recomputes from the rollouts (the online trainers' path:
// MakeRolloutBatch + CompletionLogprobs) within 1e-6 in fp32, at temperature T.
TEST(DefaultSamplerTest, SampledLogprobsEqualTheTrainersRecomputation) {
  auto model = LoadCausalLM(testing::Stories260KDir(), at::kFloat);
  auto tokenizer = LoadTokenizer(testing::Stories260KDir());
  ASSERT_TRUE(model.ok() && tokenizer.ok());
  for (double temperature : {1.0, 0.7}) {
    auto sampler = testing::CreateBuiltin<Sampler>(
        "default", {{"max_completion_length", std::int64_t{24}}, {"temperature", temperature}, {"top_k", std::int64_t{50}}});
    ASSERT_TRUE(sampler.ok());
    std::vector<Example> examples(3);
    const char* texts[] = {"Once upon a time", "The dog ran to the park and", "Lily"};
    std::vector<const Example*> prompts;
    for (int i = 0; i < 3; ++i) {
      examples[i].format = ExampleFormat::kPromptOnly;
      examples[i].prompt = texts[i];
      prompts.push_back(&examples[i]);
    }
    SampleRequest request;
    request.prompts = prompts;
    request.num_generations = 4;
    request.seed = 11;
    request.policy = Policy{model->get(), tokenizer->get()};
    auto rollouts = (*sampler)->Sample(request);
    ASSERT_TRUE(rollouts.ok()) << rollouts.status();
    auto rb = MakeRolloutBatch(*rollouts, "test");
    ASSERT_TRUE(rb.ok()) << rb.status();
    at::NoGradGuard no_grad;
    const at::Tensor recomputed = CompletionLogprobs(**model, rb->sequences, temperature) * rb->mask;
    at::Tensor sampled = at::zeros_like(recomputed);
    for (size_t i = 0; i < rollouts->size(); ++i) {
      const std::vector<float>& lp = (*rollouts)[i].logprobs;
      ASSERT_EQ(lp.size(), (*rollouts)[i].token_ids.size());
      sampled[static_cast<std::int64_t>(i)].narrow(0, 0, static_cast<std::int64_t>(lp.size())).copy_(at::tensor(lp));
    }
    const double diff = (recomputed - sampled).abs().max().item<double>();
    EXPECT_LE(diff, 1e-6) << "temperature " << temperature;
    EXPECT_LT(sampled.sum().item<double>(), 0.0);  // real log-probs, not zeros
  }
}

TEST(RolloutBatchTest, MaskTruncatedCompletionsZeroesTheRowsThatHitTheLimit) {
  std::vector<Rollout> rollouts(3);
  for (int i = 0; i < 3; ++i) {
    rollouts[i].prompt_ids = {1, 5};
    rollouts[i].token_ids = std::vector<std::int64_t>(static_cast<size_t>(i + 1), 7);
    rollouts[i].logprobs = std::vector<float>(static_cast<size_t>(i + 1), -0.5f);
    rollouts[i].finish_reason = i == 1 ? FinishReason::kLength : FinishReason::kStop;
  }
  auto kept = MakeRolloutBatch(rollouts, "test", /*mask_truncated=*/false);
  auto masked = MakeRolloutBatch(rollouts, "test", /*mask_truncated=*/true);
  ASSERT_TRUE(kept.ok() && masked.ok());
  auto row_sums = [](const at::Tensor& mask) {
    at::Tensor sums = mask.sum(1).to(at::kLong).contiguous();
    return std::vector<std::int64_t>(sums.data_ptr<std::int64_t>(), sums.data_ptr<std::int64_t>() + sums.numel());
  };
  EXPECT_EQ(row_sums(kept->mask), (std::vector<std::int64_t>{1, 2, 3}));
  EXPECT_EQ(row_sums(masked->mask), (std::vector<std::int64_t>{1, 0, 3}));
  std::map<std::string, double> metrics;
  masked->AddMetrics(&metrics);
  EXPECT_DOUBLE_EQ(metrics.at("completions/clipped_ratio"), 1.0 / 3.0);
  EXPECT_DOUBLE_EQ(metrics.at("completions/mean_length"), 2.0);
  // A non-generating sampler's rollouts are refused with a hint.
  rollouts[0].token_ids.clear();
  EXPECT_THAT(std::string(MakeRolloutBatch(rollouts, "grpo").status().message()),
              ::testing::HasSubstr("use a generating sampler"));
}

TEST(RolloutBatchTest, PerGenerationCacheComputesAtIterationZeroPerMicroBatch) {
  PerGenerationCache cache;
  int computed = 0;
  auto value = [&](float v) {
    return [&computed, v] {
      ++computed;
      return at::full({1}, v);
    };
  };
  StepInput step;
  EXPECT_EQ(cache.Get(step, value(1))[0].item<float>(), 1.0f);  // iteration 0, micro 0
  step.micro_batch = 1;
  EXPECT_EQ(cache.Get(step, value(2))[0].item<float>(), 2.0f);  // iteration 0, micro 1
  step.iteration = 1;
  EXPECT_EQ(cache.Get(step, value(9))[0].item<float>(), 2.0f);  // reused
  step.micro_batch = 0;
  EXPECT_EQ(cache.Get(step, value(9))[0].item<float>(), 1.0f);
  EXPECT_EQ(computed, 2);
  step.iteration = 0;  // a new generation
  EXPECT_EQ(cache.Get(step, value(3))[0].item<float>(), 3.0f);
  EXPECT_EQ(computed, 3);
}

TEST(DefaultSamplerTest, WithoutAModelItSaysWhatIsMissing) {
  auto sampler = testing::CreateBuiltin<Sampler>("default", {});
  ASSERT_TRUE(sampler.ok());
  Example e;
  e.prompt = "x";
  std::vector<const Example*> prompts = {&e};
  SampleRequest request;
  request.prompts = prompts;
  absl::Status s = (*sampler)->Sample(request).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("needs a [model] table"));
}

TEST(DefaultSamplerTest, OptionRangesAreChecked) {
  EXPECT_EQ(testing::CreateBuiltin<Sampler>("default", {{"top_p", 0.0}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(testing::CreateBuiltin<Sampler>("default", {{"max_completion_length", std::int64_t{0}}}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace posttrain

#include <c10/core/GradMode.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "posttrain/generation/generate.h"
#include "posttrain/generation/logprobs.h"
#include "posttrain/model/hf_model.h"
#include "posttrain/train/rollout_batch.h"
#include "posttrain/tokenizer/tokenizer.h"
#include "posttrain/plugin/plugin_host.h"
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
// The distribution each token is drawn from — made by the KV cache over a
// left-padded batch of prompts of different lengths, one token at a time — equals
// the distribution of a plain teacher-forced forward of each finished sequence
// alone (no cache, no padding), over the whole vocabulary at every step. And the
// log-probs the trainers compute (CompletionLogprobs on right-padded batches) give
// the sampled tokens those same values.
TEST(DefaultSamplerTest, DecodingDistributionsEqualATeacherForcedForwardOfEachSequence) {
  auto model = LoadCausalLM(testing::Stories260KDir(), at::kFloat);
  auto tokenizer = LoadTokenizer(testing::Stories260KDir());
  ASSERT_TRUE(model.ok() && tokenizer.ok());
  const std::vector<std::vector<std::int64_t>> prompts = {
      (*tokenizer)->Encode("Once upon a time", true), (*tokenizer)->Encode("The dog ran to the park and then he", true),
      (*tokenizer)->Encode("Lily", true)};
  ASSERT_NE(prompts[0].size(), prompts[1].size());
  for (double temperature : {1.0, 0.7}) {
    SamplingParams params;
    params.max_new_tokens = 24;
    params.temperature = temperature;
    params.top_k = 50;
    params.seed = 11;
    params.eos_token_ids = EosTokenIds(**model, tokenizer->get());
    std::map<std::pair<size_t, std::int64_t>, at::Tensor> decoded;  // (sequence, step) → log-softmax(logits / T)
    params.on_step_logits = [&](size_t index, std::int64_t t, const at::Tensor& logits) {
      decoded[{index, t}] = at::log_softmax(logits.to(at::kDouble) / temperature, -1);
    };
    auto generations = Generate(**model, prompts, /*num_generations=*/4, params, tokenizer->get());
    ASSERT_TRUE(generations.ok()) << generations.status();
    c10::NoGradGuard no_grad;
    double worst = 0;
    std::vector<std::vector<std::int64_t>> batch_prompts, completions;
    for (size_t i = 0; i < generations->size(); ++i) {
      const Generation& g = (*generations)[i];
      const std::vector<std::int64_t>& prompt = prompts[static_cast<size_t>(g.prompt_index)];
      std::vector<std::int64_t> ids = prompt;
      ids.insert(ids.end(), g.token_ids.begin(), g.token_ids.end());
      const auto len = static_cast<std::int64_t>(ids.size());
      at::Tensor logits = (*model)->Forward(at::tensor(ids, at::kLong).unsqueeze(0), at::arange(len, at::kLong).unsqueeze(0),
                                            at::Tensor(), nullptr)[0];
      for (size_t t = 0; t < g.token_ids.size(); ++t) {
        const at::Tensor full = at::log_softmax(
            logits[static_cast<std::int64_t>(prompt.size() + t) - 1].to(at::kDouble) / temperature, -1);
        ASSERT_TRUE(decoded.count({i, static_cast<std::int64_t>(t)})) << i << " " << t;
        worst = std::max(worst, (full - decoded.at({i, static_cast<std::int64_t>(t)})).abs().max().item<double>());
      }
      batch_prompts.push_back(prompt);
      completions.push_back(g.token_ids);
    }
    EXPECT_LE(worst, 1e-4) << "temperature " << temperature;
    // The trainers' recomputation gives the sampled tokens the same log-probs.
    CompletionBatch batch = MakeCompletionBatch(batch_prompts, completions, at::kCPU);
    const at::Tensor trainer = CompletionLogprobs(**model, batch, temperature);
    double worst_token = 0;
    for (size_t i = 0; i < completions.size(); ++i) {
      for (size_t t = 0; t < completions[i].size(); ++t) {
        const double d = decoded.at({i, static_cast<std::int64_t>(t)})[completions[i][t]].item<double>();
        worst_token = std::max(worst_token, std::abs(d - trainer[static_cast<std::int64_t>(i)][static_cast<std::int64_t>(t)].item<double>()));
      }
    }
    EXPECT_LE(worst_token, 1e-4) << "temperature " << temperature;
    RecordProperty("max_abs_logprob_diff", std::to_string(std::max(worst, worst_token)));
  }
}

// One source of truth for prompt length: the engine tokenizes and cuts prompts
// (the trainer's max_prompt_length and truncation_mode); the sampler generates
// from exactly those ids and has no length option of its own.
TEST(DefaultSamplerTest, GeneratesFromThePromptIdsTheEngineMade) {
  const RegisteredComponent* c = testing::BuiltinHost().registry().Find(ComponentKind::kSampler, "default");
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->registration.schema.Find("max_prompt_length"), nullptr);
  EXPECT_EQ(c->registration.schema.Find("add_special_tokens"), nullptr);
  auto model = LoadCausalLM(testing::Stories260KDir(), at::kFloat);
  auto tokenizer = LoadTokenizer(testing::Stories260KDir());
  auto sampler = testing::CreateBuiltin<Sampler>("default", {{"max_completion_length", std::int64_t{4}}});
  ASSERT_TRUE(model.ok() && tokenizer.ok() && sampler.ok());
  std::vector<Example> examples(1);
  examples[0].format = ExampleFormat::kPromptOnly;
  examples[0].prompt = "Once upon a time there was a dog";
  const std::vector<std::int64_t> cut = {1, 403, 261};  // what the engine kept of it
  std::vector<const Example*> prompts = {&examples[0]};
  std::vector<const std::vector<std::int64_t>*> ids = {&cut};
  SampleRequest request;
  request.prompts = prompts;
  request.prompt_ids = ids;
  request.num_generations = 2;
  request.policy = Policy{model->get(), tokenizer->get()};
  auto rollouts = (*sampler)->Sample(request);
  ASSERT_TRUE(rollouts.ok()) << rollouts.status();
  for (const Rollout& r : *rollouts) EXPECT_EQ(r.prompt_ids, cut);
}

TEST(RolloutBatchTest, MaskTruncatedCompletionsZeroesTheRowsThatHitTheLimit) {
  std::vector<Rollout> rollouts(3);
  for (int i = 0; i < 3; ++i) {
    rollouts[i].prompt_ids = {1, 5};
    rollouts[i].token_ids = std::vector<std::int64_t>(static_cast<size_t>(i + 1), 7);
    rollouts[i].logprobs = std::vector<float>(static_cast<size_t>(i + 1), -0.5f);
    rollouts[i].finish_reason = i == 1 ? FinishReason::kLength : FinishReason::kStop;
  }
  auto kept = MakeRolloutBatch(rollouts, at::kCPU, "test", /*mask_truncated=*/false);
  auto masked = MakeRolloutBatch(rollouts, at::kCPU, "test", /*mask_truncated=*/true);
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
  EXPECT_THAT(std::string(MakeRolloutBatch(rollouts, at::kCPU, "grpo").status().message()),
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

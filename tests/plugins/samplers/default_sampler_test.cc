#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "posttrain/model/hf_model.h"
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

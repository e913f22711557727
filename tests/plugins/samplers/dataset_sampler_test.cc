#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test_support.h"

namespace posttrain {
namespace {

using ::testing::HasSubstr;
using testing::CreateBuiltin;

TEST(DatasetSamplerTest, ReplaysTheChosenFieldGroupedByPrompt) {
  std::vector<Example> examples(2);
  examples[0].completion = "c0";
  examples[0].chosen = "good0";
  examples[1].completion = "c1";
  examples[1].metadata = {{"answer", "42"}};
  std::vector<const Example*> prompts = {&examples[0], &examples[1]};
  SampleRequest request;
  request.prompts = prompts;
  request.num_generations = 3;

  auto sampler = CreateBuiltin<Sampler>("dataset", {});
  ASSERT_TRUE(sampler.ok());
  absl::StatusOr<std::vector<Rollout>> rollouts = (*sampler)->Sample(request);
  ASSERT_TRUE(rollouts.ok());
  ASSERT_EQ(rollouts->size(), 6u);
  EXPECT_EQ((*rollouts)[2].prompt_index, 0);
  EXPECT_EQ((*rollouts)[3].prompt_index, 1);
  EXPECT_EQ((*rollouts)[3].completion, "c1");
  EXPECT_EQ((*rollouts)[3].finish_reason, FinishReason::kSource);

  auto from_metadata = CreateBuiltin<Sampler>("dataset", {{"field", std::string("metadata:answer")}});
  ASSERT_TRUE(from_metadata.ok());
  absl::Status s = (*from_metadata)->Sample(request).status();  // example 0 has no "answer"
  EXPECT_THAT(std::string(s.message()), HasSubstr("wants a string field \"answer\""));
}

TEST(DatasetSamplerTest, UnknownFieldIsRefused) {
  auto sampler = CreateBuiltin<Sampler>("dataset", {{"field", std::string("answer")}});
  EXPECT_EQ(sampler.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace posttrain

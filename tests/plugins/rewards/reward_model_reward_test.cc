#include <c10/core/GradMode.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "posttrain/model/hf_model.h"
#include "posttrain/tokenizer/tokenizer.h"
#include "reward_test_util.h"
#include "test_support.h"

namespace posttrain {
namespace {

using ::testing::HasSubstr;

// A reward model directory as the reward trainer saves it: stories260K's backbone
// with a random score head, LlamaForSequenceClassification.
std::string SaveRewardModel(at::Tensor* score) {
  auto model = LoadCausalLM(testing::Stories260KDir(), at::kFloat);
  EXPECT_TRUE(model.ok());
  *score = at::randn({1, (*model)->config().hidden_size}, at::kFloat) * 0.5;
  SaveOptions save;
  save.tokenizer_source_dir = testing::Stories260KDir();
  save.extras = {{"score.weight", *score}};
  save.architecture = "LlamaForSequenceClassification";
  save.num_labels = 1;
  const std::string dir = testing::TempDir("reward_model");
  EXPECT_TRUE(SaveCausalLM(**model, dir, save).ok());
  return dir;
}

TEST(RewardModelRewardTest, ScoresScoreDotTheLastHiddenStateOfPromptCompletionEos) {
  at::manual_seed(3);
  at::Tensor score;
  const std::string dir = SaveRewardModel(&score);
  auto reward = testing::CreateBuiltin<RewardFunction>("reward_model", {{"path", dir}, {"batch_size", std::int64_t{2}}});
  ASSERT_TRUE(reward.ok()) << reward.status();
  const std::vector<std::string> completions = {" there was a dog.", " a cat sat", " the end"};
  absl::StatusOr<std::vector<float>> scores = testing::ScoreRows(**reward, "Once upon a time", completions, {nlohmann::json::object()});
  ASSERT_TRUE(scores.ok()) << scores.status();

  // Independently: each sequence alone through the plain causal LM.
  auto lm = LoadCausalLM(testing::Stories260KDir(), at::kFloat);
  auto tokenizer = LoadTokenizer(testing::Stories260KDir());
  c10::NoGradGuard no_grad;
  for (size_t i = 0; i < completions.size(); ++i) {
    std::vector<std::int64_t> ids = (*tokenizer)->Encode("Once upon a time", true);
    for (std::int64_t id : (*tokenizer)->Encode(completions[i], false)) ids.push_back(id);
    ids.push_back(*(*tokenizer)->eos_token_id());
    const auto n = static_cast<std::int64_t>(ids.size());
    at::Tensor hidden = (*lm)->Hidden(at::tensor(ids).view({1, n}), at::arange(n).view({1, n}), at::ones({1, n}, at::kLong), nullptr);
    const double expected = (hidden[0][n - 1] * score[0]).sum().item<double>();
    EXPECT_NEAR((*scores)[i], expected, 1e-4 * std::max(1.0, std::abs(expected))) << completions[i];
  }
}

TEST(RewardModelRewardTest, ACausalLmDirectoryIsRefusedWithAHint) {
  auto reward = testing::CreateBuiltin<RewardFunction>("reward_model", {{"path", testing::Stories260KDir()}});
  ASSERT_FALSE(reward.ok());
  EXPECT_THAT(std::string(reward.status().message()), HasSubstr("not a sequence classifier"));
  auto missing = testing::CreateBuiltin<RewardFunction>("reward_model", {{"path", std::string("/nonexistent/rm")}});
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("does not exist"));
}

}  // namespace
}  // namespace posttrain

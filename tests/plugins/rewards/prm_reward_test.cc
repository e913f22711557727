#include <c10/core/GradMode.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "absl/strings/str_split.h"
#include "posttrain/model/hf_model.h"
#include "posttrain/tokenizer/tokenizer.h"
#include "reward_test_util.h"
#include "test_support.h"

namespace posttrain {
namespace {

using ::testing::HasSubstr;

// A process reward model as the prm trainer saves it: stories260K's backbone with a
// random [2, hidden] head, LlamaForTokenClassification.
std::string SavePrm(at::Tensor* score) {
  auto model = LoadCausalLM(testing::Stories260KDir(), at::kFloat);
  EXPECT_TRUE(model.ok());
  *score = at::randn({2, (*model)->config().hidden_size}, at::kFloat);
  SaveOptions save;
  save.tokenizer_source_dir = testing::Stories260KDir();
  save.extras = {{"score.weight", *score}};
  save.architecture = "LlamaForTokenClassification";
  save.num_labels = 2;
  const std::string dir = testing::TempDir("prm_model");
  EXPECT_TRUE(SaveCausalLM(**model, dir, save).ok());
  return dir;
}

// Each step's score is softmax(score · h)[1] at the last token of its separator,
// against the plain (unpacked) causal LM on prompt + steps; the aggregations are the
// min, product, mean and last of those.
TEST(PrmRewardTest, ScoresEachStepAtItsSeparatorAndAggregates) {
  at::manual_seed(4);
  at::Tensor score;
  const std::string dir = SavePrm(&score);
  const std::string prompt = "Tom has 3 apples.";
  const std::vector<std::string> completions = {"He buys 4.\n3 + 4 = 7\nThe answer is 7.", "The answer is 9.", "\n\n"};

  auto lm = LoadCausalLM(testing::Stories260KDir(), at::kFloat);
  auto tokenizer = LoadTokenizer(testing::Stories260KDir());
  ASSERT_TRUE(lm.ok() && tokenizer.ok());
  const std::vector<std::int64_t> separator = (*tokenizer)->Encode("\n", false);
  std::vector<std::vector<double>> steps_of(completions.size());
  c10::NoGradGuard no_grad;
  for (size_t i = 0; i < 2; ++i) {
    std::vector<std::int64_t> ids = (*tokenizer)->Encode(prompt, true);
    std::vector<std::int64_t> ends;
    for (absl::string_view step : absl::StrSplit(completions[i], '\n')) {
      for (std::int64_t id : (*tokenizer)->Encode(std::string(step), false)) ids.push_back(id);
      ids.insert(ids.end(), separator.begin(), separator.end());
      ends.push_back(static_cast<std::int64_t>(ids.size()) - 1);
    }
    const auto n = static_cast<std::int64_t>(ids.size());
    const at::Tensor hidden = (*lm)->Hidden(at::tensor(ids).view({1, n}), at::arange(n).view({1, n}), at::ones({1, n}, at::kLong), nullptr);
    for (std::int64_t e : ends) steps_of[i].push_back(at::softmax(at::matmul(score, hidden[0][e]), 0)[1].item<double>());
  }
  ASSERT_EQ(steps_of[0].size(), 3u);
  std::map<std::string, std::vector<double>> expected;
  for (const auto& s : steps_of) {
    if (s.empty()) {
      for (const char* a : {"min", "prod", "mean", "last"}) expected[a].push_back(0.0);  // no step
      continue;
    }
    double prod = 1, sum = 0;
    for (double v : s) prod *= v, sum += v;
    expected["min"].push_back(*std::min_element(s.begin(), s.end()));
    expected["prod"].push_back(prod);
    expected["mean"].push_back(sum / static_cast<double>(s.size()));
    expected["last"].push_back(s.back());
  }
  for (const auto& [aggregation, want] : expected) {
    auto reward = testing::CreateBuiltin<RewardFunction>("prm", {{"path", dir}, {"aggregation", aggregation}, {"batch_size", std::int64_t{2}}});
    ASSERT_TRUE(reward.ok()) << reward.status();
    absl::StatusOr<std::vector<float>> got = testing::ScoreRows(**reward, prompt, completions, {nlohmann::json::object()});
    ASSERT_TRUE(got.ok()) << got.status();
    for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR((*got)[i], want[i], 1e-5) << aggregation << " " << i;
  }
}

// Hub token classifiers carry a bias (transformers' GenericForTokenClassification:
// `score.weight` + `score.bias`; GPT-2/NeoX/BLOOM and old Phi checkpoints:
// `classifier.*`). The step score is softmax(W h + b)[1], by hand against the plain
// causal LM; a bias of the wrong shape is refused naming the tensor.
TEST(PrmRewardTest, ReadsBiasedScoreAndClassifierHeads) {
  auto lm = LoadCausalLM(testing::Stories260KDir(), at::kFloat);
  auto tokenizer = LoadTokenizer(testing::Stories260KDir());
  ASSERT_TRUE(lm.ok() && tokenizer.ok());
  at::manual_seed(9);
  const at::Tensor weight = 0.05 * at::randn({2, (*lm)->config().hidden_size}, at::kFloat);  // unsaturated
  const at::Tensor bias = at::tensor({1.5f, -0.75f});
  const std::string prompt = "Tom has 3 apples.";
  const std::string completion = "He buys 4.\nThe answer is 7.";
  std::vector<std::int64_t> ids = (*tokenizer)->Encode(prompt, true);
  const std::vector<std::int64_t> separator = (*tokenizer)->Encode("\n", false);
  std::vector<std::int64_t> ends;
  for (absl::string_view step : absl::StrSplit(completion, '\n')) {
    for (std::int64_t id : (*tokenizer)->Encode(std::string(step), false)) ids.push_back(id);
    ids.insert(ids.end(), separator.begin(), separator.end());
    ends.push_back(static_cast<std::int64_t>(ids.size()) - 1);
  }
  const auto n = static_cast<std::int64_t>(ids.size());
  c10::NoGradGuard no_grad;
  const at::Tensor hidden = (*lm)->Hidden(at::tensor(ids).view({1, n}), at::arange(n).view({1, n}), at::ones({1, n}, at::kLong), nullptr);
  double with_bias = 1, without = 1;  // the product of the step scores
  for (std::int64_t e : ends) {
    const double l0 = (weight[0] * hidden[0][e]).sum().item<double>(), l1 = (weight[1] * hidden[0][e]).sum().item<double>();
    with_bias *= 1 / (1 + std::exp((l0 + 1.5) - (l1 - 0.75)));
    without *= 1 / (1 + std::exp(l0 - l1));
  }
  ASSERT_GT(std::abs(with_bias - without), 1e-3) << "the bias should matter";
  for (const char* name : {"score", "classifier"}) {
    SCOPED_TRACE(name);
    SaveOptions save;
    save.tokenizer_source_dir = testing::Stories260KDir();
    save.extras = {{std::string(name) + ".weight", weight}, {std::string(name) + ".bias", bias}};
    save.architecture = "LlamaForTokenClassification";
    save.num_labels = 2;
    const std::string dir = testing::TempDir(std::string("prm_biased_") + name);
    ASSERT_TRUE(SaveCausalLM(**lm, dir, save).ok());
    auto reward = testing::CreateBuiltin<RewardFunction>("prm", {{"path", dir}, {"aggregation", std::string("prod")}});
    ASSERT_TRUE(reward.ok()) << reward.status();
    absl::StatusOr<std::vector<float>> got = testing::ScoreRows(**reward, prompt, {completion}, {nlohmann::json::object()});
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_NEAR((*got)[0], with_bias, 1e-5);
  }
  SaveOptions bad;
  bad.tokenizer_source_dir = testing::Stories260KDir();
  bad.extras = {{"score.weight", weight}, {"score.bias", at::zeros({3})}};
  bad.architecture = "LlamaForTokenClassification";
  bad.num_labels = 2;
  const std::string dir = testing::TempDir("prm_bad_bias");
  ASSERT_TRUE(SaveCausalLM(**lm, dir, bad).ok());
  auto reward = testing::CreateBuiltin<RewardFunction>("prm", {{"path", dir}});
  ASSERT_FALSE(reward.ok());
  EXPECT_THAT(std::string(reward.status().message()), HasSubstr("score.bias is [3], expected [2] (num_labels)"));
}

TEST(PrmRewardTest, ASequenceClassifierIsRefusedWithAHint) {
  auto reward = testing::CreateBuiltin<RewardFunction>("prm", {{"path", testing::Stories260KDir()}});
  ASSERT_FALSE(reward.ok());
  EXPECT_THAT(std::string(reward.status().message()), HasSubstr("not a token classifier"));
}

}  // namespace
}  // namespace posttrain

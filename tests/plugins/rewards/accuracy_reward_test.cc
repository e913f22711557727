#include <fstream>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "reward_test_util.h"
#include "test_support.h"

namespace posttrain {
namespace {

using ::testing::ElementsAre;

std::unique_ptr<RewardFunction> Accuracy(std::map<std::string, OptionValue> options = {}) {
  auto reward = testing::CreateBuiltin<RewardFunction>("accuracy", std::move(options));
  EXPECT_TRUE(reward.ok()) << reward.status();
  return std::move(*reward);
}

// Every gold GSM8K answer (train and test) scores 1.0 against itself; with its
// final number changed by one it scores 0.0.
TEST(AccuracyRewardTest, EveryGoldGsm8kAnswerScoresOneAndAChangedNumberZero) {
  auto reward = Accuracy();
  std::int64_t checked = 0;
  for (const char* file : {"gsm8k_train.jsonl", "gsm8k_test.jsonl"}) {
    std::ifstream in(testing::DataPath(file));
    ASSERT_TRUE(in) << file;
    std::string line;
    std::vector<std::string> gold, changed;
    std::vector<nlohmann::json> metadata;
    while (std::getline(in, line)) {
      const nlohmann::json record = nlohmann::json::parse(line);
      const std::string answer = record["answer"].get<std::string>();
      const size_t marker = answer.rfind("####");
      ASSERT_NE(marker, std::string::npos);
      std::string number = answer.substr(marker + 4);
      number.erase(std::remove(number.begin(), number.end(), ','), number.end());
      const long long value = std::stoll(number);
      gold.push_back(answer);
      changed.push_back(answer.substr(0, marker) + "#### " + std::to_string(value + 1));
      metadata.push_back({{"answer", answer}});
    }
    absl::StatusOr<std::vector<float>> ones = testing::ScoreRows(*reward, "q", gold, metadata);
    absl::StatusOr<std::vector<float>> zeros = testing::ScoreRows(*reward, "q", changed, metadata);
    ASSERT_TRUE(ones.ok() && zeros.ok());
    for (size_t i = 0; i < gold.size(); ++i) {
      ASSERT_EQ((*ones)[i], 1.0f) << file << " record " << i << ": " << gold[i];
      ASSERT_EQ((*zeros)[i], 0.0f) << file << " record " << i << ": " << changed[i];
    }
    checked += static_cast<std::int64_t>(gold.size());
  }
  EXPECT_EQ(checked, 7473 + 1319);
}

TEST(AccuracyRewardTest, ExtractsTheFinalAnswerFromFreeText) {
  auto reward = Accuracy();
  const std::vector<nlohmann::json> gold = {{{"answer", "#### 1000"}}};
  EXPECT_THAT(*testing::ScoreRows(*reward, "q",
                                  {"She pays $1,000.", "3 + 4 = 7, so the answer is 1000", "The answer is \\boxed{1000}.",
                                   "1000 apples, minus 3 = 997", "no number here", "10000", "#### 1,000 (after 5 days)"},
                                  gold),
              ElementsAre(1, 1, 1, 0, 0, 0, 1));
  // Negative numbers, decimals and fractions; SVAMP's numeric "Answer".
  auto svamp = Accuracy({{"answer_field", std::string("Answer")}});
  EXPECT_THAT(*testing::ScoreRows(*svamp, "q", {"It is 51.", "51.0", "-51", "102/2", "50.99"}, {{{"Answer", 51.0}}}),
              ElementsAre(1, 1, 0, 1, 0));
  EXPECT_THAT(*testing::ScoreRows(*svamp, "q", {"went down by -3", "3", "0.75", "3/4"}, {{{"Answer", -3}}}),
              ElementsAre(1, 0, 0, 0));
  EXPECT_THAT(*testing::ScoreRows(*svamp, "q", {"0.75", "3/4", "1"}, {{{"Answer", 0.75}}}), ElementsAre(1, 1, 0));
}

TEST(AccuracyRewardTest, AMissingReferenceFieldIsAnErrorNamingTheFields) {
  auto reward = Accuracy();
  absl::StatusOr<std::vector<float>> scores =
      testing::ScoreRows(*reward, "q", {"42"}, {{{"solution", "42"}, {"id", 3}}});
  ASSERT_FALSE(scores.ok());
  EXPECT_THAT(std::string(scores.status().message()), ::testing::HasSubstr("no reference field \"answer\""));
  EXPECT_THAT(std::string(scores.status().message()), ::testing::HasSubstr("\"solution\""));
}

}  // namespace
}  // namespace posttrain

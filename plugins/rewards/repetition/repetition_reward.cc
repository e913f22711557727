// Reward function "repetition": penalises repeated word n-grams (the repetition
// penalty reward of Yeo et al. 2025, "Demystifying Long Chain-of-Thought", as
// open-r1 implements it):
//   score = (1 − #distinct n-grams / #n-grams) · max_penalty      (max_penalty ≤ 0)
// Words are lower-cased maximal runs of non-space characters; a completion with
// fewer than n words scores 0.
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "posttrain/plugin/plugin.h"

namespace posttrain {
namespace {

class RepetitionReward final : public RewardFunction {
 public:
  static ComponentSchema Schema() {
    return ComponentSchema("(1 − distinct n-grams / n-grams) · max_penalty: 0 for no repetition, max_penalty for all.")
        .Int("ngram_size", 3, "n of the word n-grams.").AtLeast(1)
        .Float("max_penalty", -1.0, "Score of a completion that only repeats (<= 0).").AtMost(0);
  }
  static absl::StatusOr<std::unique_ptr<RewardFunction>> Create(const ComponentConfig& config) {
    auto r = std::make_unique<RepetitionReward>();
    r->n_ = config.GetInt("ngram_size");
    r->max_penalty_ = config.GetFloat("max_penalty");
    if (r->n_ < 1) return config.Error("ngram_size", "must be >= 1");
    if (r->max_penalty_ > 0) return config.Error("max_penalty", "must be <= 0");
    return r;
  }
  absl::StatusOr<std::vector<float>> Score(absl::Span<const RewardInput> batch) const override {
    std::vector<float> scores;
    for (const RewardInput& in : batch) {
      std::vector<std::string> words = absl::StrSplit(absl::AsciiStrToLower(in.completion), absl::ByAnyChar(" \t\n\r\f\v"), absl::SkipEmpty());
      const auto n = static_cast<size_t>(n_);
      if (words.size() < n) {
        scores.push_back(0.0f);
        continue;
      }
      std::set<std::string> distinct;
      const size_t total = words.size() - n + 1;
      for (size_t i = 0; i < total; ++i) {
        distinct.insert(absl::StrJoin(words.begin() + static_cast<std::ptrdiff_t>(i),
                                      words.begin() + static_cast<std::ptrdiff_t>(i + n), " "));
      }
      scores.push_back(static_cast<float>((1.0 - static_cast<double>(distinct.size()) / total) * max_penalty_));
    }
    return scores;
  }

 private:
  std::int64_t n_ = 3;
  double max_penalty_ = -1.0;
};

}  // namespace
}  // namespace posttrain

POSTTRAIN_REGISTER_REWARD_FUNCTION("repetition", posttrain::RepetitionReward);
POSTTRAIN_PLUGIN("posttrain_reward_repetition");

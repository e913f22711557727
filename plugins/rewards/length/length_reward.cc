// Reward function "length": the completion's length, or its distance to a target.
//
//   [[rewards]]
//   type = "length"
//   unit = "words"
//   target = 50        # score = -|words - 50| * scale   (default target 0: words * scale)
//   scale = 0.02
//
// Words are maximal runs of non-whitespace characters; chars are bytes of UTF-8.
#include <cmath>

#include "absl/strings/ascii.h"
#include "posttrain/plugin/plugin.h"

namespace posttrain {
namespace {

class LengthReward final : public RewardFunction {
 public:
  static ComponentSchema Schema() {
    return ComponentSchema(
               "Length of the completion times `scale`; with `target` > 0, "
               "-|length - target| times `scale` (closer to the target is better).")
        .String("unit", "words", "What to count.", {"words", "chars"})
        .Float("target", 0.0, "Target length (0: reward the length itself).").AtLeast(0)
        .Float("scale", 1.0, "Multiplier of the score.");
  }

  static absl::StatusOr<std::unique_ptr<RewardFunction>> Create(const ComponentConfig& config) {
    auto reward = std::make_unique<LengthReward>();
    reward->count_words_ = config.GetString("unit") == "words";
    reward->target_ = config.GetFloat("target");
    reward->scale_ = config.GetFloat("scale");
    if (reward->target_ < 0) return config.Error("target", "must be >= 0");
    return reward;
  }

  absl::StatusOr<std::vector<float>> Score(absl::Span<const RewardInput> batch) const override {
    std::vector<float> scores;
    scores.reserve(batch.size());
    for (const RewardInput& input : batch) {
      const double length = count_words_ ? static_cast<double>(CountWords(input.completion))
                                         : static_cast<double>(input.completion.size());
      const double score = target_ > 0 ? -std::abs(length - target_) : length;
      scores.push_back(static_cast<float>(score * scale_));
    }
    return scores;
  }

  static std::size_t CountWords(absl::string_view text) {
    std::size_t words = 0;
    bool in_word = false;
    for (char c : text) {
      const bool space = absl::ascii_isspace(static_cast<unsigned char>(c));
      if (!space && !in_word) ++words;
      in_word = !space;
    }
    return words;
  }

 private:
  bool count_words_ = true;
  double target_ = 0.0;
  double scale_ = 1.0;
};

}  // namespace
}  // namespace posttrain

POSTTRAIN_REGISTER_REWARD_FUNCTION("length", posttrain::LengthReward);
POSTTRAIN_PLUGIN("posttrain_reward_length");

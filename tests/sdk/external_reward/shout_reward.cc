// An out-of-tree reward function: the share of upper-case letters in the completion.
#include <cctype>

#include "posttrain/plugin/plugin.h"

namespace {

class ShoutReward final : public posttrain::RewardFunction {
 public:
  static posttrain::ComponentSchema Schema() {
    return posttrain::ComponentSchema("Share of letters that are upper case, times `scale`.")
        .Float("scale", 1.0, "Multiplier.");
  }
  static absl::StatusOr<std::unique_ptr<posttrain::RewardFunction>> Create(
      const posttrain::ComponentConfig& config) {
    auto reward = std::make_unique<ShoutReward>();
    reward->scale_ = config.GetFloat("scale");
    return reward;
  }
  absl::StatusOr<std::vector<float>> Score(
      absl::Span<const posttrain::RewardInput> batch) const override {
    std::vector<float> scores;
    for (const auto& input : batch) {
      int letters = 0, upper = 0;
      for (unsigned char c : input.completion) {
        if (std::isalpha(c)) {
          ++letters;
          upper += std::isupper(c) ? 1 : 0;
        }
      }
      scores.push_back(letters == 0 ? 0.0f : static_cast<float>(scale_ * upper / letters));
    }
    return scores;
  }

 private:
  double scale_ = 1.0;
};

}  // namespace

POSTTRAIN_REGISTER_REWARD_FUNCTION("shout", ShoutReward);
POSTTRAIN_PLUGIN("shout_reward");

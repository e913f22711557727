// Reward function "keyword": 1.0 if the completion mentions any of the given words.
//
//   [[rewards]]
//   type = "keyword"
//   keywords = ["dog", "puppy"]
//
// A mention is a whole-word match (letters and digits on neither side) unless
// whole_word = false; case-insensitive (ASCII) unless case_sensitive = true.
#include "absl/strings/ascii.h"
#include "posttrain/plugin/plugin.h"

namespace posttrain {
namespace {

class KeywordReward final : public RewardFunction {
 public:
  static ComponentSchema Schema() {
    return ComponentSchema("1.0 if the completion mentions any of `keywords`, else 0.0.")
        .Required("keywords", OptionType::kStringList, "Words to look for (non-empty).")
        .Bool("case_sensitive", false, "Match case exactly (default: ASCII case-insensitive).")
        .Bool("whole_word", true, "Only count matches not inside a longer word.");
  }

  static absl::StatusOr<std::unique_ptr<RewardFunction>> Create(const ComponentConfig& config) {
    auto reward = std::make_unique<KeywordReward>();
    reward->case_sensitive_ = config.GetBool("case_sensitive");
    reward->whole_word_ = config.GetBool("whole_word");
    for (const std::string& word : config.GetStringList("keywords")) {
      if (word.empty()) return config.Error("keywords", "must not contain an empty word");
      reward->keywords_.push_back(reward->case_sensitive_ ? word : absl::AsciiStrToLower(word));
    }
    if (reward->keywords_.empty()) return config.Error("keywords", "must name at least one word");
    return reward;
  }

  absl::StatusOr<std::vector<float>> Score(absl::Span<const RewardInput> batch) const override {
    std::vector<float> scores;
    scores.reserve(batch.size());
    for (const RewardInput& input : batch) {
      const std::string text = case_sensitive_ ? std::string(input.completion)
                                               : absl::AsciiStrToLower(input.completion);
      scores.push_back(Mentions(text) ? 1.0f : 0.0f);
    }
    return scores;
  }

 private:
  static bool IsWordChar(char c) { return absl::ascii_isalnum(static_cast<unsigned char>(c)); }

  bool Mentions(const std::string& text) const {
    for (const std::string& word : keywords_) {
      for (size_t pos = text.find(word); pos != std::string::npos; pos = text.find(word, pos + 1)) {
        if (!whole_word_) return true;
        const bool left_ok = pos == 0 || !IsWordChar(text[pos - 1]);
        const size_t end = pos + word.size();
        const bool right_ok = end == text.size() || !IsWordChar(text[end]);
        if (left_ok && right_ok) return true;
      }
    }
    return false;
  }

  std::vector<std::string> keywords_;
  bool case_sensitive_ = false;
  bool whole_word_ = true;
};

}  // namespace
}  // namespace posttrain

POSTTRAIN_REGISTER_REWARD_FUNCTION("keyword", posttrain::KeywordReward);
POSTTRAIN_PLUGIN("posttrain_reward_keyword");

// Reward function "format": 1.0 if the completion matches a regular expression.
//
//   [[rewards]]
//   type = "format"
//   pattern = '^<think>.*?</think>\s*<answer>.*?</answer>$'
//
// PCRE2 (Perl-compatible) syntax, UTF-8. full_match = true (default) requires the
// whole completion to match (as TRL's format rewards do with re.match and ^...$);
// false finds the pattern anywhere. dotall = true (default) lets "." match newlines.
// A pattern that does not compile is a recipe error showing PCRE2's message and
// the offset.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "posttrain/plugin/plugin.h"

namespace posttrain {
namespace {

class FormatReward final : public RewardFunction {
 public:
  static ComponentSchema Schema() {
    return ComponentSchema("1.0 if the completion matches `pattern` (PCRE2), else 0.0.")
        .Required("pattern", OptionType::kString, "The regular expression.")
        .Bool("full_match", true, "The whole completion must match (false: anywhere).")
        .Bool("dotall", true, "'.' matches newlines too.")
        .Bool("case_insensitive", false, "Ignore case.");
  }

  static absl::StatusOr<std::unique_ptr<RewardFunction>> Create(const ComponentConfig& config) {
    const std::string pattern = config.GetString("pattern");
    std::uint32_t flags = PCRE2_UTF;
    if (config.GetBool("dotall")) flags |= PCRE2_DOTALL;
    if (config.GetBool("case_insensitive")) flags |= PCRE2_CASELESS;
    if (config.GetBool("full_match")) flags |= PCRE2_ANCHORED | PCRE2_ENDANCHORED;
    int error = 0;
    PCRE2_SIZE offset = 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), flags, &error,
                                     &offset, nullptr);
    if (code == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof(message));
      return config.Error("pattern", absl::StrCat("does not compile at offset ", offset, ": ",
                                                  reinterpret_cast<const char*>(message)));
    }
    auto reward = std::make_unique<FormatReward>();
    reward->code_.reset(code);
    return reward;
  }

  absl::StatusOr<std::vector<float>> Score(absl::Span<const RewardInput> batch) const override {
    // Match data is per call: Score runs on several threads at once.
    std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> match(
        pcre2_match_data_create_from_pattern(code_.get(), nullptr), &pcre2_match_data_free);
    std::vector<float> scores;
    scores.reserve(batch.size());
    for (const RewardInput& input : batch) {
      const int rc = pcre2_match(code_.get(), reinterpret_cast<PCRE2_SPTR>(input.completion.data()),
                                 input.completion.size(), 0, 0, match.get(), nullptr);
      if (rc < 0 && rc != PCRE2_ERROR_NOMATCH) {
        PCRE2_UCHAR message[256];
        pcre2_get_error_message(rc, message, sizeof(message));
        return absl::InternalError(absl::StrCat("PCRE2 match failed: ", reinterpret_cast<const char*>(message)));
      }
      scores.push_back(rc >= 0 ? 1.0f : 0.0f);
    }
    return scores;
  }

 private:
  struct CodeFree {
    void operator()(pcre2_code* code) const { pcre2_code_free(code); }
  };
  std::unique_ptr<pcre2_code, CodeFree> code_;
};

}  // namespace
}  // namespace posttrain

POSTTRAIN_REGISTER_REWARD_FUNCTION("format", posttrain::FormatReward);
POSTTRAIN_PLUGIN("posttrain_reward_format");

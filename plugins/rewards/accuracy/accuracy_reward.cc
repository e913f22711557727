// Reward function "accuracy": 1.0 if the completion's final answer equals the
// reference answer, else 0.0 (GSM8K / SVAMP-style numeric answers).
//
//   [[rewards]]
//   type = "accuracy"
//   answer_field = "answer"     # the example's field with the reference answer
//
// The answer of a text (completion or reference string) is, in this order of
// preference: the first number inside the last \boxed{...}; the first number after
// the last "####" (GSM8K's marker); else the last number in the text. Numbers may
// carry a sign, thousands separators ("1,000"), a decimal part or be a fraction
// ("3/4"); "$" and "%" around them are ignored. A reference stored as a JSON number
// (SVAMP's "Answer": 51.0) is used as is. Equal means |a − b| <= tolerance (absolute:
// "192000001" is not "192000000").
// A completion without a number scores 0.0; an example without the answer field is
// an error naming the example's fields.
#include <cmath>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "posttrain/plugin/plugin.h"

namespace posttrain {
namespace {

struct NumberSpan {
  double value;
  size_t begin, end;
};

// Every number in `text`, left to right.
std::vector<NumberSpan> FindNumbers(absl::string_view text) {
  std::vector<NumberSpan> numbers;
  size_t i = 0;
  auto digit = [&](size_t k) { return k < text.size() && absl::ascii_isdigit(static_cast<unsigned char>(text[k])); };
  while (i < text.size()) {
    if (!digit(i)) {
      ++i;
      continue;
    }
    const size_t begin = i;
    std::string digits;
    // Integer part with optional thousands separators: a comma counts only if
    // exactly three digits follow it.
    while (true) {
      while (digit(i)) digits.push_back(text[i++]);
      if (i < text.size() && text[i] == ',' && digit(i + 1) && digit(i + 2) && digit(i + 3) && !digit(i + 4)) {
        ++i;
        continue;
      }
      break;
    }
    if (i + 1 < text.size() && text[i] == '.' && digit(i + 1)) {
      digits.push_back(text[i++]);
      while (digit(i)) digits.push_back(text[i++]);
    }
    double value = 0;
    if (!absl::SimpleAtod(digits, &value)) continue;
    if (i + 1 < text.size() && text[i] == '/' && digit(i + 1)) {  // a fraction
      std::string denominator;
      size_t j = i + 1;
      while (digit(j)) denominator.push_back(text[j++]);
      double d = 0;
      if (absl::SimpleAtod(denominator, &d) && d != 0) {
        value /= d;
        i = j;
      }
    }
    // A minus sign directly before the number (allowing "$" between): "-5", "-$5".
    size_t sign = begin;
    if (sign > 0 && text[sign - 1] == '$') --sign;
    if (sign > 0 && text[sign - 1] == '-' && (sign < 2 || !absl::ascii_isalnum(static_cast<unsigned char>(text[sign - 2])))) {
      value = -value;
    }
    numbers.push_back({value, begin, i});
  }
  return numbers;
}

std::optional<double> ExtractAnswer(absl::string_view text) {
  if (size_t boxed = text.rfind("\\boxed{"); boxed != absl::string_view::npos) {
    absl::string_view inside = text.substr(boxed + 7);
    inside = inside.substr(0, inside.find('}'));
    std::vector<NumberSpan> numbers = FindNumbers(inside);
    if (!numbers.empty()) return numbers.front().value;
  }
  if (size_t marker = text.rfind("####"); marker != absl::string_view::npos) {
    std::vector<NumberSpan> numbers = FindNumbers(text.substr(marker + 4));
    if (!numbers.empty()) return numbers.front().value;
  }
  std::vector<NumberSpan> numbers = FindNumbers(text);
  if (numbers.empty()) return std::nullopt;
  return numbers.back().value;
}

class AccuracyReward final : public RewardFunction {
 public:
  static ComponentSchema Schema() {
    return ComponentSchema("1.0 if the completion's final number equals the example's reference answer, else 0.0.")
        .String("answer_field", "answer", "The example's field holding the reference (a string or a number).")
        .Float("tolerance", 1e-6, "Absolute tolerance: equal if |a − b| <= tolerance.").AtLeast(0);
  }

  static absl::StatusOr<std::unique_ptr<RewardFunction>> Create(const ComponentConfig& config) {
    auto reward = std::make_unique<AccuracyReward>();
    reward->field_ = config.GetString("answer_field");
    reward->tolerance_ = config.GetFloat("tolerance");
    if (reward->field_.empty()) return config.Error("answer_field", "must name a field");
    if (reward->tolerance_ < 0) return config.Error("tolerance", "must be >= 0");
    return reward;
  }

  absl::StatusOr<std::vector<float>> Score(absl::Span<const RewardInput> batch) const override {
    std::vector<float> scores;
    scores.reserve(batch.size());
    for (const RewardInput& input : batch) {
      POSTTRAIN_ASSIGN_OR_RETURN(double reference, Reference(*input.metadata));
      std::optional<double> answer = ExtractAnswer(input.completion);
      const bool correct =
          answer && std::abs(*answer - reference) <= tolerance_;
      scores.push_back(correct ? 1.0f : 0.0f);
    }
    return scores;
  }

 private:
  absl::StatusOr<double> Reference(const nlohmann::json& metadata) const {
    auto it = metadata.find(field_);
    if (it == metadata.end()) {
      std::vector<std::string> fields;
      for (const auto& item : metadata.items()) fields.push_back(absl::StrCat("\"", item.key(), "\""));
      return absl::InvalidArgumentError(absl::StrCat("the example has no reference field \"", field_,
                                                     "\" (its other fields: ", absl::StrJoin(fields, ", "),
                                                     "); set answer_field"));
    }
    if (it->is_number()) return it->get<double>();
    if (it->is_string()) {
      std::optional<double> value = ExtractAnswer(it->get<std::string>());
      if (value) return *value;
      return absl::InvalidArgumentError(absl::StrCat("the reference \"", field_, "\" holds no number: ",
                                                     it->get<std::string>().substr(0, 80)));
    }
    return absl::InvalidArgumentError(
        absl::StrCat("the reference \"", field_, "\" must be a string or a number, got ", it->type_name()));
  }

  std::string field_;
  double tolerance_ = 1e-6;
};

}  // namespace
}  // namespace posttrain

POSTTRAIN_REGISTER_REWARD_FUNCTION("accuracy", posttrain::AccuracyReward);
POSTTRAIN_PLUGIN("posttrain_reward_accuracy");

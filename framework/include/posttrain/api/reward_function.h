// Extension point: RewardFunction — scores completions.
//
// A reward function maps a batch of (prompt, completion, example metadata) to one
// float each. The host calls Score from several oneTBB worker threads at once, so
// implementations must be thread-safe (const and stateless, or internally locked).
//
//   class Shortness final : public posttrain::RewardFunction {
//    public:
//     static posttrain::ComponentSchema Schema() { return posttrain::ComponentSchema("..."); }
//     static absl::StatusOr<std::unique_ptr<posttrain::RewardFunction>> Create(
//         const posttrain::ComponentConfig&) { return std::make_unique<Shortness>(); }
//     absl::StatusOr<std::vector<float>> Score(
//         absl::Span<const posttrain::RewardInput> batch) const override {
//       std::vector<float> out;
//       for (const auto& in : batch) out.push_back(-float(in.completion.size()));
//       return out;
//     }
//   };
//   POSTTRAIN_REGISTER_REWARD_FUNCTION("shortness", Shortness);
#pragma once

#include "absl/strings/string_view.h"
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "nlohmann/json.hpp"

namespace posttrain {

// TRL's conversational completion: [{"role": "assistant", "content": completion}].
inline nlohmann::ordered_json ConversationalCompletion(absl::string_view completion) {
  return nlohmann::ordered_json::array({nlohmann::ordered_json{{"role", "assistant"}, {"content", std::string(completion)}}});
}

struct RewardInput {
  absl::string_view prompt;
  absl::string_view completion;
  // The example's other fields (e.g. GSM8K "answer"); never null.
  const nlohmann::json* metadata = nullptr;
  // Conversational examples (TRL's conversational formats): the prompt's messages.
  // `prompt` is then their rendering and `completion` the assistant's reply text; TRL
  // passes the completion as [{"role": "assistant", "content": completion}]
  // (ConversationalCompletion). Null for plain-text examples.
  const nlohmann::ordered_json* prompt_messages = nullptr;
  bool conversational() const { return prompt_messages != nullptr; }
};

class RewardFunction {
 public:
  virtual ~RewardFunction() = default;

  // Returns exactly batch.size() scores, in order. A NaN score or a non-OK status
  // stops the step with a message naming this reward and the sample (unless the
  // recipe says to skip and count). Thread-safe.
  virtual absl::StatusOr<std::vector<float>> Score(absl::Span<const RewardInput> batch) const = 0;
};

}  // namespace posttrain

// One training or evaluation example, in TRL's dataset formats.
//
// A DataAdapter turns each record of a source into an Example:
//
//   format              fields set                      TRL name
//   kLanguageModeling   text                            language modeling {"text"}
//   kPromptOnly         prompt                          prompt-only {"prompt"}
//   kPromptCompletion   prompt, completion              prompt-completion
//   kPreference         prompt (may be ""), chosen,     preference (explicit or
//                       rejected                        implicit prompt)
//   kUnpairedPreference prompt, completion, label       unpaired preference
//   kStepwiseSupervision prompt, steps, step_labels      stepwise supervision
//                                                       {"prompt", "completions", "labels"}
//
// Conversational records (TRL's conversational formats: `messages`, or prompt /
// completion / chosen / rejected as lists of {"role", "content"} messages) keep
// their message lists in `conversation`; the engine renders them with the model's
// chat template (chat/conversation.h) into the text fields, as TRL's
// maybe_apply_chat_template does.
//
// `metadata` keeps the record's other fields (e.g. GSM8K's "answer", a `margin`),
// which reward functions and trainers may read. `source` and `line` say where the
// example came from, for messages.
#pragma once

#include "absl/strings/string_view.h"
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "nlohmann/json.hpp"

namespace posttrain {

enum class ExampleFormat {
  kLanguageModeling,
  kPromptOnly,
  kPromptCompletion,
  kPreference,
  kUnpairedPreference,
  kStepwiseSupervision,
};

// "language_modeling", "prompt_only", "prompt_completion", "preference",
// "unpaired_preference", "stepwise_supervision".
absl::string_view ExampleFormatName(ExampleFormat format);

struct Example {
  ExampleFormat format = ExampleFormat::kLanguageModeling;
  std::string text;
  std::string prompt;
  std::string completion;
  std::string chosen;
  std::string rejected;
  // Unpaired preference: true = desirable.
  std::optional<bool> label;
  // Stepwise supervision (process reward models): the completion's reasoning steps
  // and whether each is correct, aligned (TRL's "completions" and "labels").
  std::vector<std::string> steps;
  std::vector<bool> step_labels;
  // Every other field of the source record.
  nlohmann::json metadata = nlohmann::json::object();
  // Conversational records: {"messages" | "prompt" | "completion" | "chosen" |
  // "rejected": [messages], "tools"?: [...]} (key order kept, as templates print
  // it); null for plain text.
  nlohmann::ordered_json conversation;
  // Language modelling on a conversation with assistant_only_loss: byte ranges
  // [begin, end) of `text` written for assistant turns (set by the renderer).
  std::vector<std::pair<std::size_t, std::size_t>> assistant_spans;
  bool conversational() const { return !conversation.is_null(); }
  // Where it came from: a file path and 1-based line (0 if not line-based).
  std::string source;
  std::int64_t line = 0;
};

// "file:line" (or just the file) for messages.
std::string ExampleLocation(const Example& example);

}  // namespace posttrain

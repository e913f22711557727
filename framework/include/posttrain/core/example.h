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

#include "nlohmann/json.hpp"

namespace posttrain {

enum class ExampleFormat {
  kLanguageModeling,
  kPromptOnly,
  kPromptCompletion,
  kPreference,
  kUnpairedPreference,
};

// "language_modeling", "prompt_only", "prompt_completion", "preference",
// "unpaired_preference".
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
  // Every other field of the source record.
  nlohmann::json metadata = nlohmann::json::object();
  // Where it came from: a file path and 1-based line (0 if not line-based).
  std::string source;
  std::int64_t line = 0;
};

// "file:line" (or just the file) for messages.
std::string ExampleLocation(const Example& example);

}  // namespace posttrain

#include "posttrain/core/example.h"

#include "absl/strings/str_cat.h"

namespace posttrain {

absl::string_view ExampleFormatName(ExampleFormat format) {
  switch (format) {
    case ExampleFormat::kLanguageModeling: return "language_modeling";
    case ExampleFormat::kPromptOnly: return "prompt_only";
    case ExampleFormat::kPromptCompletion: return "prompt_completion";
    case ExampleFormat::kPreference: return "preference";
    case ExampleFormat::kUnpairedPreference: return "unpaired_preference";
    case ExampleFormat::kStepwiseSupervision: return "stepwise_supervision";
  }
  return "?";
}

std::string ExampleLocation(const Example& example) {
  if (example.line > 0) return absl::StrCat(example.source, ":", example.line);
  return example.source;
}

}  // namespace posttrain

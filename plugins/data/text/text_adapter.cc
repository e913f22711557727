// Data adapter "text": plain text split into records by a separator.
//
//   [data]
//   type = "text"
//   path = "recipes/data/tinystories_head512KiB.txt"
//   separator = "<|endoftext|>"      # default: one record per line
//   format = "language_modeling"     # or "prompt_only" (each record is a prompt)
//
// Records are trimmed of surrounding whitespace; empty ones are dropped. With
// `max_chars` > 0 a record is cut to its first max_chars characters, at a word
// boundary (handy for prompts made from the opening of a story).
#include "absl/strings/ascii.h"
#include "absl/strings/str_split.h"
#include "posttrain/core/text_file.h"
#include "posttrain/plugin/plugin.h"

namespace posttrain {
namespace {

class TextAdapter final : public DataAdapter {
 public:
  static ComponentSchema Schema() {
    return ComponentSchema("Plain text (or gzip), one record per separator-delimited chunk.")
        .Required("path", OptionType::kString, "The text file.")
        .String("separator", "\n", "Record separator (default: newline).")
        .String("format", "language_modeling", "What each record is.",
                {"language_modeling", "prompt_only"})
        .Int("max_chars", -1, "Cut each record to at most this many characters (-1: no cut).").AtLeast(1).OrEqualTo(-1)
        .Int("max_examples", -1, "Read at most this many records (-1: all).").AtLeast(1).OrEqualTo(-1);
  }

  static absl::StatusOr<std::unique_ptr<DataAdapter>> Create(const ComponentConfig& config) {
    auto adapter = std::make_unique<TextAdapter>();
    adapter->path_ = config.GetString("path");
    adapter->separator_ = config.GetString("separator");
    if (adapter->separator_.empty()) return config.Error("separator", "must not be empty");
    adapter->prompt_only_ = config.GetString("format") == "prompt_only";
    adapter->max_chars_ = config.GetInt("max_chars");
    adapter->max_examples_ = config.GetInt("max_examples");
    return adapter;
  }

  absl::StatusOr<std::vector<Example>> Load() override {
    POSTTRAIN_ASSIGN_OR_RETURN(std::string content, ReadTextFile(path_));
    std::vector<Example> examples;
    std::int64_t line = 1;
    const auto separator_newlines = std::count(separator_.begin(), separator_.end(), '\n');
    for (absl::string_view record : absl::StrSplit(content, separator_)) {
      const std::int64_t record_line = line;
      line += std::count(record.begin(), record.end(), '\n') + separator_newlines;
      absl::string_view text = absl::StripAsciiWhitespace(record);
      if (text.empty()) continue;
      if (max_examples_ >= 0 && static_cast<std::int64_t>(examples.size()) >= max_examples_) break;
      if (max_chars_ > 0 && static_cast<std::int64_t>(text.size()) > max_chars_) {
        size_t cut = text.rfind(' ', static_cast<size_t>(max_chars_));
        text = text.substr(0, cut == absl::string_view::npos || cut == 0
                                  ? static_cast<size_t>(max_chars_)
                                  : cut);
      }
      Example example;
      example.source = path_;
      example.line = record_line + static_cast<std::int64_t>(std::count(
                                       record.begin(), record.begin() + (text.data() - record.data()), '\n'));
      if (prompt_only_) {
        example.format = ExampleFormat::kPromptOnly;
        example.prompt = std::string(text);
      } else {
        example.format = ExampleFormat::kLanguageModeling;
        example.text = std::string(text);
      }
      examples.push_back(std::move(example));
    }
    return examples;
  }

 private:
  std::string path_;
  std::string separator_;
  bool prompt_only_ = false;
  std::int64_t max_chars_ = -1;
  std::int64_t max_examples_ = -1;
};

}  // namespace
}  // namespace posttrain

POSTTRAIN_REGISTER_DATA_ADAPTER("text", posttrain::TextAdapter);
POSTTRAIN_PLUGIN("posttrain_data_text");

// Data adapter "jsonl": JSON Lines (plain or gzip) in TRL's dataset formats.
//
//   [data]
//   type = "jsonl"
//   path = "recipes/data/gsm8k_train_head1024.jsonl"
//   prompt_field = "question"
//   completion_field = "answer"
//
// format = "auto" picks the format from the first record's fields: chosen+rejected →
// preference (prompt optional: without it the prompt is the longest common prefix of
// chosen and rejected, as TRL's extract_prompt does); prompt+completion+label →
// unpaired preference; prompt+completions+labels (lists: steps and their bools) →
// stepwise supervision; prompt+completion → prompt-completion; text → language
// modeling; prompt → prompt-only; and, when no field is named "prompt" or "text",
// question+answer (GSM8K's layout, common to QA sets) → prompt-completion with the
// question as prompt and the answer as completion (kept in metadata too, for
// rewards that check it). Every record must then have the same fields.
//
// Conversational records (TRL's formats with lists of {"role", "content"} messages)
// are kept as messages (Example::conversation) for the engine to render with the
// model's chat template: `messages` (language modelling), prompt-only,
// prompt/completion, prompt/chosen/rejected (with the prompt implicit: the messages
// chosen and rejected share), prompt/completion/label, and the OpenAI preference
// layout {"input": {"messages": [...], "tools"?}, "preferred_output": [...],
// "non_preferred_output": [...]} (a preference; with format = "language_modeling",
// the conversation input.messages + preferred_output; with "prompt_only", the
// input messages). A record's "tools" goes to the template.
#include <algorithm>
#include <string_view>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "posttrain/core/text_file.h"
#include "posttrain/plugin/plugin.h"

namespace posttrain {
namespace {

struct Fields {
  std::string text, prompt, completion, chosen, rejected, label, messages;
};

using ordered_json = nlohmann::ordered_json;

// Every message a JSON object with a string "role"; names the first that is not.
absl::Status CheckMessages(const ordered_json& messages, const std::string& field) {
  if (!messages.is_array()) {
    return absl::InvalidArgumentError(absl::StrCat("field \"", field, "\" must be a list of messages, got ", messages.type_name()));
  }
  for (size_t i = 0; i < messages.size(); ++i) {
    const ordered_json& m = messages[i];
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
      return absl::InvalidArgumentError(absl::StrCat("field \"", field, "\", message ", i,
                                                     ": expected {\"role\": \"...\", \"content\": ...}, got ", m.dump()));
    }
    if (m.contains("content") && !m["content"].is_string() && !m["content"].is_array() && !m["content"].is_null()) {
      return absl::InvalidArgumentError(absl::StrCat("field \"", field, "\", message ", i,
                                                     ": \"content\" must be a string, a list of parts or null"));
    }
  }
  return absl::OkStatus();
}

// TRL's implicit prompt: the common prefix of chosen and rejected; if the first
// differing character follows a space, the space stays with the completions.
void ExtractImplicitPrompt(Example& example) {
  const std::string& chosen = example.chosen;
  const std::string& rejected = example.rejected;
  size_t idx = 0;
  const size_t limit = std::min(chosen.size(), rejected.size());
  while (idx < limit && chosen[idx] == rejected[idx]) ++idx;
  if (idx < limit && idx > 0 && chosen[idx - 1] == ' ') --idx;
  example.prompt = chosen.substr(0, idx);
  example.chosen = chosen.substr(idx);
  example.rejected = rejected.substr(idx);
}

class JsonlAdapter final : public DataAdapter {
 public:
  static ComponentSchema Schema() {
    return ComponentSchema(
               "JSON Lines (.jsonl, or gzip .jsonl.gz) in TRL's dataset formats: "
               "language modeling, prompt-only, prompt-completion, preference "
               "(explicit or implicit prompt), unpaired preference, stepwise supervision.")
        .Required("path", OptionType::kString, "The .jsonl or .jsonl.gz file.")
        .String("format", "auto", "Dataset format; 'auto' infers it from the first record.",
                {"auto", "language_modeling", "prompt_only", "prompt_completion", "preference",
                 "unpaired_preference", "stepwise_supervision"})
        .String("text_field", "text", "Field holding the text (language modeling).")
        .String("prompt_field", "prompt", "Field holding the prompt.")
        .String("completion_field", "completion", "Field holding the completion.")
        .String("chosen_field", "chosen", "Field holding the preferred completion.")
        .String("rejected_field", "rejected", "Field holding the dispreferred completion.")
        .String("label_field", "label", "Field holding the unpaired preference label (bool).")
        .String("messages_field", "messages", "Field holding a conversation (conversational language modeling).")
        .Int("skip", 0, "Skip this many records first (e.g. to take an evaluation slice).").AtLeast(0)
        .Int("max_examples", -1, "Read at most this many records (-1: all).").AtLeast(1).OrEqualTo(-1)
        .String("on_bad_row", "error",
                "A record that cannot be parsed: 'error' stops with file:line and what was expected; 'skip' "
                "leaves it out whole, counts it and logs where it was.",
                {"error", "skip"})
        .Bool("skip_malformed", false, "Older name of on_bad_row = \"skip\".");
  }

  static absl::StatusOr<std::unique_ptr<DataAdapter>> Create(const ComponentConfig& config) {
    auto adapter = std::make_unique<JsonlAdapter>();
    adapter->path_ = config.GetString("path");
    adapter->format_ = config.GetString("format");
    adapter->fields_ = {config.GetString("text_field"),       config.GetString("prompt_field"),
                        config.GetString("completion_field"), config.GetString("chosen_field"),
                        config.GetString("rejected_field"),   config.GetString("label_field"),
                        config.GetString("messages_field")};
    adapter->max_examples_ = config.GetInt("max_examples");
    adapter->skip_ = config.GetInt("skip");
    adapter->skip_malformed_ = config.GetString("on_bad_row") == "skip" || config.GetBool("skip_malformed");
    return adapter;
  }

  absl::StatusOr<std::vector<Example>> Load() override {
    POSTTRAIN_ASSIGN_OR_RETURN(std::string content, ReadTextFile(path_));
    std::vector<Example> examples;
    skipped_ = 0;
    bad_rows_.clear();
    std::optional<ExampleFormat> format = ParseFormat(format_);
    std::int64_t line_number = 0, records_seen = 0;
    for (absl::string_view line : absl::StrSplit(content, '\n')) {
      ++line_number;
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (line.find_first_not_of(" \t") == absl::string_view::npos) continue;
      if (max_examples_ >= 0 && static_cast<std::int64_t>(examples.size()) >= max_examples_) break;
      if (records_seen++ < skip_) continue;
      Example example;
      example.source = path_;
      example.line = line_number;
      absl::Status status = ParseRecord(line, format, example);
      if (!status.ok()) {
        if (skip_malformed_) {
          if (++skipped_ <= kBadRowsKept) bad_rows_.push_back(absl::StrCat(path_, ":", line_number, ": ", status.message()));
          continue;
        }
        return absl::InvalidArgumentError(
            absl::StrCat(path_, ":", line_number, ": ", status.message()));
      }
      format = example.format;
      examples.push_back(std::move(example));
    }
    return examples;
  }

  std::int64_t num_skipped() const override { return skipped_; }
  std::vector<std::string> skipped_rows() const override { return bad_rows_; }

 private:
  static std::optional<ExampleFormat> ParseFormat(absl::string_view name) {
    for (ExampleFormat f : {ExampleFormat::kLanguageModeling, ExampleFormat::kPromptOnly,
                            ExampleFormat::kPromptCompletion, ExampleFormat::kPreference,
                            ExampleFormat::kUnpairedPreference, ExampleFormat::kStepwiseSupervision}) {
      if (ExampleFormatName(f) == name) return f;
    }
    return std::nullopt;  // "auto"
  }

  ExampleFormat Infer(const nlohmann::json& record) const {
    auto has = [&](const std::string& f) { return record.contains(f); };
    if (has(fields_.messages) && !has(fields_.text)) return ExampleFormat::kLanguageModeling;
    if (has(fields_.chosen) && has(fields_.rejected)) return ExampleFormat::kPreference;
    if (has(fields_.prompt) && has(fields_.completion) && has(fields_.label)) {
      return ExampleFormat::kUnpairedPreference;
    }
    if (has(fields_.prompt) && has("completions") && has("labels")) return ExampleFormat::kStepwiseSupervision;
    if (has(fields_.prompt) && has(fields_.completion)) return ExampleFormat::kPromptCompletion;
    if (has(fields_.text)) return ExampleFormat::kLanguageModeling;
    return ExampleFormat::kPromptOnly;
  }

  // A conversational record (see the file comment): fills example.conversation and
  // returns true; false for a plain-text record.
  absl::StatusOr<bool> ParseConversation(ordered_json& raw, std::optional<ExampleFormat> format, Example& example) const {
    ordered_json conv = ordered_json::object();
    auto take_list = [&](const std::string& field, const char* as) -> absl::Status {
      POSTTRAIN_RETURN_IF_ERROR(CheckMessages(raw[field], field));
      conv[as] = std::move(raw[field]);
      raw.erase(field);
      return absl::OkStatus();
    };
    const bool openai = raw.contains("input") && raw["input"].is_object() && raw["input"].contains("messages") &&
                        raw.contains("preferred_output") && raw.contains("non_preferred_output");
    if (openai) {
      ordered_json input = std::move(raw["input"]);
      raw.erase("input");
      POSTTRAIN_RETURN_IF_ERROR(CheckMessages(input["messages"], "input.messages"));
      POSTTRAIN_RETURN_IF_ERROR(CheckMessages(raw["preferred_output"], "preferred_output"));
      POSTTRAIN_RETURN_IF_ERROR(CheckMessages(raw["non_preferred_output"], "non_preferred_output"));
      if (input.contains("tools")) conv["tools"] = input["tools"];
      if (format == ExampleFormat::kLanguageModeling) {
        example.format = ExampleFormat::kLanguageModeling;
        ordered_json messages = input["messages"];
        for (const auto& m : raw["preferred_output"]) messages.push_back(m);
        conv["messages"] = std::move(messages);
      } else if (format == ExampleFormat::kPromptOnly) {
        example.format = ExampleFormat::kPromptOnly;
        conv["prompt"] = std::move(input["messages"]);
      } else if (!format || format == ExampleFormat::kPreference) {
        example.format = ExampleFormat::kPreference;
        conv["prompt"] = std::move(input["messages"]);
        conv["chosen"] = std::move(raw["preferred_output"]);
        conv["rejected"] = std::move(raw["non_preferred_output"]);
      } else {
        return absl::InvalidArgumentError(absl::StrCat("an OpenAI preference record (input, preferred_output, non_preferred_output) "
                                                       "cannot be read as ", ExampleFormatName(*format)));
      }
      raw.erase("preferred_output");
      raw.erase("non_preferred_output");
    } else {
      auto is_list = [&](const std::string& f) { return raw.contains(f) && raw[f].is_array(); };
      if (!(is_list(fields_.messages) || is_list(fields_.prompt) || is_list(fields_.completion) ||
            is_list(fields_.chosen) || is_list(fields_.rejected))) {
        return false;
      }
      if (format) {
        example.format = *format;
      } else if (is_list(fields_.messages)) {
        example.format = ExampleFormat::kLanguageModeling;
      } else {
        example.format = Infer(nlohmann::json(raw));
      }
      auto need = [&](const std::string& field) -> absl::Status {
        if (!raw.contains(field)) {
          return absl::InvalidArgumentError(absl::StrCat("a conversational ", ExampleFormatName(example.format),
                                                         " record needs field \"", field, "\""));
        }
        return absl::OkStatus();
      };
      switch (example.format) {
        case ExampleFormat::kLanguageModeling:
          POSTTRAIN_RETURN_IF_ERROR(need(fields_.messages));
          POSTTRAIN_RETURN_IF_ERROR(take_list(fields_.messages, "messages"));
          break;
        case ExampleFormat::kPromptOnly:
          POSTTRAIN_RETURN_IF_ERROR(need(fields_.prompt));
          POSTTRAIN_RETURN_IF_ERROR(take_list(fields_.prompt, "prompt"));
          break;
        case ExampleFormat::kStepwiseSupervision: {
          POSTTRAIN_RETURN_IF_ERROR(need(fields_.prompt));
          POSTTRAIN_RETURN_IF_ERROR(take_list(fields_.prompt, "prompt"));
          nlohmann::json rest(raw);
          POSTTRAIN_RETURN_IF_ERROR(TakeSteps(rest, example));
          raw = ordered_json(rest);
          break;
        }
        case ExampleFormat::kPromptCompletion:
        case ExampleFormat::kUnpairedPreference:
          POSTTRAIN_RETURN_IF_ERROR(need(fields_.prompt));
          POSTTRAIN_RETURN_IF_ERROR(need(fields_.completion));
          POSTTRAIN_RETURN_IF_ERROR(take_list(fields_.prompt, "prompt"));
          POSTTRAIN_RETURN_IF_ERROR(take_list(fields_.completion, "completion"));
          if (example.format == ExampleFormat::kUnpairedPreference) {
            POSTTRAIN_RETURN_IF_ERROR(need(fields_.label));
            if (!raw[fields_.label].is_boolean()) {
              return absl::InvalidArgumentError(absl::StrCat("field \"", fields_.label, "\" must be true or false"));
            }
            example.label = raw[fields_.label].get<bool>();
            raw.erase(fields_.label);
          }
          break;
        case ExampleFormat::kPreference: {
          POSTTRAIN_RETURN_IF_ERROR(need(fields_.chosen));
          POSTTRAIN_RETURN_IF_ERROR(need(fields_.rejected));
          const bool explicit_prompt = raw.contains(fields_.prompt);
          if (explicit_prompt) POSTTRAIN_RETURN_IF_ERROR(take_list(fields_.prompt, "prompt"));
          POSTTRAIN_RETURN_IF_ERROR(take_list(fields_.chosen, "chosen"));
          POSTTRAIN_RETURN_IF_ERROR(take_list(fields_.rejected, "rejected"));
          if (!explicit_prompt) {
            // TRL's extract_prompt on conversations: the messages both share.
            ordered_json chosen = std::move(conv["chosen"]);
            ordered_json rejected = std::move(conv["rejected"]);
            size_t shared = 0;
            while (shared + 1 < chosen.size() && shared + 1 < rejected.size() && chosen[shared] == rejected[shared]) ++shared;
            const auto cut = static_cast<std::ptrdiff_t>(shared);
            conv["prompt"] = ordered_json(chosen.begin(), chosen.begin() + cut);
            chosen.erase(chosen.begin(), chosen.begin() + cut);
            rejected.erase(rejected.begin(), rejected.begin() + cut);
            conv["chosen"] = std::move(chosen);
            conv["rejected"] = std::move(rejected);
          }
          break;
        }
      }
    }
    if (raw.contains("tools")) {
      conv["tools"] = std::move(raw["tools"]);
      raw.erase("tools");
    }
    example.conversation = std::move(conv);
    example.metadata = nlohmann::json(raw);
    return true;
  }

  absl::Status ParseRecord(absl::string_view line, std::optional<ExampleFormat> format,
                           Example& example) const {
    ordered_json raw = ordered_json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (raw.is_discarded()) {
      try {
        (void)ordered_json::parse(line);
      } catch (const nlohmann::json::exception& e) {  // parse_error, or out_of_range for a number like 1e309 (found by fuzzing)
        return absl::InvalidArgumentError(
            absl::StrCat("malformed JSON (expected one JSON object per line): ", e.what()));
      }
    }
    if (!raw.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat("expected a JSON object, got ", raw.type_name()));
    }
    POSTTRAIN_ASSIGN_OR_RETURN(bool conversational, ParseConversation(raw, format, example));
    if (conversational) return absl::OkStatus();
    nlohmann::json record(raw);
    if ((!format || question_answer_) && !record.contains(fields_.prompt) && !record.contains(fields_.text) && fields_.prompt == "prompt" &&
        record.contains("question") && record.contains("answer") && record["question"].is_string() &&
        record["answer"].is_string()) {
      // The question/answer layout: a prompt and its completion.
      example.format = ExampleFormat::kPromptCompletion;
      example.prompt = record["question"].get<std::string>();
      example.completion = record["answer"].get<std::string>();
      record.erase("question");
      example.metadata = std::move(record);
      question_answer_ = true;
      return absl::OkStatus();
    }
    example.format = format.value_or(Infer(record));
    std::vector<const std::string*> wanted;
    switch (example.format) {
      case ExampleFormat::kLanguageModeling: wanted = {&fields_.text}; break;
      case ExampleFormat::kPromptOnly: wanted = {&fields_.prompt}; break;
      case ExampleFormat::kPromptCompletion: wanted = {&fields_.prompt, &fields_.completion}; break;
      case ExampleFormat::kPreference: wanted = {&fields_.chosen, &fields_.rejected}; break;
      case ExampleFormat::kUnpairedPreference:
        wanted = {&fields_.prompt, &fields_.completion, &fields_.label};
        break;
      case ExampleFormat::kStepwiseSupervision: wanted = {&fields_.prompt, &kCompletions, &kLabels}; break;
    }
    std::vector<std::string> missing;
    for (const std::string* field : wanted) {
      if (!record.contains(*field)) missing.push_back(absl::StrCat("\"", *field, "\""));
    }
    if (!missing.empty()) {
      std::vector<std::string> found;
      for (const auto& item : record.items()) found.push_back(absl::StrCat("\"", item.key(), "\""));
      return absl::InvalidArgumentError(absl::StrCat(
          "a ", ExampleFormatName(example.format), " record needs field(s) ",
          absl::StrJoin(missing, ", "), "; this record has ", absl::StrJoin(found, ", "),
          " (map fields with text_field, prompt_field, ... in [data])"));
    }
    auto take_string = [&](const std::string& field, std::string& out) -> absl::Status {
      const nlohmann::json& value = record[field];
      if (!value.is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat("field \"", field, "\" must be a string, got ", value.type_name()));
      }
      out = value.get<std::string>();
      record.erase(field);
      return absl::OkStatus();
    };
    switch (example.format) {
      case ExampleFormat::kLanguageModeling:
        POSTTRAIN_RETURN_IF_ERROR(take_string(fields_.text, example.text));
        break;
      case ExampleFormat::kPromptOnly:
        POSTTRAIN_RETURN_IF_ERROR(take_string(fields_.prompt, example.prompt));
        break;
      case ExampleFormat::kPromptCompletion:
        POSTTRAIN_RETURN_IF_ERROR(take_string(fields_.prompt, example.prompt));
        POSTTRAIN_RETURN_IF_ERROR(take_string(fields_.completion, example.completion));
        break;
      case ExampleFormat::kPreference: {
        const bool explicit_prompt = record.contains(fields_.prompt);
        if (explicit_prompt) POSTTRAIN_RETURN_IF_ERROR(take_string(fields_.prompt, example.prompt));
        POSTTRAIN_RETURN_IF_ERROR(take_string(fields_.chosen, example.chosen));
        POSTTRAIN_RETURN_IF_ERROR(take_string(fields_.rejected, example.rejected));
        if (!explicit_prompt) ExtractImplicitPrompt(example);
        break;
      }
      case ExampleFormat::kUnpairedPreference: {
        POSTTRAIN_RETURN_IF_ERROR(take_string(fields_.prompt, example.prompt));
        POSTTRAIN_RETURN_IF_ERROR(take_string(fields_.completion, example.completion));
        const nlohmann::json& label = record[fields_.label];
        if (!label.is_boolean()) {
          return absl::InvalidArgumentError(absl::StrCat(
              "field \"", fields_.label, "\" must be true or false, got ", label.type_name()));
        }
        example.label = label.get<bool>();
        record.erase(fields_.label);
        break;
      }
      case ExampleFormat::kStepwiseSupervision:
        POSTTRAIN_RETURN_IF_ERROR(take_string(fields_.prompt, example.prompt));
        POSTTRAIN_RETURN_IF_ERROR(TakeSteps(record, example));
        break;
    }
    example.metadata = std::move(record);
    return absl::OkStatus();
  }

  // Stepwise supervision's "completions" (strings) and "labels" (bools, one per
  // step), moved out of `record`.
  static absl::Status TakeSteps(nlohmann::json& record, Example& example) {
    const nlohmann::json& steps = record[kCompletions];
    const nlohmann::json& labels = record[kLabels];
    if (!steps.is_array() || !labels.is_array()) {
      return absl::InvalidArgumentError("stepwise supervision needs \"completions\" (a list of step strings) and "
                                        "\"labels\" (a list of true/false, one per step)");
    }
    if (steps.size() != labels.size() || steps.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("stepwise supervision: ", steps.size(), " completions (steps) but ",
                                                     labels.size(), " labels; each step needs one (and at least one step)"));
    }
    for (size_t i = 0; i < steps.size(); ++i) {
      if (!steps[i].is_string()) return absl::InvalidArgumentError(absl::StrCat("completions[", i, "] must be a string"));
      if (!labels[i].is_boolean()) return absl::InvalidArgumentError(absl::StrCat("labels[", i, "] must be true or false"));
      example.steps.push_back(steps[i].get<std::string>());
      example.step_labels.push_back(labels[i].get<bool>());
    }
    record.erase(kCompletions);
    record.erase(kLabels);
    return absl::OkStatus();
  }

  static inline const std::string kCompletions = "completions", kLabels = "labels";
  std::string path_;
  std::string format_;
  mutable bool question_answer_ = false;  // the first record was read in the question/answer layout
  Fields fields_;
  std::int64_t max_examples_ = -1;
  std::int64_t skip_ = 0;
  static constexpr std::int64_t kBadRowsKept = 10;
  bool skip_malformed_ = false;
  std::vector<std::string> bad_rows_;
  std::int64_t skipped_ = 0;
};

}  // namespace
}  // namespace posttrain

POSTTRAIN_REGISTER_DATA_ADAPTER("jsonl", posttrain::JsonlAdapter);
POSTTRAIN_PLUGIN("posttrain_data_jsonl");

// A model's chat template: where it comes from, the variables transformers passes it,
// and rendering conversations the way `tokenizer.apply_chat_template` does.
//
//   POSTTRAIN_ASSIGN_OR_RETURN(ChatTemplate chat, ChatTemplate::Load("models/qwen3"));
//   ChatRequest request;
//   request.messages = nlohmann::ordered_json::parse(R"([{"role": "user", "content": "Hi"}])");
//   request.add_generation_prompt = true;
//   POSTTRAIN_ASSIGN_OR_RETURN(TemplateRendering r, chat.Apply(request));
//
// Sources, first found wins: an explicit template file (the recipe's
// `chat_template_path`, TRL's name), `chat_template.jinja` beside the tokenizer, then
// `chat_template` in tokenizer_config.json — a string, or a list of
// {"name", "template"} of which "default" is used (or "tool_use" when tools are given,
// or the one named by `name`). The variables are transformers': `messages`, `tools`
// (None when absent), `documents` (None), `add_generation_prompt`, the special tokens
// of tokenizer_config.json (`bos_token`, `eos_token`, `unk_token`, `pad_token`, ...,
// `additional_special_tokens`), then the caller's extra variables (e.g.
// `enable_thinking`), which override them.
//
// Errors: NotFound when no template exists (naming where it looked), InvalidArgument
// for a template that does not parse or a malformed tokenizer_config.json; Apply
// returns Aborted with the template's message when it calls raise_exception.
// Thread-safety: Apply is const and may run from several threads.
#pragma once

#include <ctime>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "posttrain/chat/jinja_template.h"

namespace posttrain {

struct ChatRequest {
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  nlohmann::ordered_json tools;  // null: no tools
  bool add_generation_prompt = false;
  nlohmann::ordered_json kwargs = nlohmann::ordered_json::object();  // extra template variables
};

class ChatTemplate {
 public:
  // `path`: a tokenizer or model directory, or its tokenizer_config.json.
  // `template_path`: a .jinja file that replaces whatever the tokenizer ships.
  // `name`: which of several named templates (default: "default"/"tool_use").
  static absl::StatusOr<ChatTemplate> Load(const std::string& path, const std::string& template_path = "",
                                           const std::string& name = "");
  // A template from source, with the special-token variables in `special_tokens`
  // (a JSON object such as {"eos_token": "</s>"}).
  static absl::StatusOr<ChatTemplate> FromSource(std::string source,
                                                 nlohmann::ordered_json special_tokens = nlohmann::ordered_json::object(),
                                                 std::string origin = "chat_template");

  absl::StatusOr<TemplateRendering> Apply(const ChatRequest& request) const;

  // strftime_now's clock: the time given here, else $SOURCE_DATE_EPOCH when set (for
  // reproducible renderings), else the current time.
  void set_now(std::time_t now) { now_ = now; }
  // The value of a special token variable ("eos_token"), "" if the config has none.
  std::string special_token(const std::string& name) const;
  // Where the template came from, for messages.
  const std::string& origin() const { return origin_; }
  bool has_generation_tags() const { return has_generation_tags_; }

 private:
  JinjaTemplate template_;
  nlohmann::ordered_json special_tokens_ = nlohmann::ordered_json::object();
  std::string origin_;
  std::optional<std::time_t> now_;
  std::optional<JinjaTemplate> tool_use_;  // a "tool_use" template of a named list
  bool has_generation_tags_ = false;
};

}  // namespace posttrain

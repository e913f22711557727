// posttrain chat-template --tokenizer DIR|tokenizer_config.json --input rows.jsonl
//     [--chat-template-path FILE] [--name NAME] [--now EPOCH] [--out FILE] [--ids]
//
// Renders conversations as transformers' apply_chat_template does. Each input line:
//   {"messages": [...], "tools": [...]?, "add_generation_prompt": bool?, "kwargs": {...}?}
// Each output line: {"text": ...} (plus "ids", the rendered text's token ids with
// the template's special tokens as single ids, with --ids), or {"error": ...} when the
// template raises (the template's message) or fails (with its line).
#include "chat_commands.h"

#include <cstdio>
#include <fstream>
#include <iostream>

#include "posttrain/chat/chat_template.h"
#include "posttrain/core/atomic_file.h"
#include "posttrain/core/status.h"
#include "posttrain/core/text_file.h"
#include "posttrain/tokenizer/tokenizer.h"

namespace posttrain::cli {
namespace {

struct ChatTemplateArgs {
  std::string tokenizer, input, template_path, name, out;
  long long now = -1;
  bool ids = false;
} args;

CLI::App* chat_template_cmd = nullptr;

absl::Status RunChatTemplate() {
  POSTTRAIN_ASSIGN_OR_RETURN(ChatTemplate chat, ChatTemplate::Load(args.tokenizer, args.template_path, args.name));
  if (args.now >= 0) chat.set_now(static_cast<std::time_t>(args.now));
  std::unique_ptr<Tokenizer> tokenizer;
  if (args.ids) {
    POSTTRAIN_ASSIGN_OR_RETURN(tokenizer, LoadTokenizer(args.tokenizer));
  }
  std::string text;
  if (args.input == "-") {
    text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  } else {
    POSTTRAIN_ASSIGN_OR_RETURN(text, ReadTextFile(args.input));
  }
  std::string output;
  std::size_t start = 0;
  for (int line = 1; start < text.size(); ++line) {
    std::size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string row_text = text.substr(start, end - start);
    start = end + 1;
    if (row_text.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = absl::StrCat(args.input, ":", line);
    nlohmann::ordered_json row = nlohmann::ordered_json::parse(row_text, nullptr, false);
    if (row.is_discarded() || !row.is_object()) return absl::InvalidArgumentError(absl::StrCat(where, ": not a JSON object"));
    if (!row.contains("messages") || !row["messages"].is_array()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": expected \"messages\", a list of {\"role\", \"content\"}"));
    }
    ChatRequest request;
    request.messages = row["messages"];
    if (row.contains("tools")) request.tools = row["tools"];
    if (row.contains("add_generation_prompt")) {
      if (!row["add_generation_prompt"].is_boolean()) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": \"add_generation_prompt\" must be true or false"));
      }
      request.add_generation_prompt = row["add_generation_prompt"].get<bool>();
    }
    if (row.contains("kwargs")) {
      if (!row["kwargs"].is_object()) return absl::InvalidArgumentError(absl::StrCat(where, ": \"kwargs\" must be an object"));
      request.kwargs = row["kwargs"];
    }
    absl::StatusOr<TemplateRendering> r = chat.Apply(request);
    nlohmann::ordered_json result = nlohmann::ordered_json::object();
    if (r.ok()) {
      result["text"] = r->text;
      if (tokenizer) result["ids"] = tokenizer->Encode(r->text, /*add_special_tokens=*/false);
    } else {
      result["error"] = std::string(r.status().message());
    }
    output += result.dump(-1, ' ', /*ensure_ascii=*/false, nlohmann::ordered_json::error_handler_t::replace);
    output += '\n';
  }
  if (args.out.empty()) {
    std::fwrite(output.data(), 1, output.size(), stdout);
    return absl::OkStatus();
  }
  return WriteFileAtomic(args.out, output);
}

}  // namespace

void AddChatCommands(CLI::App& app) {
  chat_template_cmd = app.add_subcommand("chat-template", "Render conversations with a model's chat template (JSONL in, JSONL out)");
  chat_template_cmd->add_option("--tokenizer", args.tokenizer, "Tokenizer or model directory, or its tokenizer_config.json")->required();
  chat_template_cmd->add_option("--input", args.input, "JSONL rows: messages, tools?, add_generation_prompt?, kwargs? ('-': stdin)")->required();
  chat_template_cmd->add_option("--chat-template-path", args.template_path, "A .jinja file to use instead of the tokenizer's");
  chat_template_cmd->add_option("--name", args.name, "Which named template of a list (default: default, or tool_use with tools)");
  chat_template_cmd->add_option("--now", args.now, "strftime_now's clock, seconds since the epoch (default: $SOURCE_DATE_EPOCH or now)");
  chat_template_cmd->add_option("--out", args.out, "Output file (default: stdout)");
  chat_template_cmd->add_flag("--ids", args.ids, "Also print the token ids of each rendering");
}

bool RunChatCommand(const CLI::App& app, int* rc) {
  if (!app.got_subcommand(chat_template_cmd)) return false;
  absl::Status status = RunChatTemplate();
  if (!status.ok()) std::fprintf(stderr, "posttrain: error: %s\n", std::string(status.message()).c_str());
  *rc = status.ok() ? 0 : 1;
  return true;
}

}  // namespace posttrain::cli

#include "posttrain/chat/chat_template.h"

#include <cstdlib>
#include <filesystem>
#include <regex>

#include "absl/strings/str_cat.h"
#include "posttrain/core/status.h"
#include "posttrain/core/text_file.h"

namespace posttrain {
namespace {

namespace fs = std::filesystem;

// A special token in tokenizer_config.json: "text" or an AddedToken {"content": "text", ...}.
std::optional<std::string> TokenText(const nlohmann::ordered_json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string()) return j["content"].get<std::string>();
  return std::nullopt;
}

nlohmann::ordered_json SpecialTokens(const nlohmann::ordered_json& config) {
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  for (const char* key : {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"}) {
    if (!config.contains(key)) continue;
    if (auto text = TokenText(config[key])) out[key] = *text;
  }
  if (config.contains("additional_special_tokens") && config["additional_special_tokens"].is_array()) {
    nlohmann::ordered_json list = nlohmann::ordered_json::array();
    for (const auto& t : config["additional_special_tokens"]) {
      if (auto text = TokenText(t)) list.push_back(*text);
    }
    out["additional_special_tokens"] = list;
  }
  return out;
}

bool HasGenerationTags(const std::string& source) {
  static const std::regex kTag(R"(\{%-?\s*generation\s*-?%\})");
  return std::regex_search(source, kTag);
}

}  // namespace

absl::StatusOr<ChatTemplate> ChatTemplate::FromSource(std::string source, nlohmann::ordered_json special_tokens,
                                                      std::string origin) {
  ChatTemplate t;
  t.has_generation_tags_ = HasGenerationTags(source);
  POSTTRAIN_ASSIGN_OR_RETURN(t.template_, JinjaTemplate::Parse(std::move(source), origin));
  t.special_tokens_ = std::move(special_tokens);
  t.origin_ = std::move(origin);
  return t;
}

absl::StatusOr<ChatTemplate> ChatTemplate::Load(const std::string& path, const std::string& template_path,
                                                const std::string& name) {
  fs::path config_path = path;
  fs::path dir = path;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    config_path = dir / "tokenizer_config.json";
  } else {
    dir = fs::path(path).parent_path();
  }
  nlohmann::ordered_json config = nlohmann::ordered_json::object();
  if (fs::exists(config_path, ec)) {
    POSTTRAIN_ASSIGN_OR_RETURN(std::string text, ReadTextFile(config_path.string()));
    config = nlohmann::ordered_json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (config.is_discarded() || !config.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(config_path.string(), ": not a JSON object"));
    }
  } else if (!fs::is_directory(path, ec)) {
    return absl::NotFoundError(absl::StrCat(path, ": no such tokenizer_config.json"));
  }
  nlohmann::ordered_json special = SpecialTokens(config);

  if (!template_path.empty()) {
    POSTTRAIN_ASSIGN_OR_RETURN(std::string source, ReadTextFile(template_path));
    return FromSource(std::move(source), std::move(special), template_path);
  }
  fs::path jinja = dir / "chat_template.jinja";
  if (fs::exists(jinja, ec)) {
    POSTTRAIN_ASSIGN_OR_RETURN(std::string source, ReadTextFile(jinja.string()));
    return FromSource(std::move(source), std::move(special), jinja.string());
  }
  const std::string where = config_path.string() + ": chat_template";
  if (!config.contains("chat_template") || config["chat_template"].is_null()) {
    return absl::NotFoundError(absl::StrCat(
        "no chat template: ", config_path.string(), " has no \"chat_template\" and there is no ", jinja.string(),
        "; give one with chat_template_path"));
  }
  const auto& entry = config["chat_template"];
  if (entry.is_string()) return FromSource(entry.get<std::string>(), std::move(special), where);
  if (!entry.is_array()) return absl::InvalidArgumentError(absl::StrCat(where, ": expected a string or a list"));
  std::string wanted = name.empty() ? "default" : name;
  std::optional<std::string> chosen, tool_use;
  std::string names;
  for (const auto& t : entry) {
    if (!t.is_object() || !t.contains("name") || !t.contains("template") || !t["name"].is_string() ||
        !t["template"].is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": each entry needs \"name\" and \"template\" strings"));
    }
    std::string n = t["name"].get<std::string>();
    absl::StrAppend(&names, names.empty() ? "" : ", ", "'", n, "'");
    if (n == wanted) chosen = t["template"].get<std::string>();
    if (n == "tool_use" && name.empty()) tool_use = t["template"].get<std::string>();
  }
  if (!chosen) {
    return absl::NotFoundError(absl::StrCat(where, ": no template named '", wanted, "' (have ", names, ")"));
  }
  POSTTRAIN_ASSIGN_OR_RETURN(ChatTemplate out,
                             FromSource(*chosen, special, absl::StrCat(where, "[", wanted, "]")));
  if (tool_use) {
    POSTTRAIN_ASSIGN_OR_RETURN(JinjaTemplate t, JinjaTemplate::Parse(*tool_use, absl::StrCat(where, "[tool_use]")));
    out.tool_use_ = std::move(t);
  }
  return out;
}

absl::StatusOr<TemplateRendering> ChatTemplate::Apply(const ChatRequest& request) const {
  nlohmann::ordered_json vars = nlohmann::ordered_json::object();
  vars["messages"] = request.messages;
  vars["tools"] = request.tools;
  vars["documents"] = nullptr;
  vars["add_generation_prompt"] = request.add_generation_prompt;
  for (auto it = special_tokens_.begin(); it != special_tokens_.end(); ++it) vars[it.key()] = it.value();
  if (!request.kwargs.is_null()) {
    if (!request.kwargs.is_object()) return absl::InvalidArgumentError("chat template kwargs must be a JSON object");
    for (auto it = request.kwargs.begin(); it != request.kwargs.end(); ++it) vars[it.key()] = it.value();
  }
  std::time_t now = std::time(nullptr);
  if (now_) {
    now = *now_;
  } else if (const char* epoch = std::getenv("SOURCE_DATE_EPOCH")) {
    char* end = nullptr;
    long long v = std::strtoll(epoch, &end, 10);
    if (end != epoch && *end == '\0') now = static_cast<std::time_t>(v);
  }
  bool tools = !request.tools.is_null() && !(request.tools.is_array() && request.tools.empty());
  const JinjaTemplate& t = tools && tool_use_ ? *tool_use_ : template_;
  return t.Render(vars, now);
}

std::string ChatTemplate::special_token(const std::string& name) const {
  auto it = special_tokens_.find(name);
  return it != special_tokens_.end() && it->is_string() ? it->get<std::string>() : "";
}

}  // namespace posttrain

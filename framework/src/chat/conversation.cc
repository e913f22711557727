#include "posttrain/chat/conversation.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "posttrain/core/status.h"

namespace posttrain {
namespace {

using ordered_json = nlohmann::ordered_json;

ordered_json Slice(const ordered_json& messages, std::size_t end) {
  return ordered_json(messages.begin(), messages.begin() + static_cast<std::ptrdiff_t>(std::min(end, messages.size())));
}

ordered_json Concat(const ordered_json& a, const ordered_json& b) {
  ordered_json out = a;
  for (const auto& m : b) out.push_back(m);
  return out;
}

absl::StatusOr<std::string> Render(const ChatTemplate& chat, const ordered_json& messages, const ordered_json& tools,
                                   bool add_generation_prompt) {
  ChatRequest request;
  request.messages = messages;
  request.tools = tools;
  request.add_generation_prompt = add_generation_prompt;
  POSTTRAIN_ASSIGN_OR_RETURN(TemplateRendering r, chat.Apply(request));
  return std::move(r.text);
}

std::string ContentText(const ordered_json& message) {
  if (!message.contains("content")) return "";
  const ordered_json& c = message["content"];
  if (c.is_string()) return c.get<std::string>();
  if (c.is_array()) {  // a list of parts: their text
    std::string out;
    for (const auto& part : c) {
      if (part.is_object() && part.contains("text") && part["text"].is_string()) out += part["text"].get<std::string>();
    }
    return out;
  }
  return "";
}

std::string Strip(const std::string& s) {
  std::size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  std::size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

// TRL's prompt rendering: a generation prompt after a user turn, or the final
// assistant message continued (the rendering cut after its content).
absl::StatusOr<std::string> RenderPrompt(const ChatTemplate& chat, const ordered_json& prompt, const ordered_json& tools) {
  const bool continue_final = !prompt.empty() && prompt.back().value("role", "") == "assistant";
  POSTTRAIN_ASSIGN_OR_RETURN(std::string text, Render(chat, prompt, tools, /*add_generation_prompt=*/!continue_final));
  if (!continue_final) return text;
  const std::string final_content = Strip(ContentText(prompt.back()));
  std::size_t at = final_content.empty() ? std::string::npos : text.rfind(final_content);
  if (at == std::string::npos) {
    return absl::InvalidArgumentError(
        "the prompt ends with an assistant message whose content the template does not write: cannot continue it");
  }
  return text.substr(0, at + final_content.size());
}

absl::StatusOr<std::string> RenderSuffix(const ChatTemplate& chat, const ordered_json& prompt,
                                         const ordered_json& completion, const ordered_json& tools,
                                         const std::string& prompt_text, const char* field) {
  POSTTRAIN_ASSIGN_OR_RETURN(std::string full, Render(chat, Concat(prompt, completion), tools, false));
  if (full.compare(0, prompt_text.size(), prompt_text) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the chat template is not prefix-preserving here: the rendering of prompt + ", field,
        " does not start with the rendering of the prompt (with its generation prompt), so the ", field,
        "'s tokens cannot be told apart; give a template that is (chat_template_path)"));
  }
  return full.substr(prompt_text.size());
}

}  // namespace

absl::StatusOr<std::vector<std::pair<std::size_t, std::size_t>>> AssistantSpans(const ChatTemplate& chat,
                                                                               const ordered_json& messages,
                                                                               const ordered_json& tools,
                                                                               const TemplateRendering& rendering) {
  std::size_t assistant_turns = 0;
  for (const auto& m : messages) assistant_turns += m.value("role", "") == "assistant" ? 1 : 0;
  if (chat.has_generation_tags()) {
    if (rendering.generation_spans.empty() && assistant_turns > 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the chat template (", chat.origin(), ") has {% generation %} blocks but they marked nothing in a conversation with ",
          assistant_turns, " assistant turn(s)"));
    }
    return rendering.generation_spans;
  }
  const std::string& full = rendering.text;
  std::vector<std::pair<std::size_t, std::size_t>> spans;
  for (std::size_t i = 0; i < messages.size(); ++i) {
    if (messages[i].value("role", "") != "assistant") continue;
    POSTTRAIN_ASSIGN_OR_RETURN(std::string before, Render(chat, Slice(messages, i), tools, true));
    if (full.compare(0, before.size(), before) != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "assistant_only_loss: the chat template (", chat.origin(), ") is not prefix-preserving at message ", i,
          ": the conversation up to it, rendered with its generation prompt, is not a prefix of the whole rendering; "
          "give a template with {% generation %} blocks (chat_template_path)"));
    }
    POSTTRAIN_ASSIGN_OR_RETURN(std::string through, Render(chat, Slice(messages, i + 1), tools, false));
    std::size_t end = 0;
    while (end < through.size() && end < full.size() && through[end] == full[end]) ++end;
    while (end > before.size() && std::string(" \t\r\n").find(full[end - 1]) != std::string::npos) --end;
    const std::string content = Strip(ContentText(messages[i]));
    if (end <= before.size() ||
        (!content.empty() && full.substr(before.size(), end - before.size()).find(content) == std::string::npos)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "assistant_only_loss: the chat template (", chat.origin(), ") is not prefix-preserving at message ", i,
          ": the conversation through it renders that assistant turn differently from the whole conversation (Qwen3's "
          "template, for one, drops earlier turns' reasoning); give a template with {% generation %} blocks "
          "(chat_template_path)"));
    }
    spans.emplace_back(before.size(), end);
  }
  return spans;
}

absl::Status RenderConversation(const ChatTemplate& chat, Example& example, const ConversationOptions& options) {
  if (!example.conversational()) return absl::OkStatus();
  const ordered_json& conv = example.conversation;
  const ordered_json tools = conv.contains("tools") ? conv["tools"] : ordered_json();
  auto fail = [&](const absl::Status& s) { return Annotate(s, absl::StrCat(ExampleLocation(example), ": chat template")); };
  auto get = [&](const char* key) -> const ordered_json& { return conv[key]; };
  switch (example.format) {
    case ExampleFormat::kLanguageModeling: {
      ChatRequest request;
      request.messages = get("messages");
      request.tools = tools;
      absl::StatusOr<TemplateRendering> r = chat.Apply(request);
      if (!r.ok()) return fail(r.status());
      example.text = r->text;
      if (options.assistant_spans) {
        absl::StatusOr<std::vector<std::pair<std::size_t, std::size_t>>> spans =
            AssistantSpans(chat, get("messages"), tools, *r);
        if (!spans.ok()) return fail(spans.status());
        example.assistant_spans = std::move(*spans);
      }
      return absl::OkStatus();
    }
    case ExampleFormat::kPromptOnly:
    case ExampleFormat::kStepwiseSupervision: {  // a conversational prompt; the steps stay text
      absl::StatusOr<std::string> p = RenderPrompt(chat, get("prompt"), tools);
      if (!p.ok()) return fail(p.status());
      example.prompt = std::move(*p);
      return absl::OkStatus();
    }
    case ExampleFormat::kPromptCompletion:
    case ExampleFormat::kUnpairedPreference:
    case ExampleFormat::kPreference: {
      absl::StatusOr<std::string> p = RenderPrompt(chat, get("prompt"), tools);
      if (!p.ok()) return fail(p.status());
      example.prompt = std::move(*p);
      const bool pair = example.format == ExampleFormat::kPreference;
      for (const char* field : pair ? std::vector<const char*>{"chosen", "rejected"} : std::vector<const char*>{"completion"}) {
        absl::StatusOr<std::string> c = RenderSuffix(chat, get("prompt"), get(field), tools, example.prompt, field);
        if (!c.ok()) return fail(c.status());
        (std::string(field) == "chosen" ? example.chosen : std::string(field) == "rejected" ? example.rejected
                                                                                           : example.completion) = std::move(*c);
      }
      return absl::OkStatus();
    }
  }
  return absl::OkStatus();
}

std::vector<std::int64_t> EndOfTurnTokenIds(const ChatTemplate& chat, const Tokenizer& tokenizer) {
  const std::string marker = "posttrain-end-of-turn-probe";
  ordered_json messages = ordered_json::array({ordered_json{{"role", "user"}, {"content", "Hello"}},
                                               ordered_json{{"role", "assistant"}, {"content", marker}}});
  absl::StatusOr<std::string> text = Render(chat, messages, ordered_json(), false);
  if (!text.ok()) return {};
  std::size_t at = text->rfind(marker);
  if (at == std::string::npos) return {};
  std::string after = text->substr(at + marker.size());
  std::vector<std::int64_t> ids = tokenizer.Encode(after, /*add_special_tokens=*/false);
  if (ids.empty()) return {};
  // Only a token the tokenizer holds whole (an added/special token) marks the end.
  const std::string first = tokenizer.Decode({ids[0]}, /*skip_special_tokens=*/false);
  if (first.empty() || after.compare(0, first.size(), first) != 0) return {};
  if (!tokenizer.Decode({ids[0]}, /*skip_special_tokens=*/true).empty()) return {};
  return {ids[0]};
}

}  // namespace posttrain

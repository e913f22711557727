// Conversational examples → text, as TRL's `maybe_apply_chat_template` does, plus the
// assistant spans that `assistant_only_loss` trains on.
//
//   for (Example& e : examples) POSTTRAIN_RETURN_IF_ERROR(RenderConversation(chat, e, options));
//
// Per format (Example::conversation holds the messages):
//   messages (language modelling)    text = render(messages)
//   prompt (prompt-only)             prompt = render(prompt, add_generation_prompt) — or,
//                                    when the prompt ends with an assistant message,
//                                    the rendering cut after that message's content
//                                    (continue_final_message)
//   prompt + completion / chosen /   prompt as above; completion = render(prompt +
//   rejected (also unpaired)         completion) minus the prompt's rendering, which
//                                    must be its prefix (else InvalidArgument)
// The record's `tools` go to every rendering. Text fields hold the rendering; the
// template writes any BOS and end-of-turn tokens itself, so the tokenizer adds none.
//
// Assistant spans (options.assistant_spans, language modelling only): the byte ranges
// of `text` the assistant turns wrote — from the template's {% generation %} blocks
// when it has them; otherwise, for assistant message i, from render(messages[:i],
// add_generation_prompt) (where the turn starts; it must be a prefix of the whole
// rendering) to the end of what render(messages[:i+1]) shares with the whole
// rendering, less trailing whitespace: the turn's content and its end-of-turn marker.
// A template that is not prefix-preserving, or a turn whose content cannot be found
// in its span, is an InvalidArgument naming the message — never a silent empty mask.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "posttrain/chat/chat_template.h"
#include "posttrain/core/example.h"
#include "posttrain/tokenizer/tokenizer.h"

namespace posttrain {

struct ConversationOptions {
  bool assistant_spans = false;
};

// Fills the example's text fields (and assistant_spans) from its conversation.
// No-op for a plain-text example. Errors name the example (file:line).
absl::Status RenderConversation(const ChatTemplate& chat, Example& example, const ConversationOptions& options = {});

// Byte ranges of `rendering` (= render(messages)) written for assistant turns; see
// the file comment.
absl::StatusOr<std::vector<std::pair<std::size_t, std::size_t>>> AssistantSpans(const ChatTemplate& chat,
                                                                               const nlohmann::ordered_json& messages,
                                                                               const nlohmann::ordered_json& tools,
                                                                               const TemplateRendering& rendering);

// Token ids that end an assistant turn under this template: the special token the
// template writes right after an assistant message's content (e.g. <|im_end|>,
// <|eot_id|>, </s>), found by rendering a probe conversation. Empty if the template
// writes no special token there.
std::vector<std::int64_t> EndOfTurnTokenIds(const ChatTemplate& chat, const Tokenizer& tokenizer);

}  // namespace posttrain

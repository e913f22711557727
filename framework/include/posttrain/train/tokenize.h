// The data pipeline's tokenization stage: Examples → TokenizedExamples, on oneTBB
// worker threads, ahead of the trainer.
//
// Follows TRL's preprocessing:
//   * prompts get the tokenizer's template (e.g. BOS); completions end in EOS;
//   * language-modeling text is BOS + text + EOS, stored as prompt [BOS] and
//     completion [rest] so the first prediction has a context;
//   * a prompt longer than max_prompt_length keeps its end (truncation_mode
//     "keep_end") or its start ("keep_start");
//   * if prompt + completion exceeds max_length, the prompt is cut further (same
//     mode) down to at least one token, then the completion is cut at its end.
// Completions are never cut to make room for the prompt.
//
// Conversational examples (rendered by chat/conversation.h) are tokenized without
// added special tokens and without an appended EOS: the template wrote them. With
// assistant_only_loss a conversation's ids are split at its first assistant token
// (prompt_ids before, completion_ids from there) and completion_mask marks the
// tokens of every assistant span; a span boundary inside a token (rare: the text
// up to it tokenizes differently) gives the token to the span.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/types/span.h"
#include "posttrain/api/trainer.h"
#include "posttrain/tokenizer/tokenizer.h"

namespace posttrain {

struct TokenizeOptions {
  std::int64_t max_length = 1024;        // prompt + completion; <= 0: no limit
  std::int64_t max_prompt_length = 512;  // <= 0: no limit
  std::string truncation_mode = "keep_end";
  bool assistant_only_loss = false;
};

// Token positions [begin, end) of `ids` (the tokenization of `text`) covering each
// byte range of `spans`.
std::vector<std::pair<std::int64_t, std::int64_t>> TokenSpans(
    const Tokenizer& tokenizer, const std::string& text, absl::Span<const std::int64_t> ids,
    const std::vector<std::pair<std::size_t, std::size_t>>& spans);

std::vector<TokenizedExample> TokenizeExamples(absl::Span<const Example> examples, const Tokenizer& tokenizer,
                                               const TokenizeOptions& options);

// TRL's packing with packing_strategy "bfd": sequences (prompt + completion) are
// placed, longest first, each into the open row with the least room that still
// fits it (best-fit decreasing), a new row when none does. Returns the rows (each a
// TokenizedExample whose `packed` holds its sequences in placement order) and, in
// `first`, for each row the index in `examples` of its first sequence. A sequence
// longer than max_length gets a row of its own (tokenization already cuts it to
// max_length). Rows come in the order they were opened; equal lengths are placed
// in dataset order, so the packing is deterministic.
// A process-reward-model example as TRL's PRMTrainer.tokenize_row builds it: the
// prompt's ids (template and max_prompt_length already applied), then each step's
// ids followed by `separator_ids`; every token is labelled kIgnoreLabel except the
// last of each step (its separator's last token), which carries the step's label
// (1 correct, 0 not). With train_on_last_step_only only the last step keeps its
// label. The completion is cut to max_completion_length (> 0), then the whole to
// max_length (> 0), labels alike.
inline constexpr std::int64_t kIgnoreLabel = -100;
struct StepwiseSequence {
  std::vector<std::int64_t> input_ids;
  std::vector<std::int64_t> labels;  // aligned with input_ids
};
StepwiseSequence StepwiseTokens(const std::vector<std::int64_t>& prompt_ids,
                                const std::vector<std::vector<std::int64_t>>& step_ids,
                                const std::vector<bool>& step_labels, const std::vector<std::int64_t>& separator_ids,
                                bool train_on_last_step_only, std::int64_t max_completion_length, std::int64_t max_length);

std::vector<TokenizedExample> PackExamples(absl::Span<const TokenizedExample> examples, std::int64_t max_length,
                                           std::vector<std::int64_t>* first);

}  // namespace posttrain

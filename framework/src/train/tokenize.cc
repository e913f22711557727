#include "posttrain/train/tokenize.h"

#include <algorithm>
#include <map>

#include "tbb/parallel_for.h"

namespace posttrain {
namespace {

void Cut(std::vector<std::int64_t>& ids, std::int64_t keep, bool keep_end) {
  if (keep < 0 || static_cast<std::int64_t>(ids.size()) <= keep) return;
  if (keep_end) {
    ids.erase(ids.begin(), ids.end() - keep);
  } else {
    ids.resize(static_cast<size_t>(keep));
  }
}

// Fits prompt + each completion into max_length (prompt first, then completion).
void Fit(std::vector<std::int64_t>& prompt, std::vector<std::vector<std::int64_t>*> completions,
         const TokenizeOptions& o) {
  const bool keep_end = o.truncation_mode != "keep_start";
  if (o.max_prompt_length > 0) Cut(prompt, o.max_prompt_length, keep_end);
  if (o.max_length <= 0) return;
  std::int64_t longest = 0;
  for (auto* c : completions) longest = std::max<std::int64_t>(longest, static_cast<std::int64_t>(c->size()));
  const std::int64_t room_for_prompt = std::max<std::int64_t>(prompt.empty() ? 0 : 1, o.max_length - longest);
  Cut(prompt, room_for_prompt, keep_end);
  for (auto* c : completions) Cut(*c, o.max_length - static_cast<std::int64_t>(prompt.size()), false);
}

std::int64_t CommonPrefix(const std::vector<std::int64_t>& a, absl::Span<const std::int64_t> b) {
  std::size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return static_cast<std::int64_t>(n);
}

// A conversation for language modelling: whole, or split at its first assistant
// token with a mask over the assistant spans.
void TokenizeConversation(const Example& e, const Tokenizer& tokenizer, const TokenizeOptions& options,
                          TokenizedExample& t) {
  std::vector<std::int64_t> ids = tokenizer.Encode(e.text, /*add_special_tokens=*/false);
  if (options.max_length > 0) Cut(ids, options.max_length, false);
  if (ids.empty()) return;
  std::int64_t split = 1;
  std::vector<std::uint8_t> mask(ids.size(), options.assistant_only_loss ? 0 : 1);
  if (options.assistant_only_loss) {
    const auto spans = TokenSpans(tokenizer, e.text, ids, e.assistant_spans);
    if (!spans.empty()) split = std::max<std::int64_t>(1, spans.front().first);
    for (const auto& [b, end] : spans) {
      for (std::int64_t k = b; k < end; ++k) mask[static_cast<size_t>(k)] = 1;
    }
  }
  split = std::min<std::int64_t>(split, static_cast<std::int64_t>(ids.size()));
  t.prompt_ids.assign(ids.begin(), ids.begin() + split);
  t.completion_ids.assign(ids.begin() + split, ids.end());
  if (options.assistant_only_loss) t.completion_mask.assign(mask.begin() + split, mask.end());
}

}  // namespace

std::vector<std::pair<std::int64_t, std::int64_t>> TokenSpans(
    const Tokenizer& tokenizer, const std::string& text, absl::Span<const std::int64_t> ids,
    const std::vector<std::pair<std::size_t, std::size_t>>& spans) {
  std::vector<std::pair<std::int64_t, std::int64_t>> out;
  const auto n = static_cast<std::int64_t>(ids.size());
  for (const auto& [b, e] : spans) {
    // The tokens of text[:b] are a prefix of the whole's when b falls between tokens.
    const std::int64_t begin = std::min(n, CommonPrefix(tokenizer.Encode(text.substr(0, b), false), ids));
    const std::vector<std::int64_t> upto = tokenizer.Encode(text.substr(0, e), false);
    std::int64_t end = CommonPrefix(upto, ids);
    if (end < static_cast<std::int64_t>(upto.size())) ++end;  // a token across the boundary belongs to the span
    end = std::min(n, end);
    if (end > begin) out.emplace_back(begin, end);
  }
  return out;
}

std::vector<TokenizedExample> TokenizeExamples(absl::Span<const Example> examples, const Tokenizer& tokenizer,
                                               const TokenizeOptions& options) {
  std::vector<TokenizedExample> out(examples.size());
  const std::optional<std::int64_t> eos = tokenizer.eos_token_id();
  auto completion = [&](const std::string& text) {
    std::vector<std::int64_t> ids = tokenizer.Encode(text, /*add_special_tokens=*/false);
    if (eos) ids.push_back(*eos);
    return ids;
  };
  tbb::parallel_for(size_t{0}, examples.size(), [&](size_t i) {
    const Example& e = examples[i];
    TokenizedExample& t = out[i];
    t.index = static_cast<std::int64_t>(i);
    t.label = e.label;
    if (e.conversational()) {
      // The template wrote BOS and end-of-turn tokens: none are added here.
      auto encode = [&](const std::string& text) { return tokenizer.Encode(text, /*add_special_tokens=*/false); };
      switch (e.format) {
        case ExampleFormat::kLanguageModeling: TokenizeConversation(e, tokenizer, options, t); break;
        case ExampleFormat::kPromptOnly:
          t.prompt_ids = encode(e.prompt);
          Fit(t.prompt_ids, {}, options);
          break;
        case ExampleFormat::kStepwiseSupervision:
          t.prompt_ids = encode(e.prompt);
          Fit(t.prompt_ids, {}, options);
          for (const std::string& step : e.steps) t.step_ids.push_back(encode(step));
          break;
        case ExampleFormat::kPromptCompletion:
        case ExampleFormat::kUnpairedPreference:
          t.prompt_ids = encode(e.prompt);
          t.completion_ids = encode(e.completion);
          Fit(t.prompt_ids, {&t.completion_ids}, options);
          break;
        case ExampleFormat::kPreference:
          t.prompt_ids = encode(e.prompt);
          t.chosen_ids = encode(e.chosen);
          t.rejected_ids = encode(e.rejected);
          Fit(t.prompt_ids, {&t.chosen_ids, &t.rejected_ids}, options);
          break;
      }
      return;
    }
    switch (e.format) {
      case ExampleFormat::kLanguageModeling: {
        std::vector<std::int64_t> ids = tokenizer.Encode(e.text, /*add_special_tokens=*/true);
        if (eos) ids.push_back(*eos);
        if (options.max_length > 0) Cut(ids, options.max_length, false);
        if (!ids.empty()) {
          t.prompt_ids.assign(ids.begin(), ids.begin() + 1);
          t.completion_ids.assign(ids.begin() + 1, ids.end());
        }
        break;
      }
      case ExampleFormat::kPromptOnly:
        t.prompt_ids = tokenizer.Encode(e.prompt, true);
        Fit(t.prompt_ids, {}, options);
        break;
      case ExampleFormat::kStepwiseSupervision:
        // The prompt with the tokenizer's template; steps bare (TRL's PRM tokenize_row).
        t.prompt_ids = tokenizer.Encode(e.prompt, true);
        Fit(t.prompt_ids, {}, options);
        for (const std::string& step : e.steps) t.step_ids.push_back(tokenizer.Encode(step, false));
        break;
      case ExampleFormat::kPromptCompletion:
      case ExampleFormat::kUnpairedPreference:
        t.prompt_ids = tokenizer.Encode(e.prompt, true);
        t.completion_ids = completion(e.completion);
        Fit(t.prompt_ids, {&t.completion_ids}, options);
        break;
      case ExampleFormat::kPreference:
        t.prompt_ids = tokenizer.Encode(e.prompt, true);
        t.chosen_ids = completion(e.chosen);
        t.rejected_ids = completion(e.rejected);
        Fit(t.prompt_ids, {&t.chosen_ids, &t.rejected_ids}, options);
        break;
    }
  });
  return out;
}

StepwiseSequence StepwiseTokens(const std::vector<std::int64_t>& prompt_ids,
                                const std::vector<std::vector<std::int64_t>>& step_ids,
                                const std::vector<bool>& step_labels, const std::vector<std::int64_t>& separator_ids,
                                bool train_on_last_step_only, std::int64_t max_completion_length, std::int64_t max_length) {
  StepwiseSequence out;
  std::vector<std::int64_t> completion, labels;
  for (size_t s = 0; s < step_ids.size(); ++s) {
    completion.insert(completion.end(), step_ids[s].begin(), step_ids[s].end());
    completion.insert(completion.end(), separator_ids.begin(), separator_ids.end());
    const size_t n = step_ids[s].size() + separator_ids.size();
    if (n == 0) continue;
    const bool kept = !train_on_last_step_only || s + 1 == step_ids.size();
    labels.insert(labels.end(), n - 1, kIgnoreLabel);
    labels.push_back(kept && s < step_labels.size() ? static_cast<std::int64_t>(step_labels[s]) : kIgnoreLabel);
  }
  if (max_completion_length > 0 && static_cast<std::int64_t>(completion.size()) > max_completion_length) {
    completion.resize(static_cast<size_t>(max_completion_length));
    labels.resize(static_cast<size_t>(max_completion_length));
  }
  out.input_ids = prompt_ids;
  out.input_ids.insert(out.input_ids.end(), completion.begin(), completion.end());
  out.labels.assign(prompt_ids.size(), kIgnoreLabel);
  out.labels.insert(out.labels.end(), labels.begin(), labels.end());
  if (max_length > 0 && static_cast<std::int64_t>(out.input_ids.size()) > max_length) {
    out.input_ids.resize(static_cast<size_t>(max_length));
    out.labels.resize(static_cast<size_t>(max_length));
  }
  return out;
}

std::vector<TokenizedExample> PackExamples(absl::Span<const TokenizedExample> examples, std::int64_t max_length,
                                           std::vector<std::int64_t>* first) {
  auto length = [&](size_t i) {
    return static_cast<std::int64_t>(examples[i].prompt_ids.size() + examples[i].completion_ids.size());
  };
  std::vector<size_t> order(examples.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return length(a) > length(b); });
  std::vector<TokenizedExample> rows;
  first->clear();
  // Open rows by room left: the best fit is the first with room >= the length.
  std::multimap<std::int64_t, size_t> room;
  for (size_t i : order) {
    const std::int64_t need = length(i);
    if (need == 0) continue;
    auto it = room.lower_bound(need);
    size_t row;
    std::int64_t left;
    if (it == room.end()) {
      row = rows.size();
      rows.emplace_back();
      rows.back().index = static_cast<std::int64_t>(row);
      first->push_back(static_cast<std::int64_t>(i));
      left = max_length;
    } else {
      row = it->second;
      left = it->first;
      room.erase(it);
    }
    TokenizedExample member = examples[i];
    member.packed.clear();
    rows[row].packed.push_back(std::move(member));
    left -= need;
    if (left > 0) room.emplace(left, row);
  }
  return rows;
}

}  // namespace posttrain

#include "posttrain/train/pair_logps.h"

#include "absl/strings/str_cat.h"
#include "posttrain/generation/logprobs.h"

namespace posttrain {

PairLogps ComputePairLogps(const CausalLM& model, absl::Span<const TokenizedExample* const> batch) {
  std::vector<std::vector<std::int64_t>> prompts, completions;
  for (const TokenizedExample* t : batch) {
    prompts.push_back(t->prompt_ids);
    completions.push_back(t->chosen_ids);
  }
  for (const TokenizedExample* t : batch) {
    prompts.push_back(t->prompt_ids);
    completions.push_back(t->rejected_ids);
  }
  CompletionBatch cb = MakeCompletionBatch(prompts, completions, model.device());
  at::Tensor token_logps = CompletionLogprobs(model, cb, 1.0);
  at::Tensor sums = token_logps.sum(1), counts = cb.completion_mask.sum(1);
  const auto b = static_cast<std::int64_t>(batch.size());
  PairLogps out;
  out.chosen = sums.narrow(0, 0, b);
  out.rejected = sums.narrow(0, b, b);
  out.chosen_tokens = counts.narrow(0, 0, b);
  out.rejected_tokens = counts.narrow(0, b, b);
  out.chosen_nll = -out.chosen.sum() / out.chosen_tokens.sum().clamp_min(1);
  return out;
}

absl::Status RequirePairs(absl::Span<const TokenizedExample* const> batch, absl::string_view trainer) {
  for (const TokenizedExample* t : batch) {
    if (t->chosen_ids.empty() || t->rejected_ids.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(trainer, " needs preference data (chosen and rejected)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<UnpairedRows> UnpairRows(absl::Span<const Example* const> batch,
                                        absl::Span<const TokenizedExample* const> tokens, absl::string_view trainer) {
  UnpairedRows rows;
  auto add = [&](const TokenizedExample& t, const std::vector<std::int64_t>& completion, bool good, size_t i) {
    rows.prompts.push_back(t.prompt_ids);
    rows.completions.push_back(completion);
    rows.desirable.push_back(good);
    rows.batch_position.push_back(static_cast<std::int64_t>(i));
  };
  for (size_t i = 0; i < tokens.size(); ++i) {
    const TokenizedExample& t = *tokens[i];
    if (!t.chosen_ids.empty() && !t.rejected_ids.empty()) {
      add(t, t.chosen_ids, true, i);
      add(t, t.rejected_ids, false, i);
    } else if (const std::optional<bool> label = t.label.has_value() ? t.label : batch[i]->label;
               label.has_value() && !t.completion_ids.empty()) {
      add(t, t.completion_ids, *label, i);
    } else {
      return absl::InvalidArgumentError(absl::StrCat(ExampleLocation(*batch[i]), ": ", trainer,
                                                     " needs unpaired preference data (prompt, completion, label) or "
                                                     "preference pairs"));
    }
  }
  return rows;
}

}  // namespace posttrain

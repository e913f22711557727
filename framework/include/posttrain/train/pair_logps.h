// Sequence log-probs of preference pairs in one forward (TRL's concatenated_forward):
// the B chosen and B rejected completions, each after its prompt, as 2B rows.
//
//   PairLogps lp = ComputePairLogps(*policy, input.tokens);
//   lp.chosen, lp.rejected   [B] summed log-probs of the completions (fp32)
//   lp.chosen_tokens, ...    [B] completion lengths
//   lp.chosen_nll            scalar: mean NLL per chosen token (ORPO / CPO's SFT term)
#pragma once

#include <ATen/ATen.h>

#include "absl/types/span.h"
#include "posttrain/api/trainer.h"
#include "posttrain/model/causal_lm.h"

namespace posttrain {

struct PairLogps {
  at::Tensor chosen, rejected;
  at::Tensor chosen_tokens, rejected_tokens;
  at::Tensor chosen_nll;
  at::Tensor chosen_average() const { return chosen / chosen_tokens.clamp_min(1); }
  at::Tensor rejected_average() const { return rejected / rejected_tokens.clamp_min(1); }
};

// Every example must have chosen_ids and rejected_ids (callers check).
PairLogps ComputePairLogps(const CausalLM& model, absl::Span<const TokenizedExample* const> batch);

// InvalidArgument naming the trainer unless every example is a preference pair.
absl::Status RequirePairs(absl::Span<const TokenizedExample* const> batch, absl::string_view trainer);

}  // namespace posttrain

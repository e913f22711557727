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

// The rows of unpaired-preference trainers (KTO, BCO): an unpaired example is one row
// with its label; a preference pair is two, chosen desirable and rejected undesirable
// (TRL's unpair_preference_dataset, on the fly). `batch_position[r]` is the example
// row r came from. InvalidArgument naming the trainer and the example otherwise.
struct UnpairedRows {
  std::vector<std::vector<std::int64_t>> prompts, completions;
  std::vector<bool> desirable;
  std::vector<std::int64_t> batch_position;
};
absl::StatusOr<UnpairedRows> UnpairRows(absl::Span<const Example* const> batch,
                                        absl::Span<const TokenizedExample* const> tokens, absl::string_view trainer);

}  // namespace posttrain

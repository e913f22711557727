// Per-token log-probabilities of completions given prompts: the one function both
// the sampler (for the log-probs it returns) and the trainers (old/reference/policy
// log-probs) call, so that for the same weights and the same batch they are equal
// by construction — no train/inference mismatch.
//
//   at::Tensor logps = CompletionLogprobs(model, batch, /*temperature=*/1.0);  // [N, C]
//
// TRL's _get_per_token_logps: logits of the full sequence (prompt + completion),
// scaled by 1/temperature, log-softmax, gathered at the next token; positions of
// the completion only.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

#include "posttrain/model/causal_lm.h"
#include "posttrain/model/completion_batch.h"

namespace posttrain {

// The batch as a padding-free stream (model/causal_lm.h): each distinct prompt once,
// each completion but its last token as a continuation of its prompt. predicting
// gets, for row i and completion position k (index i * C + k), the stream index of
// the token whose hidden state predicts completion token k (0 at padding).
// Every prompt must be non-empty. whole_rows: the completions' last tokens too (they
// predict nothing, but a forward over whole rows routes them: the router load of
// CausalLM::set_record_router; a row with an empty completion then routes its prompt
// once more, as a sequence of its own).
PackedSequences PackCompletionBatch(const CompletionBatch& batch, std::vector<std::int64_t>* predicting,
                                    bool whole_rows = false);

// log p(completion_t | prefix) / temperature-scaled, [N, C] fp32, 0 at padding.
// Differentiable when the model's parameters require grad.
at::Tensor CompletionLogprobs(const CausalLM& model, const CompletionBatch& batch, double temperature,
                              at::Tensor* entropy = nullptr);

// The same in two halves, for trainers that read the hidden states too (PPO's
// value head): the final hidden states [N, C, H] at the positions that predict each
// completion token, then the log-probs from them. CompletionLogprobs is exactly
// CompletionLogprobsFromHidden(model, batch, CompletionHiddenStates(model, batch), T).
// Runs padding-free: rows that share a prompt share its forward pass
// (PackCompletionBatch).
at::Tensor CompletionHiddenStates(const CausalLM& model, const CompletionBatch& batch);
// `entropy`, if given, gets each completion position's entropy [N, C] (0 at
// padding) from the same pass, without gradient.
at::Tensor CompletionLogprobsFromHidden(const CausalLM& model, const CompletionBatch& batch, const at::Tensor& hidden,
                                        double temperature, at::Tensor* entropy = nullptr);

}  // namespace posttrain

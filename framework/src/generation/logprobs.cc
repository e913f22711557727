#include "posttrain/generation/logprobs.h"

#include <algorithm>

#include "posttrain/model/token_logprobs.h"

namespace posttrain {

namespace {

// Positions that predict each completion token ([N, C], 0 at padding) and the
// tokens themselves.
void CompletionIndex(const CompletionBatch& batch, at::Tensor* index, at::Tensor* targets) {
  const std::int64_t n = batch.input_ids.size(0), C = batch.completion_mask.size(1);
  *index = at::zeros({n, C}, at::kLong);
  *targets = at::zeros({n, C}, at::kLong);
  auto index_a = index->accessor<std::int64_t, 2>();
  auto targets_a = targets->accessor<std::int64_t, 2>();
  auto ids = batch.input_ids.accessor<std::int64_t, 2>();
  for (std::int64_t i = 0; i < n; ++i) {
    for (std::int64_t k = 0; k < C; ++k) {
      // Row i predicts completion token k at position prompt_len_i - 1 + k.
      const bool real = k < batch.completion_lengths[static_cast<size_t>(i)];
      const std::int64_t pos = batch.prompt_lengths[static_cast<size_t>(i)] - 1 + k;
      index_a[i][k] = real ? pos : 0;
      targets_a[i][k] = real ? ids[i][pos + 1] : 0;
    }
  }
}

}  // namespace

at::Tensor CompletionHiddenStates(const CausalLM& model, const CompletionBatch& batch) {
  const std::int64_t n = batch.input_ids.size(0), L = batch.input_ids.size(1);
  const std::int64_t C = batch.completion_mask.size(1);
  at::Tensor positions = at::arange(L, at::kLong).unsqueeze(0).expand({n, L}).contiguous();
  at::Tensor hidden = model.Hidden(batch.input_ids, positions, batch.attention_mask, nullptr);  // [N, L, H]
  at::Tensor index, targets;
  CompletionIndex(batch, &index, &targets);
  return hidden.gather(1, index.unsqueeze(-1).expand({n, C, hidden.size(2)}));  // [N, C, H]
}

at::Tensor CompletionLogprobsFromHidden(const CausalLM& model, const CompletionBatch& batch, const at::Tensor& hidden,
                                        double temperature) {
  at::Tensor index, targets;
  CompletionIndex(batch, &index, &targets);
  // Only real completion positions go through the LM head, a chunk at a time: the
  // [N, C, V] logits never exist (model/token_logprobs.h).
  const std::int64_t n = hidden.size(0), c = hidden.size(1), h = hidden.size(2);
  const at::Tensor real = batch.completion_mask.reshape({n * c}).nonzero().squeeze(1);
  const TokenLogprobsResult r = TokenLogprobs(hidden.reshape({n * c, h}).index_select(0, real), model.lm_head_weight(),
                                              targets.reshape({n * c}).index_select(0, real), temperature);
  return at::zeros({n * c}, r.logprobs.options()).index_put({real}, r.logprobs).view({n, c});
}

at::Tensor CompletionLogprobs(const CausalLM& model, const CompletionBatch& batch, double temperature) {
  return CompletionLogprobsFromHidden(model, batch, CompletionHiddenStates(model, batch), temperature);
}

}  // namespace posttrain

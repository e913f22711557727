#include "posttrain/generation/logprobs.h"

#include <algorithm>

namespace posttrain {

CompletionBatch MakeCompletionBatch(const std::vector<std::vector<std::int64_t>>& prompts,
                                    const std::vector<std::vector<std::int64_t>>& completions) {
  TORCH_CHECK(prompts.size() == completions.size(), "prompts and completions differ in number");
  const std::int64_t n = static_cast<std::int64_t>(prompts.size());
  std::int64_t longest = 1, longest_completion = 1;
  for (std::int64_t i = 0; i < n; ++i) {
    longest = std::max<std::int64_t>(longest, static_cast<std::int64_t>(prompts[i].size() + completions[i].size()));
    longest_completion = std::max<std::int64_t>(longest_completion, static_cast<std::int64_t>(completions[i].size()));
  }
  CompletionBatch batch;
  batch.input_ids = at::zeros({n, longest}, at::kLong);
  batch.attention_mask = at::zeros({n, longest}, at::kLong);
  batch.completion_mask = at::zeros({n, longest_completion}, at::kFloat);
  auto ids = batch.input_ids.accessor<std::int64_t, 2>();
  auto mask = batch.attention_mask.accessor<std::int64_t, 2>();
  auto cmask = batch.completion_mask.accessor<float, 2>();
  for (std::int64_t i = 0; i < n; ++i) {
    std::int64_t t = 0;
    for (std::int64_t id : prompts[i]) ids[i][t++] = id;
    for (std::int64_t id : completions[i]) ids[i][t++] = id;
    for (std::int64_t k = 0; k < t; ++k) mask[i][k] = 1;
    for (size_t k = 0; k < completions[i].size(); ++k) cmask[i][static_cast<std::int64_t>(k)] = 1.0f;
    batch.prompt_lengths.push_back(static_cast<std::int64_t>(prompts[i].size()));
    batch.completion_lengths.push_back(static_cast<std::int64_t>(completions[i].size()));
  }
  return batch;
}

at::Tensor CompletionLogprobs(const CausalLM& model, const CompletionBatch& batch, double temperature) {
  const std::int64_t n = batch.input_ids.size(0), L = batch.input_ids.size(1);
  const std::int64_t C = batch.completion_mask.size(1);
  at::Tensor positions = at::arange(L, at::kLong).unsqueeze(0).expand({n, L}).contiguous();
  at::Tensor logits = model.Forward(batch.input_ids, positions, batch.attention_mask, nullptr);  // [N, L, V]
  // Row i predicts completion token k at position prompt_len_i - 1 + k.
  at::Tensor index = at::zeros({n, C}, at::kLong);
  at::Tensor targets = at::zeros({n, C}, at::kLong);
  auto index_a = index.accessor<std::int64_t, 2>();
  auto targets_a = targets.accessor<std::int64_t, 2>();
  auto ids = batch.input_ids.accessor<std::int64_t, 2>();
  for (std::int64_t i = 0; i < n; ++i) {
    for (std::int64_t k = 0; k < C; ++k) {
      const bool real = k < batch.completion_lengths[static_cast<size_t>(i)];
      const std::int64_t pos = batch.prompt_lengths[static_cast<size_t>(i)] - 1 + k;
      index_a[i][k] = real ? pos : 0;
      targets_a[i][k] = real ? ids[i][pos + 1] : 0;
    }
  }
  at::Tensor selected = logits.gather(1, index.unsqueeze(-1).expand({n, C, logits.size(2)}));  // [N, C, V]
  if (temperature != 1.0) selected = selected / temperature;
  at::Tensor logps = at::log_softmax(selected, -1).gather(2, targets.unsqueeze(-1)).squeeze(-1);
  return logps * batch.completion_mask;
}

}  // namespace posttrain

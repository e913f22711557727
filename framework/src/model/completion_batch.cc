#include "posttrain/model/completion_batch.h"

#include <algorithm>

#include "posttrain/core/device.h"

namespace posttrain {

CompletionBatch MakeCompletionBatch(const std::vector<std::vector<std::int64_t>>& prompts,
                                    const std::vector<std::vector<std::int64_t>>& completions, at::Device device) {
  TORCH_CHECK(prompts.size() == completions.size(), "prompts and completions differ in number");
  const std::int64_t n = static_cast<std::int64_t>(prompts.size());
  std::int64_t longest = 1, longest_completion = 1;
  for (std::int64_t i = 0; i < n; ++i) {
    longest = std::max<std::int64_t>(longest, static_cast<std::int64_t>(prompts[i].size() + completions[i].size()));
    longest_completion = std::max<std::int64_t>(longest_completion, static_cast<std::int64_t>(completions[i].size()));
  }
  CompletionBatch batch;
  // Filled on the host (token ids being batched), then moved to `device` at once.
  batch.input_ids = at::zeros({n, longest}, HostOptions(at::kLong));
  batch.attention_mask = at::zeros({n, longest}, HostOptions(at::kLong));
  batch.completion_mask = at::zeros({n, longest_completion}, HostOptions(at::kFloat));
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
  batch.input_ids = batch.input_ids.to(device);
  batch.attention_mask = batch.attention_mask.to(device);
  batch.completion_mask = batch.completion_mask.to(device);
  return batch;
}

}  // namespace posttrain

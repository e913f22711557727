// Prompt + completion token ids as one right-padded batch: the input of every
// teacher-forced pass over completions (log-probs, sequence scores).
//
//   CompletionBatch batch = MakeCompletionBatch({{1, 5, 6}, {1, 9}}, {{7, 2}, {3, 4, 2}}, model.device());
//   batch.input_ids   [2, 5]: 1 5 6 7 2 / 1 9 3 4 2
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

namespace posttrain {

// Sequences as prompt + completion token ids, right-padded into one batch:
//   input_ids [N, L] int64 (pad 0), attention_mask [N, L] int64,
//   completion_mask [N, C] float (1 on real completion tokens), with
//   L = max(prompt_len + completion_len) and C = max completion_len;
//   prompt_lengths [N]. The tensors are on the device given to MakeCompletionBatch
//   (the model's: the masks meet its outputs).
struct CompletionBatch {
  at::Tensor input_ids;
  at::Tensor attention_mask;
  at::Tensor completion_mask;
  std::vector<std::int64_t> prompt_lengths;
  std::vector<std::int64_t> completion_lengths;
};

CompletionBatch MakeCompletionBatch(const std::vector<std::vector<std::int64_t>>& prompts,
                                    const std::vector<std::vector<std::int64_t>>& completions, at::Device device);

}  // namespace posttrain

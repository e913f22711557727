#include "posttrain/generation/logprobs.h"

#include <algorithm>
#include <map>

#include "posttrain/core/device.h"
#include "posttrain/model/token_logprobs.h"

namespace posttrain {

namespace {

// The completion tokens [N, C] (0 at padding).
at::Tensor CompletionTargets(const CompletionBatch& batch) {
  const std::int64_t n = batch.input_ids.size(0), C = batch.completion_mask.size(1);
  at::Tensor targets = at::zeros({n, C}, HostOptions(at::kLong));  // filled on the host
  auto targets_a = targets.accessor<std::int64_t, 2>();
  const at::Tensor ids_cpu = batch.input_ids.to(at::kCPU);
  auto ids = ids_cpu.accessor<std::int64_t, 2>();
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t plen = batch.prompt_lengths[static_cast<size_t>(i)];
    for (std::int64_t k = 0; k < batch.completion_lengths[static_cast<size_t>(i)]; ++k) {
      targets_a[i][k] = ids[i][plen + k];
    }
  }
  return targets.to(batch.input_ids.device());
}

}  // namespace

PackedSequences PackCompletionBatch(const CompletionBatch& batch, std::vector<std::int64_t>* predicting, bool whole_rows) {
  const std::int64_t n = batch.input_ids.size(0), C = batch.completion_mask.size(1);
  const at::Tensor ids_cpu = batch.input_ids.to(at::kCPU);
  auto ids = ids_cpu.accessor<std::int64_t, 2>();
  // One stream segment per distinct prompt, then each completion as a continuation
  // of its prompt's segment.
  std::map<std::vector<std::int64_t>, std::int64_t> prompt_segment;
  std::vector<std::int64_t> row_prompt(static_cast<size_t>(n));
  std::vector<std::int64_t> tokens, positions;
  PackedSequences packed;
  packed.offsets.push_back(0);
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t plen = batch.prompt_lengths[static_cast<size_t>(i)];
    TORCH_CHECK(plen >= 1, "completion log-probs need a non-empty prompt (row ", i, ")");
    std::vector<std::int64_t> prompt(ids[i].data(), ids[i].data() + plen);
    auto [it, fresh] = prompt_segment.try_emplace(prompt, packed.num_sequences());
    if (fresh) {
      for (std::int64_t t = 0; t < plen; ++t) {
        tokens.push_back(prompt[static_cast<size_t>(t)]);
        positions.push_back(t);
      }
      packed.offsets.push_back(static_cast<std::int64_t>(tokens.size()));
      packed.prefix.push_back(-1);
    }
    row_prompt[static_cast<size_t>(i)] = it->second;
  }
  predicting->assign(static_cast<size_t>(n * C), 0);
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t plen = batch.prompt_lengths[static_cast<size_t>(i)];
    const std::int64_t clen = batch.completion_lengths[static_cast<size_t>(i)];
    const std::int64_t parent = row_prompt[static_cast<size_t>(i)];
    if (clen == 0) {
      // A forward over whole rows routes this row's prompt too (transformers averages
      // the router load over every unmasked token of every row): the prompt once more,
      // a sequence of its own whose states predict nothing.
      if (whole_rows) {
        for (std::int64_t t = 0; t < plen; ++t) {
          tokens.push_back(ids[i][t]);
          positions.push_back(t);
        }
        packed.offsets.push_back(static_cast<std::int64_t>(tokens.size()));
        packed.prefix.push_back(-1);
      }
      continue;
    }
    // Completion token k is predicted by the token before it: the prompt's last for
    // k = 0, else completion token k - 1. The last completion token predicts nothing.
    (*predicting)[static_cast<size_t>(i * C)] = packed.offsets[static_cast<size_t>(parent) + 1] - 1;
    const std::int64_t first = static_cast<std::int64_t>(tokens.size());
    const std::int64_t fed = whole_rows ? clen : clen - 1;
    for (std::int64_t k = 0; k < fed; ++k) {
      tokens.push_back(ids[i][plen + k]);
      positions.push_back(plen + k);
      if (k + 1 < clen) (*predicting)[static_cast<size_t>(i * C + k + 1)] = first + k;
    }
    if (fed > 0) {
      packed.offsets.push_back(static_cast<std::int64_t>(tokens.size()));
      packed.prefix.push_back(parent);
    }
  }
  const at::TensorOptions options = batch.input_ids.options();
  packed.input_ids = at::tensor(tokens, options.dtype(at::kLong));
  packed.position_ids = at::tensor(positions, options.dtype(at::kLong));
  return packed;
}

at::Tensor CompletionHiddenStates(const CausalLM& model, const CompletionBatch& batch) {
  const std::int64_t n = batch.input_ids.size(0), C = batch.completion_mask.size(1);
  std::vector<std::int64_t> predicting;
  const PackedSequences packed = PackCompletionBatch(batch, &predicting, model.records_router());
  const at::Tensor hidden = model.PackedHidden(packed);  // [tokens, H]
  const at::Tensor index = at::tensor(predicting, hidden.options().dtype(at::kLong));
  return hidden.index_select(0, index).view({n, C, hidden.size(1)});
}

at::Tensor CompletionLogprobsFromHidden(const CausalLM& model, const CompletionBatch& batch, const at::Tensor& hidden,
                                        double temperature, at::Tensor* entropy) {
  const at::Tensor targets = CompletionTargets(batch);
  // Only real completion positions go through the LM head, a chunk at a time: the
  // [N, C, V] logits never exist (model/token_logprobs.h).
  const std::int64_t n = hidden.size(0), c = hidden.size(1), h = hidden.size(2);
  const at::Tensor real = batch.completion_mask.reshape({n * c}).nonzero().squeeze(1);
  const TokenLogprobsResult r = TokenLogprobs(model.HeadInput(hidden.reshape({n * c, h}).index_select(0, real)), model.lm_head_weight(),
                                              targets.reshape({n * c}).index_select(0, real), temperature,
                                              /*chunk=*/0, /*with_argmax=*/false, /*with_entropy=*/entropy != nullptr,
                                              model.logit_softcap());
  if (entropy != nullptr) *entropy = at::zeros({n * c}, r.entropy.options()).index_put({real}, r.entropy).view({n, c});
  return at::zeros({n * c}, r.logprobs.options()).index_put({real}, r.logprobs).view({n, c});
}

at::Tensor CompletionLogprobs(const CausalLM& model, const CompletionBatch& batch, double temperature,
                              at::Tensor* entropy) {
  return CompletionLogprobsFromHidden(model, batch, CompletionHiddenStates(model, batch), temperature, entropy);
}

}  // namespace posttrain

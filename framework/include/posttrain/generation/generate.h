// Batched autoregressive generation with a KV cache.
//
//   SamplingParams params;  params.max_new_tokens = 64;  params.temperature = 0.8;
//   params.eos_token_ids = {2};  params.seed = 7;
//   POSTTRAIN_ASSIGN_OR_RETURN(std::vector<Generation> out,
//       Generate(model, {prompt_ids_a, prompt_ids_b}, /*num_generations=*/4, params, &tokenizer));
//
// Prompts of different lengths share a batch: they are left-padded, padding is
// masked out of attention, and each row's positions start at 0 at its first real
// token, so a prompt gives the same tokens in a batch as alone (up to fp rounding).
//
// Token choice follows transformers' generate(): repetition penalty (Keskar et al.
// 2019: a seen token's logit is divided by the penalty if positive, multiplied if
// negative), then temperature, top-k, top-p (nucleus, Holtzman et al. 2020), min-p
// (Nguyen et al. 2024: drop tokens with p < min_p · p_max); greedy when do_sample
// is false or temperature is 0.
//
// Log-probs: logprobs[t] = log_softmax(logits_t / T)[token_t] with T the
// temperature (1 for greedy), from the unprocessed logits in fp32, computed after
// generation by CompletionLogprobs (generation/logprobs.h) on the whole sequences —
// the function trainers use, so sampler and trainer agree by construction.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "posttrain/api/sampler.h"
#include "posttrain/model/causal_lm.h"
#include "posttrain/tokenizer/tokenizer.h"

namespace posttrain {

struct Generation;

struct SamplingParams {
  std::int64_t max_new_tokens = 256;  // TRL: max_completion_length
  bool do_sample = true;              // false: greedy
  double temperature = 1.0;           // 0: greedy
  std::int64_t top_k = 0;             // 0: off
  double top_p = 1.0;                 // 1: off
  double min_p = 0.0;                 // 0: off
  double repetition_penalty = 1.0;    // 1: off
  std::vector<std::int64_t> eos_token_ids;
  std::vector<std::string> stop_strings;  // need a tokenizer
  // Every generation draws from its own counter-based stream (SplitMix64 of its
  // prompt's seed, its sample number and the token position): what a sequence
  // samples does not depend on the batch it is in, its row, or finished rows.
  std::uint64_t seed = 0;
  // Optional, aligned with the prompts: each prompt's seed; empty: derived from
  // `seed` and the prompt's position.
  std::vector<std::uint64_t> prompt_seeds;
  std::int64_t batch_size = 0;        // sequences per forward batch; 0: all at once
  std::int64_t pad_token_id = 0;      // fed at padded positions (masked out)
  // false: skip the teacher-forced log-prob pass (Generation::logprobs stays empty).
  bool compute_logprobs = true;
  // Called on the generating thread when generation `index` (its place in the
  // result) is final, with token_ids, finish_reason and text set; its log-probs
  // come later (one teacher-forced pass when all are done).
  std::function<void(std::size_t index, const Generation& generation)> on_finished;
  // Optional, for inspection and tests: called on the generating thread at each
  // decoding step t of generation `index`, with the raw fp32 logits [V] its next
  // token is drawn from (before the logits processors) — what the KV cache and the
  // left-padded batch produced.
  std::function<void(std::size_t index, std::int64_t t, const at::Tensor& logits)> on_step_logits;
  // Optional: draw tokens from the geometric mixture of `model` and this one (Nash-MD,
  // Munos et al. 2024; TRL's GeometricMixtureWrapper): at each step the logits are
  //   (1 − mixture_coef) · logits_model + mixture_coef · logits_mixture
  // (so p ∝ p_model^(1−c) · p_mixture^c per token, before temperature and the other
  // processors). The mixture model keeps its own KV cache; it must have the model's
  // vocabulary and context. The returned log-probs stay `model`'s.
  const CausalLM* mixture_model = nullptr;
  double mixture_coef = 0.0;  // in [0, 1]
};

struct Generation {
  std::int64_t prompt_index = 0;
  std::vector<std::int64_t> token_ids;  // generated tokens, the EOS token included
  std::vector<float> logprobs;          // one per token (empty if !compute_logprobs)
  FinishReason finish_reason = FinishReason::kLength;
  std::string text;  // decoded without special tokens, cut before a stop string
};

// InvalidArgument naming the first parameter out of its range: max_new_tokens >= 1,
// temperature >= 0, top_k >= 0, top_p in (0, 1], min_p in [0, 1],
// repetition_penalty > 0, mixture_coef in [0, 1], every float finite.
absl::Status ValidateSamplingParams(const SamplingParams& params);

// Returns prompts.size() * num_generations generations grouped by prompt.
// InvalidArgument for invalid params, an empty prompt, a token id outside the
// vocabulary, or a prompt of max_position_embeddings tokens or more. Generation
// stops at the model's context (finish_reason "length"): a batch generates at most
// max_position_embeddings − its longest prompt tokens. FailedPrecondition if the
// model's logits are not finite (NaN weights, a broken config): sampling from them
// is meaningless.
absl::StatusOr<std::vector<Generation>> Generate(const CausalLM& model,
                                                 const std::vector<std::vector<std::int64_t>>& prompts,
                                                 std::int64_t num_generations, const SamplingParams& params,
                                                 const Tokenizer* tokenizer);

// SplitMix64's finaliser (Steele, Lea, Flood 2014): a bijective mix of 64 bits,
// for deriving independent seeds (per prompt, per sample) from one.
std::uint64_t Mix64(std::uint64_t x);

// InvalidArgument unless every id of `tokenizer` indexes the model's embedding
// (tokenizer vocab_size <= config.vocab_size; a model may have more rows).
absl::Status CheckTokenizerFitsModel(const CausalLM& model, const Tokenizer& tokenizer);

// Tokens that end a completion: config.json's eos_token_id(s), plus the
// tokenizer's EOS if it differs (tokenizer may be null).
std::vector<std::int64_t> EosTokenIds(const CausalLM& model, const Tokenizer* tokenizer);

// One token per row of processed logits [N, V], drawn from softmax(logits) by
// inverse CDF: with p = softmax(logits) (fp32) and u = uniforms[n] · Σ_i p_i
// (uniforms in [0, 1)), the first token whose running sum of p (fp64) exceeds u. Tokens of probability 0 (masked to −inf by top-k, top-p, min-p) are never
// drawn. Returns int64 [N] on the logits' device.
at::Tensor SampleCategorical(const at::Tensor& logits, const std::vector<double>& uniforms);

// The logits processors above, on fp32 logits [N, V] (in place of a copy).
// `seen` [N, V] bool marks tokens for the repetition penalty (may be undefined).
at::Tensor ProcessLogits(const at::Tensor& logits, const at::Tensor& seen, const SamplingParams& params);

}  // namespace posttrain

// Extension point: Sampler — produces completions (rollouts) for prompts.
//
// The default sampler ("default") generates from the current policy with a KV
// cache and returns token ids, per-token log-probs and finish reasons; "dataset"
// replays stored completions. A sampler is called from the engine's step loop, one
// call at a time.
#pragma once

#include "absl/strings/string_view.h"
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "posttrain/core/example.h"

namespace posttrain {

class CausalLM;
class Tokenizer;

// The model a sampler generates from (the current policy) and its tokenizer.
// Null for samplers that do not generate. Owned by the engine.
struct Policy {
  const CausalLM* model = nullptr;
  const Tokenizer* tokenizer = nullptr;
  // Tokens that end a completion besides the model's and tokenizer's EOS: the chat
  // template's end-of-turn token for conversational prompts (e.g. <|im_end|>).
  std::vector<std::int64_t> stop_token_ids;
  // Optional: sample from the geometric mixture of `model` and this model instead of
  // `model` alone (Nash-MD): logits (1 − mixture_coef)·z_model + mixture_coef·z_mixture
  // at each token (generation/generate.h). Log-probs stay `model`'s.
  const CausalLM* mixture = nullptr;
  double mixture_coef = 0.0;
};

enum class FinishReason {
  kStop,    // EOS token or a stop string
  kLength,  // max_completion_length reached
  kSource,  // taken from the data, not generated
};

// "stop", "length", "source".
absl::string_view FinishReasonName(FinishReason reason);

struct Rollout {
  // Index into the request's prompts.
  std::int64_t prompt_index = 0;
  std::string completion;
  // Generated token ids and their log-probs under the sampling policy (natural log,
  // fp32), same length; empty for samplers that do not generate (and logprobs
  // empty when the request did not ask for them).
  std::vector<std::int64_t> token_ids;
  std::vector<float> logprobs;
  // The prompt's token ids as the sampler fed them (after truncation); empty for
  // samplers that do not generate.
  std::vector<std::int64_t> prompt_ids;
  FinishReason finish_reason = FinishReason::kStop;
};

struct SampleRequest {
  // One prompt per example; examples must outlive the call.
  absl::Span<const Example* const> prompts;
  // The prompts' token ids as the engine's data pipeline made them (special tokens
  // added, cut to the trainer's max_prompt_length per its truncation_mode),
  // aligned with `prompts`. Empty: a generating sampler tokenizes `prompts` itself,
  // whole (benchmarks, tests).
  absl::Span<const std::vector<std::int64_t>* const> prompt_ids;
  // Completions per prompt (TRL's num_generations).
  std::int64_t num_generations = 1;
  // Seed for this call (the host derives it from the recipe seed and the step).
  std::uint64_t seed = 0;
  // Optional, aligned with `prompts`: a seed per prompt, from which its samples'
  // random draws come, whatever else is in the batch. The engine derives them from
  // `seed` and the example's index, so rollouts do not depend on how examples are
  // spread over ranks or batches. Empty: derived from `seed` and the position.
  std::vector<std::uint64_t> prompt_seeds;
  // The current policy; set when the recipe has a [model].
  Policy policy;
  // Whether the trainer reads Rollout::logprobs; false lets a generating sampler
  // skip its teacher-forced pass (logprobs then stay empty).
  bool logprobs = true;
  // Optional: called on the sampling thread as soon as rollout `index` (its place
  // in the returned vector) is final — completion text, token ids and finish
  // reason set; log-probs may still be empty. The engine scores rewards from here
  // while generation goes on. A sampler that never calls it is still correct.
  std::function<void(std::size_t index, const Rollout& rollout)> on_rollout;
};

class Sampler {
 public:
  virtual ~Sampler() = default;

  // Returns prompts.size() * num_generations rollouts, grouped by prompt (all
  // generations of prompt 0 first). Errors: InvalidArgument for a prompt the sampler
  // cannot serve, naming the example's location.
  virtual absl::StatusOr<std::vector<Rollout>> Sample(const SampleRequest& request) = 0;
};

}  // namespace posttrain

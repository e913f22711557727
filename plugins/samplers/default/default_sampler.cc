// Sampler "default": generates completions from the current policy.
//
//   [model]
//   path = "models/stories260K"
//   [sampler]
//   type = "default"
//   max_completion_length = 64
//   temperature = 1.0
//   top_p = 0.95
//
// Prompts come tokenized by the engine (special tokens added, cut to the trainer's
// max_prompt_length per its truncation_mode: one setting, one place) and are
// generated in batches with a KV cache (see posttrain/generation/generate.h for the
// sampling maths and the log-probs).
#include <algorithm>
#include "posttrain/generation/generate.h"
#include "posttrain/plugin/plugin.h"

namespace posttrain {
namespace {

class DefaultSampler final : public Sampler {
 public:
  static ComponentSchema Schema() {
    return ComponentSchema(
               "Generates completions from the policy with a KV cache: temperature, top-k, "
               "top-p, min-p, repetition penalty, EOS and stop strings; returns token ids, "
               "per-token log-probs and finish reasons.")
        .Int("max_completion_length", 256, "Tokens to generate at most per completion.").AtLeast(1)
        .Float("temperature", 1.0, "Sampling temperature; 0 = greedy.").AtLeast(0)
        .Int("top_k", 0, "Keep the k most likely tokens (0: off).").AtLeast(0)
        .Float("top_p", 1.0, "Nucleus sampling mass (1: off).").GreaterThan(0).AtMost(1)
        .Float("min_p", 0.0, "Drop tokens with p < min_p * p_max (0: off).").AtLeast(0).AtMost(1)
        .Float("repetition_penalty", 1.0, "Penalty for tokens already present (1: off).").GreaterThan(0)
        .StringList("stop", {}, "Stop strings: a completion ends where one appears.")
        .Int("generation_batch_size", 0, "Sequences per forward batch (0: all of a step at once).").AtLeast(0);
  }

  static absl::StatusOr<std::unique_ptr<Sampler>> Create(const ComponentConfig& config) {
    auto sampler = std::make_unique<DefaultSampler>();
    SamplingParams& p = sampler->params_;
    p.max_new_tokens = config.GetInt("max_completion_length");
    p.temperature = config.GetFloat("temperature");
    p.do_sample = p.temperature > 0;
    p.top_k = config.GetInt("top_k");
    p.top_p = config.GetFloat("top_p");
    p.min_p = config.GetFloat("min_p");
    p.repetition_penalty = config.GetFloat("repetition_penalty");
    p.stop_strings = config.GetStringList("stop");
    p.batch_size = config.GetInt("generation_batch_size");
    if (absl::Status s = ValidateSamplingParams(p); !s.ok()) return config.Error("sampling", s.message());
    return sampler;
  }

  absl::StatusOr<std::vector<Rollout>> Sample(const SampleRequest& request) override {
    if (request.policy.model == nullptr || request.policy.tokenizer == nullptr) {
      return absl::FailedPreconditionError(
          "sampler 'default' generates from the policy: the recipe needs a [model] table");
    }
    const Tokenizer& tokenizer = *request.policy.tokenizer;
    SamplingParams params = params_;
    params.seed = request.seed;
    params.prompt_seeds = request.prompt_seeds;
    params.compute_logprobs = request.logprobs;
    params.mixture_model = request.policy.mixture;
    params.mixture_coef = request.policy.mixture_coef;
    params.eos_token_ids = EosTokenIds(*request.policy.model, &tokenizer);
    for (std::int64_t id : request.policy.stop_token_ids) {
      if (std::find(params.eos_token_ids.begin(), params.eos_token_ids.end(), id) == params.eos_token_ids.end()) {
        params.eos_token_ids.push_back(id);
      }
    }
    if (tokenizer.pad_token_id()) params.pad_token_id = *tokenizer.pad_token_id();
    std::vector<std::vector<std::int64_t>> prompts;
    for (size_t i = 0; i < request.prompts.size(); ++i) {
      const Example* example = request.prompts[i];
      std::vector<std::int64_t> ids;
      if (!request.prompt_ids.empty()) {
        ids = *request.prompt_ids[i];
      } else {
        // A conversational prompt was rendered by the chat template, special tokens included.
        ids = tokenizer.Encode(example->format == ExampleFormat::kLanguageModeling ? example->text : example->prompt,
                               /*add_special_tokens=*/!example->conversational());
      }
      if (ids.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(ExampleLocation(*example), ": the prompt tokenizes to nothing"));
      }
      prompts.push_back(std::move(ids));
    }
    if (request.on_rollout) {
      // Hand each completion over as soon as it is final (rewards score it while
      // the other sequences are still generating).
      params.on_finished = [&](std::size_t index, const Generation& g) {
        Rollout r;
        r.prompt_index = g.prompt_index;
        r.completion = g.text;
        r.token_ids = g.token_ids;
        r.finish_reason = g.finish_reason;
        request.on_rollout(index, r);
      };
    }
    POSTTRAIN_ASSIGN_OR_RETURN(std::vector<Generation> generations,
                               Generate(*request.policy.model, prompts, request.num_generations, params, &tokenizer));
    std::vector<Rollout> rollouts;
    rollouts.reserve(generations.size());
    for (Generation& g : generations) {
      Rollout r;
      r.prompt_index = g.prompt_index;
      r.prompt_ids = prompts[static_cast<size_t>(g.prompt_index)];
      r.completion = std::move(g.text);
      r.token_ids = std::move(g.token_ids);
      r.logprobs = std::move(g.logprobs);
      r.finish_reason = g.finish_reason;
      rollouts.push_back(std::move(r));
    }
    return rollouts;
  }

 private:
  SamplingParams params_;
};

}  // namespace
}  // namespace posttrain

POSTTRAIN_REGISTER_SAMPLER("default", posttrain::DefaultSampler);
POSTTRAIN_PLUGIN("posttrain_sampler_default");

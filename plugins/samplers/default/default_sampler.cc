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
// Prompts are tokenized with the policy's tokenizer (special tokens added, e.g.
// BOS, unless add_special_tokens = false), cut from the left to max_prompt_length
// tokens as TRL does, and generated in batches with a KV cache (see
// posttrain/generation/generate.h for the sampling maths and the log-probs).
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
        .Int("max_prompt_length", 512, "Keep at most this many prompt tokens (from the end).")
        .Int("max_completion_length", 256, "Tokens to generate at most per completion.")
        .Float("temperature", 1.0, "Sampling temperature; 0 = greedy.")
        .Int("top_k", 0, "Keep the k most likely tokens (0: off).")
        .Float("top_p", 1.0, "Nucleus sampling mass (1: off).")
        .Float("min_p", 0.0, "Drop tokens with p < min_p * p_max (0: off).")
        .Float("repetition_penalty", 1.0, "Penalty for tokens already present (1: off).")
        .StringList("stop", {}, "Stop strings: a completion ends where one appears.")
        .Bool("add_special_tokens", true, "Tokenize prompts with the tokenizer's template (e.g. BOS).")
        .Int("generation_batch_size", 0, "Sequences per forward batch (0: all of a step at once).");
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
    sampler->max_prompt_length_ = config.GetInt("max_prompt_length");
    sampler->add_special_tokens_ = config.GetBool("add_special_tokens");
    if (p.max_new_tokens < 1) return config.Error("max_completion_length", "must be >= 1");
    if (sampler->max_prompt_length_ < 1) return config.Error("max_prompt_length", "must be >= 1");
    if (p.temperature < 0) return config.Error("temperature", "must be >= 0");
    if (p.top_p <= 0 || p.top_p > 1) return config.Error("top_p", "must be in (0, 1]");
    if (p.min_p < 0 || p.min_p > 1) return config.Error("min_p", "must be in [0, 1]");
    if (p.repetition_penalty <= 0) return config.Error("repetition_penalty", "must be > 0");
    if (p.top_k < 0) return config.Error("top_k", "must be >= 0");
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
    params.compute_logprobs = request.logprobs;
    params.eos_token_ids = EosTokenIds(*request.policy.model, &tokenizer);
    if (tokenizer.pad_token_id()) params.pad_token_id = *tokenizer.pad_token_id();
    std::vector<std::vector<std::int64_t>> prompts;
    for (const Example* example : request.prompts) {
      const std::string& text =
          example->format == ExampleFormat::kLanguageModeling ? example->text : example->prompt;
      std::vector<std::int64_t> ids = tokenizer.Encode(text, add_special_tokens_);
      if (ids.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(ExampleLocation(*example), ": the prompt tokenizes to nothing"));
      }
      if (static_cast<std::int64_t>(ids.size()) > max_prompt_length_) {
        ids.erase(ids.begin(), ids.end() - max_prompt_length_);  // keep the end, as TRL does
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
  std::int64_t max_prompt_length_ = 512;
  bool add_special_tokens_ = true;
};

}  // namespace
}  // namespace posttrain

POSTTRAIN_REGISTER_SAMPLER("default", posttrain::DefaultSampler);
POSTTRAIN_PLUGIN("posttrain_sampler_default");

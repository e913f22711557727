// Extension point: Trainer — an algorithm: how a batch becomes a loss and metrics.
//
// The shared loop (batching, tokenization, gradient accumulation, clipping, the
// optimizer, the schedule, logging, evaluation, checkpoints, distributed reduce)
// lives once in the framework's engine; a trainer defines only its step. It never
// opens files, never owns the optimizer, never writes checkpoints.
//
//   class Sft final : public Trainer {
//     TrainerNeeds Needs() const override { return {}; }           // a policy, no rollouts
//     absl::Status Setup(const TrainerContext& ctx) override { policy_ = ctx.policy; ... }
//     absl::StatusOr<StepOutput> Step(const StepInput& in) override {
//       StepOutput out;
//       out.loss = ...;                  // scalar, differentiable w.r.t. the policy
//       out.metrics["mean_token_accuracy"] = ...;
//       return out;
//     }
//   };
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "posttrain/api/sampler.h"
#include "posttrain/core/example.h"
#include "posttrain/distributed/collectives.h"

namespace posttrain {

class CausalLM;
struct ClassifierHead;
class Collectives;
class Tokenizer;

// Which model one of a prompt's generations is drawn from.
struct RolloutSource {
  enum class Model {
    kPolicy,     // the current policy
    kReference,  // the frozen reference (XPO's second completion)
    kMixture,    // the geometric mixture of policy and reference (Nash-MD)
  };
  Model model = Model::kPolicy;
  // kMixture: the reference's weight c in (1 − c)·z_policy + c·z_reference, one per
  // epoch (TRL's mixture_coef list); epochs past the list use its last value.
  std::vector<double> mixture_coef;
};

struct TrainerNeeds {
  // The recipe must have a [model] (the policy).
  bool model = true;
  // A frozen reference model: the initial policy, or `ref_model` if given.
  bool reference = false;
  // The engine samples num_generations rollouts per example with the recipe's
  // [sampler] before each step.
  bool rollouts = false;
  // The engine scores the rollouts with the recipe's [[rewards]].
  bool rewards = false;
  // Completions per prompt when rollouts are needed.
  std::int64_t num_generations = 1;
  // Empty: every generation comes from the policy. Else one source per generation
  // (num_generations of them): rollout g of each prompt's group is drawn from
  // rollout_sources[g], with the sampler's settings and a random stream of its own.
  // Needs `reference` for kReference and kMixture.
  std::vector<RolloutSource> rollout_sources;
  // Optimisation steps on each generated batch (GRPO's num_iterations, PPO's
  // num_ppo_epochs): the engine samples and scores once, then calls Step with the
  // same rollouts and rewards this many steps in a row (StepInput::iteration 0, 1, ...).
  std::int64_t steps_per_generation = 1;
  // Whether Step reads Rollout::logprobs. The online trainers compute the sampling
  // policy's log-probs themselves in their first forward pass on a batch (the same
  // function, the same weights: equal), which spares the sampler a pass.
  bool sampler_logprobs = true;
  // > 0: the engine packs the tokenized training set into rows of at most this many
  // tokens (best-fit decreasing, TRL's packing_strategy "bfd") before batching; a
  // batch is then per_device_train_batch_size such rows (TokenizedExample::packed).
  std::int64_t pack_to_length = 0;
  // TRL's assistant_only_loss: the engine marks the assistant turns of
  // conversational language-modelling examples (TokenizedExample::completion_mask).
  bool assistant_only_loss = false;
  // Whether the loss takes the routers' load-balancing loss of a mixture-of-experts
  // policy whose config sets output_router_logits (ModelConfig): the engine records
  // the policy's training forwards (CausalLM::set_record_router) and adds
  // router_aux_loss_coef · aux_loss to each training step's loss, logging `aux_loss`.
  // TRL adds it in SFT (through transformers' loss), DPO, ORPO, CPO, KTO and BCO.
  bool router_aux_loss = false;

  // An online trainer's needs: rollouts scored by rewards, log-probs of its own.
  static TrainerNeeds Online(bool reference, std::int64_t num_generations, std::int64_t steps_per_generation = 1) {
    TrainerNeeds needs;
    needs.reference = reference;
    needs.rollouts = true;
    needs.rewards = true;
    needs.num_generations = num_generations;
    needs.steps_per_generation = steps_per_generation;
    needs.sampler_logprobs = false;
    return needs;
  }
};

// An example's token ids, made by the engine's data pipeline (oneTBB) ahead of
// the trainer, truncated per the engine's max_length / max_prompt_length:
//   language modeling: completion_ids = text (BOS ... EOS), prompt_ids empty;
//   prompt-completion / unpaired: prompt_ids (BOS ...), completion_ids (... EOS);
//   preference: prompt_ids, chosen_ids, rejected_ids (each completion ends in EOS).
struct TokenizedExample {
  std::int64_t index = 0;  // position in the (train or eval) dataset
  std::vector<std::int64_t> prompt_ids;
  std::vector<std::int64_t> completion_ids;
  std::vector<std::int64_t> chosen_ids;
  std::vector<std::int64_t> rejected_ids;
  // Stepwise supervision: each step's ids (no special tokens), aligned with
  // Example::steps; prompt_ids as for a prompt-only example.
  std::vector<std::vector<std::int64_t>> step_ids;
  // Which completion tokens are targets (1) — assistant_only_loss on a conversation,
  // where user turns sit between assistant turns; aligned with completion_ids. Empty:
  // every completion token is.
  std::vector<std::uint8_t> completion_mask;
  // Unpaired preference data: the example's label (true = desirable).
  std::optional<bool> label;
  // A row packed from several examples (TRL's packing, PackExamples in
  // train/tokenize.h): its sequences, each with its prompt and completion. Empty
  // for a plain example.
  std::vector<TokenizedExample> packed;
};

// What the engine hands a trainer once, before anything else. Pointers stay
// valid for the whole run.
struct TrainerContext {
  CausalLM* policy = nullptr;             // trainable
  const CausalLM* reference = nullptr;    // if needs.reference
  const Tokenizer* tokenizer = nullptr;
  // Sums and gathers over every rank's share of the batch (distributed/collectives.h);
  // never null. With one rank (and during evaluation) the identity.
  const Collectives* collectives = &Collectives::SingleRank();
  // When the model directory holds a classifier (config.json declares a
  // *ForSequenceClassification or *ForTokenClassification: a reward model or process
  // reward model to go on training), its head (model/sequence_classifier.h), on the
  // host; null otherwise. Only trainers that save a classifier accept such a model.
  const ClassifierHead* classifier_head = nullptr;
  // The dropout transformers' *ForTokenClassification applies before its head in
  // training, from the model's config.json (TokenClassifierDropout).
  double classifier_dropout = 0.1;
};

// Rewards of a step's rollouts: `total[i]` is the weighted sum over reward functions
// for rollout i; `per_function[name][i]` the unweighted score of one function, NaN
// where that function was skipped for the sample (its on_error = "skip"), which
// `total` leaves out; `skipped[name]` counts those.
struct RewardTable {
  std::vector<float> total;
  std::map<std::string, std::vector<float>> per_function;
  std::map<std::string, std::int64_t> skipped;
};

// The rewards of a step's rollouts. The engine goes on scoring them in the
// background when it calls Step, so a trainer should do its forward passes first
// and Wait() when it needs the scores: scoring then overlaps with its compute.
// Wait() returns the same table every time; an error is a failing reward (named).
class StepRewards {
 public:
  StepRewards() = default;
  // Already scored.
  explicit StepRewards(const RewardTable* table)
      : wait_([table]() -> absl::StatusOr<const RewardTable*> { return table; }) {}
  // Scored in the background; `wait` blocks until done.
  explicit StepRewards(std::function<absl::StatusOr<const RewardTable*>()> wait) : wait_(std::move(wait)) {}

  // False unless the trainer's needs.rewards.
  bool has_value() const { return static_cast<bool>(wait_); }
  absl::StatusOr<const RewardTable*> Wait() const {
    if (!wait_) return absl::FailedPreconditionError("this step has no rewards (the trainer did not ask for them)");
    return wait_();
  }

 private:
  std::function<absl::StatusOr<const RewardTable*>()> wait_;
};

struct StepInput {
  std::int64_t step = 0;  // 1-based optimisation step
  bool training = true;   // false during evaluation (no gradients are taken)
  // Which reuse of these rollouts this step is (0: freshly sampled; the sampler's
  // log-probs are the current policy's). Always 0 without rollouts.
  std::int64_t iteration = 0;
  // Which micro-batch of the step (0 .. gradient_accumulation_steps − 1): with
  // `iteration`, identifies rollouts a trainer computed something for at iteration 0.
  std::int64_t micro_batch = 0;
  absl::Span<const Example* const> batch;
  // Aligned with `batch`.
  absl::Span<const TokenizedExample* const> tokens;
  // Empty unless needs.rollouts: batch.size() * num_generations, grouped by example.
  absl::Span<const Rollout> rollouts;
  // The rollouts of every micro-batch of this step's generation
  // (generation[micro_batch] is `rollouts`), for statistics over the whole
  // generation batch such as DAPO's token count. Empty unless needs.rollouts.
  absl::Span<const absl::Span<const Rollout>> generation;
  // Empty unless needs.rewards; see StepRewards.
  StepRewards rewards;
};

struct StepOutput {
  // Scalar to minimise (the engine calls backward on it); undefined if the
  // trainer trains nothing (reward_eval).
  at::Tensor loss;
  // Metric name (TRL's names, e.g. "rewards/chosen") → value; the engine averages
  // them over the logging window and adds "loss", "grad_norm", "learning_rate".
  std::map<std::string, double> metrics;
};

class Trainer {
 public:
  virtual ~Trainer() = default;

  virtual TrainerNeeds Needs() const = 0;

  // Called once with the models, before Prepare and any step.
  virtual absl::Status Setup(const TrainerContext& context) { return absl::OkStatus(); }

  // Called once with the whole tokenized training and evaluation sets before the
  // first step (e.g. DPO's precompute_ref_log_probs). After it the engine frees
  // `reference` if ReleasesReference() says so: the trainer must not touch it again.
  virtual absl::Status Prepare(absl::Span<const TokenizedExample> train, absl::Span<const TokenizedExample> eval) {
    return absl::OkStatus();
  }
  virtual bool ReleasesReference() const { return false; }

  // What the trainer carries from step to step besides parameters — running means
  // (bco_pair's reward shift), tensors fixed at a generation's first step and reused
  // by the next (old log-probs, reference log-probs, PPO's advantages) — as named
  // tensors. Checkpointed (trainer_state.safetensors) and handed back to LoadState
  // on resume, on the run's device, so a resumed run continues bit for bit, even within a generation's
  // reuse. Names are the trainer's own.
  virtual std::vector<std::pair<std::string, at::Tensor>> State() const { return {}; }
  virtual absl::Status LoadState(const std::map<std::string, at::Tensor>& state) { return absl::OkStatus(); }

  // Parameters the trainer adds beside the policy's (e.g. a reward model's
  // "score.weight"): trained, checkpointed and saved with the model under these
  // Hugging Face names.
  virtual std::vector<std::pair<std::string, at::Tensor>> ExtraParameters() { return {}; }
  // Parameters the trainer trains for itself and does not save with the model
  // (e.g. PPO's value head): checkpointed (trainer_params.safetensors) for resuming.
  virtual std::vector<std::pair<std::string, at::Tensor>> TrainerParameters() { return {}; }
  // The architecture the saved model declares ("" = the policy's own, e.g.
  // "LlamaForSequenceClassification" for a reward model) and its num_labels.
  virtual std::pair<std::string, std::int64_t> SavedArchitecture() const { return {"", 0}; }

  // One micro-batch. Called from one thread.
  virtual absl::StatusOr<StepOutput> Step(const StepInput& input) = 0;
};

}  // namespace posttrain

// Trainer "rloo": REINFORCE Leave-One-Out (Ahmadian et al. 2024; TRL's RLOOTrainer).
// Each step the engine samples num_generations completions per prompt and scores
// them; each completion is one action: its reward, less β times its summed KL
// estimate to the reference, minus the mean of the other completions of its prompt
// is its advantage; the loss is the clipped surrogate on the sequence's
// importance ratio (posttrain/losses/policy_gradient.h has the maths).
// Metrics (TRL): reward, reward_std, rewards/<name>/mean|std, kl (mean summed k1 per
// completion, when β > 0), clip_ratio, completions/mean_length, completions/clipped_ratio.
#include <c10/core/GradMode.h>

#include "posttrain/generation/logprobs.h"
#include "posttrain/losses/policy_gradient.h"
#include "posttrain/model/causal_lm.h"
#include "posttrain/plugin/plugin.h"
#include "posttrain/run/reward_pipeline.h"
#include "posttrain/train/rollout_batch.h"

namespace posttrain {
namespace {

class RlooTrainer final : public Trainer {
 public:
  static ComponentSchema Schema() {
    return ComponentSchema("REINFORCE Leave-One-Out on sampled completions scored by reward functions.")
        .Float("learning_rate", 1e-6, "Peak learning rate (TRL RLOOConfig default).").AtLeast(0)
        .Int("num_generations", 2, "Completions per prompt (K; the baseline of one is the mean of the K − 1 others).").AtLeast(2)
        .Float("beta", 0.05, "Weight of the KL to the reference, subtracted from the reward (0: no reference).").AtLeast(0)
        .Float("epsilon", 0.2, "Lower clip range ε of the sequence ratio.").AtLeast(0)
        .Float("epsilon_high", -1.0, "Upper clip range; -1: same as epsilon.").AtLeast(0).OrEqualTo(-1)
        .Bool("normalize_advantages", false, "Whiten the advantages over the batch.")
        .Int("num_iterations", 1, "Optimisation steps on each generated batch.").AtLeast(1)
        .Bool("mask_truncated_completions", false, "Exclude completions that hit max_completion_length.")
        .Float("temperature", 1.0, "Sampling temperature; must match the sampler's.").GreaterThan(0);
  }
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const ComponentConfig& config) {
    auto t = std::make_unique<RlooTrainer>();
    t->num_generations_ = config.GetInt("num_generations");
    t->beta_ = config.GetFloat("beta");
    t->epsilon_ = config.GetFloat("epsilon");
    const double high = config.GetFloat("epsilon_high");
    t->epsilon_high_ = high < 0 ? t->epsilon_ : high;
    t->normalize_ = config.GetBool("normalize_advantages");
    t->num_iterations_ = config.GetInt("num_iterations");
    t->mask_truncated_ = config.GetBool("mask_truncated_completions");
    t->temperature_ = config.GetFloat("temperature");
    if (t->num_generations_ < 2) return config.Error("num_generations", "must be >= 2 (the baseline is the others' mean)");
    if (t->num_iterations_ < 1) return config.Error("num_iterations", "must be >= 1");
    if (t->temperature_ <= 0) return config.Error("temperature", "must be > 0");
    return t;
  }

  TrainerNeeds Needs() const override { return TrainerNeeds::Online(beta_ != 0.0, num_generations_, num_iterations_); }
  absl::Status Setup(const TrainerContext& context) override {
    policy_ = context.policy;
    collectives_ = context.collectives;
    reference_ = context.reference;
    return absl::OkStatus();
  }

  // The tensors fixed at a generation's first step, for resuming within its reuse.
  std::vector<std::pair<std::string, at::Tensor>> State() const override {
    std::vector<std::pair<std::string, at::Tensor>> state;
    sampling_.AppendState("sampling", &state);
    sequence_kl_.AppendState("sequence_kl", &state);
    return state;
  }
  absl::Status LoadState(const std::map<std::string, at::Tensor>& state) override {
    sampling_.LoadState("sampling", state);
    sequence_kl_.LoadState("sequence_kl", state);
    return absl::OkStatus();
  }

  absl::StatusOr<StepOutput> Step(const StepInput& input) override {
    POSTTRAIN_ASSIGN_OR_RETURN(RolloutBatch rb, MakeRolloutBatch(input.rollouts, policy_->device(), "rloo", mask_truncated_));
    StepOutput out;
    const at::Tensor logps = CompletionLogprobs(*policy_, rb.sequences, temperature_);
    const at::Tensor old_logps = sampling_.Get(input, [&] { return logps.detach(); });
    at::Tensor kl;
    if (beta_ != 0.0) {
      // KL of the sampled sequence (k1, under the sampling policy), folded into the
      // reward: fixed once per generated batch.
      kl = sequence_kl_.Get(input, [&] {
        c10::NoGradGuard no_grad;
        const at::Tensor ref_logps = CompletionLogprobs(*reference_, rb.sequences, temperature_);
        return ((old_logps - ref_logps) * rb.mask).sum(1);
      });
      out.metrics["kl"] = kl.mean().item<double>();
    }
    POSTTRAIN_ASSIGN_OR_RETURN(const RewardTable* table, input.rewards.Wait());
    at::Tensor rewards = at::tensor(table->total, logps.options().dtype(at::kFloat));
    if (kl.defined()) rewards = rewards - beta_ * kl;
    POSTTRAIN_ASSIGN_OR_RETURN(at::Tensor advantages, LeaveOneOutAdvantages(rewards, num_generations_));
    if (normalize_) {
      // Whitened over every rank's advantages (TRL gathers them across processes).
      POSTTRAIN_ASSIGN_OR_RETURN(const at::Tensor all, collectives_->Gather(advantages));
      advantages = (advantages - all.mean()) / (all.std() + 1e-4);
    }
    RlooLossResult r = RlooLoss(logps, old_logps, advantages, rb.mask, epsilon_, epsilon_high_);
    out.loss = r.loss;
    AddRewardMetrics(*table, &out.metrics);
    out.metrics["clip_ratio"] = r.clip_ratio;
    rb.AddMetrics(&out.metrics);
    return out;
  }

 private:
  CausalLM* policy_ = nullptr;
  const Collectives* collectives_ = nullptr;
  const CausalLM* reference_ = nullptr;
  std::int64_t num_generations_ = 2, num_iterations_ = 1;
  double beta_ = 0.05, epsilon_ = 0.2, epsilon_high_ = 0.2, temperature_ = 1.0;
  bool normalize_ = false, mask_truncated_ = false;
  PerGenerationCache sampling_, sequence_kl_;  // per generated batch
};

}  // namespace
}  // namespace posttrain

POSTTRAIN_REGISTER_TRAINER("rloo", posttrain::RlooTrainer);
POSTTRAIN_PLUGIN("posttrain_trainer_rloo");

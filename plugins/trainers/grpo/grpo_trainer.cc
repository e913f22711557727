// Trainer "grpo": Group Relative Policy Optimization (Shao et al. 2024; TRL's
// GRPOTrainer). Each step the engine samples num_generations completions per
// prompt with the [sampler] and scores them with the [[rewards]]; this trainer
// turns them into group-relative advantages and the clipped surrogate loss with an
// optional k3 KL penalty to the reference (posttrain/losses/policy_gradient.h).
//
// The old log-probs are the sampling policy's: at the first step on a batch the
// weights are the sampling weights, so they are this step's log-probs, detached
// (the importance ratio is exactly 1; the sampler skips its own log-prob pass);
// with num_iterations > 1 the engine reuses the batch for that many steps and the
// ratio measures how far the policy moved since sampling. `temperature` must equal
// the sampler's (the engine checks).
// Metrics (TRL): reward, reward_std, rewards/<name>/mean, rewards/<name>/std, kl,
// clip_ratio/low_mean, clip_ratio/high_mean, completions/mean_length,
// completions/clipped_ratio, frac_reward_zero_std, entropy (mean over completion
// tokens of the policy distribution's entropy, from the log-prob pass).
#include <c10/core/GradMode.h>
#include <cmath>

#include "posttrain/generation/logprobs.h"
#include "posttrain/losses/policy_gradient.h"
#include "posttrain/model/causal_lm.h"
#include "posttrain/plugin/plugin.h"
#include "posttrain/run/reward_pipeline.h"
#include "posttrain/train/rollout_batch.h"

namespace posttrain {
namespace {

class GrpoTrainer final : public Trainer {
 public:
  static ComponentSchema Schema() {
    return ComponentSchema("Group Relative Policy Optimization on sampled completions scored by reward functions.")
        .Float("learning_rate", 1e-6, "Peak learning rate (TRL GRPOConfig default).").AtLeast(0)
        .Int("num_generations", 8, "Completions per prompt (the group).").AtLeast(2)
        .Float("beta", 0.0, "Weight of the k3 KL penalty to the reference model (0: no reference).").AtLeast(0)
        .Float("epsilon", 0.2, "Lower clip range ε.").AtLeast(0)
        .Float("epsilon_high", -1.0, "Upper clip range (DAPO's ε_high); -1: same as epsilon.").AtLeast(0).OrEqualTo(-1)
        .String("loss_type", "dapo", "Aggregation of the per-token losses.", GrpoLossTypes())
        .String("scale_rewards", "group", "Divide advantages by the group's or the batch's std, or not.",
                ScaleRewardsModes())
        .Int("num_iterations", 1, "Optimisation steps on each generated batch (μ in the GRPO paper).").AtLeast(1)
        .Bool("mask_truncated_completions", false, "Exclude completions that hit max_completion_length from the loss.")
        .Float("temperature", 1.0, "Sampling temperature; must match the sampler's.").GreaterThan(0)
        .Int("max_completion_length", 256, "For dr_grpo's normaliser; match the sampler's.").AtLeast(1);
  }
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const ComponentConfig& config) {
    auto t = std::make_unique<GrpoTrainer>();
    t->num_generations_ = config.GetInt("num_generations");
    t->num_iterations_ = config.GetInt("num_iterations");
    if (t->num_iterations_ < 1) return config.Error("num_iterations", "must be >= 1");
    t->options_.beta = config.GetFloat("beta");
    t->options_.epsilon = config.GetFloat("epsilon");
    const double high = config.GetFloat("epsilon_high");
    t->options_.epsilon_high = high < 0 ? t->options_.epsilon : high;
    t->options_.loss_type = config.GetString("loss_type");
    t->options_.max_completion_length = config.GetInt("max_completion_length");
    t->scale_rewards_ = config.GetString("scale_rewards");
    t->mask_truncated_ = config.GetBool("mask_truncated_completions");
    t->temperature_ = config.GetFloat("temperature");
    if (t->num_generations_ < 2) return config.Error("num_generations", "must be >= 2 (advantages are group-relative)");
    if (t->temperature_ <= 0) return config.Error("temperature", "must be > 0");
    return t;
  }

  TrainerNeeds Needs() const override { return TrainerNeeds::Online(options_.beta != 0.0, num_generations_, num_iterations_); }
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
    reference_logps_.AppendState("reference_logps", &state);
    return state;
  }
  absl::Status LoadState(const std::map<std::string, at::Tensor>& state) override {
    sampling_.LoadState("sampling", state);
    reference_logps_.LoadState("reference_logps", state);
    return absl::OkStatus();
  }

  absl::StatusOr<StepOutput> Step(const StepInput& input) override {
    POSTTRAIN_ASSIGN_OR_RETURN(RolloutBatch rb, MakeRolloutBatch(input.rollouts, policy_->device(), "grpo", mask_truncated_));
    const auto n = static_cast<std::int64_t>(input.rollouts.size());
    // Forward passes first: the rewards are still being scored meanwhile.
    at::Tensor entropy;  // TRL's "entropy": from the same chunked pass as the log-probs
    at::Tensor logps = CompletionLogprobs(*policy_, rb.sequences, temperature_, &entropy);
    at::Tensor ref_logps;
    if (options_.beta != 0.0) {
      ref_logps = reference_logps_.Get(input, [&] {
        c10::NoGradGuard no_grad;
        return CompletionLogprobs(*reference_, rb.sequences, temperature_);
      });
    }
    POSTTRAIN_ASSIGN_OR_RETURN(const RewardTable* rewards, input.rewards.Wait());
    // Advantages over every rank's rewards (TRL gathers them across processes:
    // scale_rewards = "batch" is the std of the global batch), then this rank's rows.
    std::int64_t offset = 0;
    POSTTRAIN_ASSIGN_OR_RETURN(const at::Tensor all_rewards, collectives_->Gather(at::tensor(rewards->total, logps.options().dtype(at::kFloat)), &offset));
    POSTTRAIN_ASSIGN_OR_RETURN(at::Tensor advantages, GroupAdvantages(all_rewards, num_generations_, scale_rewards_));
    advantages = advantages.narrow(0, offset, n);
    GrpoLossOptions options = options_;
    if (options.loss_type == "dapo" && !input.generation.empty()) {
      // DAPO normalises by the generation's completion tokens over all ranks, per
      // micro-batch and rank (the engine averages gradients over ranks).
      const auto local = static_cast<double>(GenerationCompletionTokens(input.generation, mask_truncated_));
      POSTTRAIN_ASSIGN_OR_RETURN(const double global, collectives_->Sum(local));
      options.dapo_normalizer = std::max(1.0, global) / static_cast<double>(input.generation.size() * collectives_->world_size());
    }
    POSTTRAIN_ASSIGN_OR_RETURN(GrpoLossResult r, GrpoLoss(logps, sampling_.Get(input, [&] { return logps.detach(); }), ref_logps, advantages, rb.mask, options));
    StepOutput out;
    out.loss = r.loss;
    AddRewardMetrics(*rewards, &out.metrics);
    out.metrics["entropy"] = ((entropy * rb.mask).sum() / rb.mask.sum().clamp_min(1)).item<double>();
    at::Tensor grouped = at::tensor(rewards->total, logps.options().dtype(at::kFloat)).view({n / num_generations_, num_generations_});
    out.metrics["frac_reward_zero_std"] = (grouped.std(1) < 1e-6).to(at::kFloat).mean().item<double>();
    if (options_.beta != 0.0) out.metrics["kl"] = r.mean_kl;
    out.metrics["clip_ratio/low_mean"] = r.clip_ratio_low;
    out.metrics["clip_ratio/high_mean"] = r.clip_ratio_high;
    rb.AddMetrics(&out.metrics);
    return out;
  }

 private:
  CausalLM* policy_ = nullptr;
  const CausalLM* reference_ = nullptr;
  const Collectives* collectives_ = nullptr;
  std::int64_t num_generations_ = 8;
  std::int64_t num_iterations_ = 1;
  GrpoLossOptions options_;
  PerGenerationCache sampling_, reference_logps_;  // per generated batch
  std::string scale_rewards_ = "group";
  bool mask_truncated_ = false;
  double temperature_ = 1.0;
};

}  // namespace
}  // namespace posttrain

POSTTRAIN_REGISTER_TRAINER("grpo", posttrain::GrpoTrainer);
POSTTRAIN_PLUGIN("posttrain_trainer_grpo");

// Trainer "grpo": Group Relative Policy Optimization (Shao et al. 2024; TRL's
// GRPOTrainer). Each step the engine samples num_generations completions per
// prompt with the [sampler] and scores them with the [[rewards]]; this trainer
// turns them into group-relative advantages and the clipped surrogate loss with an
// optional k3 KL penalty to the reference (posttrain/losses/policy_gradient.h).
//
// The old log-probs are the ones the sampler returned: computed by the same
// teacher-forced function (CompletionLogprobs) on the same weights, so the
// importance ratio is exactly 1 at the first (and, here, only) iteration per batch.
// `temperature` must equal the sampler's.
// Metrics (TRL): reward, reward_std, rewards/<name>/mean, rewards/<name>/std, kl,
// clip_ratio/low_mean, clip_ratio/high_mean, completions/mean_length,
// completions/clipped_ratio, frac_reward_zero_std.
#include <cmath>

#include "posttrain/generation/logprobs.h"
#include "posttrain/losses/policy_gradient.h"
#include "posttrain/model/causal_lm.h"
#include "posttrain/plugin/plugin.h"
#include "posttrain/run/reward_pipeline.h"

namespace posttrain {
namespace {

class GrpoTrainer final : public Trainer {
 public:
  static ComponentSchema Schema() {
    return ComponentSchema("Group Relative Policy Optimization on sampled completions scored by reward functions.")
        .Float("learning_rate", 1e-6, "Peak learning rate (TRL GRPOConfig default).")
        .Int("num_generations", 8, "Completions per prompt (the group).")
        .Float("beta", 0.0, "Weight of the k3 KL penalty to the reference model (0: no reference).")
        .Float("epsilon", 0.2, "Lower clip range ε.")
        .Float("epsilon_high", -1.0, "Upper clip range (DAPO's ε_high); -1: same as epsilon.")
        .String("loss_type", "dapo", "Aggregation of the per-token losses.", GrpoLossTypes())
        .String("scale_rewards", "group", "Divide advantages by the group's or the batch's std, or not.",
                ScaleRewardsModes())
        .Bool("mask_truncated_completions", false, "Exclude completions that hit max_completion_length from the loss.")
        .Float("temperature", 1.0, "Sampling temperature; must match the sampler's.")
        .Int("max_completion_length", 256, "For dr_grpo's normaliser; match the sampler's.");
  }
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const ComponentConfig& config) {
    auto t = std::make_unique<GrpoTrainer>();
    t->num_generations_ = config.GetInt("num_generations");
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

  TrainerNeeds Needs() const override {
    TrainerNeeds needs;
    needs.reference = options_.beta != 0.0;
    needs.rollouts = true;
    needs.rewards = true;
    needs.num_generations = num_generations_;
    return needs;
  }
  absl::Status Setup(const TrainerContext& context) override {
    policy_ = context.policy;
    reference_ = context.reference;
    return absl::OkStatus();
  }

  absl::StatusOr<StepOutput> Step(const StepInput& input) override {
    if (input.rewards == nullptr || input.rollouts.empty()) return absl::InternalError("grpo got no rollouts");
    const auto n = static_cast<std::int64_t>(input.rollouts.size());
    std::vector<std::vector<std::int64_t>> prompts, completions;
    for (const Rollout& r : input.rollouts) {
      if (r.prompt_ids.empty()) {
        return absl::FailedPreconditionError("grpo needs a generating sampler (type = \"default\")");
      }
      prompts.push_back(r.prompt_ids);
      completions.push_back(r.token_ids);
    }
    CompletionBatch cb = MakeCompletionBatch(prompts, completions);
    const std::int64_t c = cb.completion_mask.size(1);
    at::Tensor mask = cb.completion_mask.clone();
    at::Tensor old_logps = at::zeros({n, c}, at::kFloat);
    std::int64_t truncated = 0, total_length = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      const Rollout& r = input.rollouts[static_cast<size_t>(i)];
      for (size_t t = 0; t < r.logprobs.size(); ++t) old_logps[i][static_cast<std::int64_t>(t)] = r.logprobs[t];
      total_length += static_cast<std::int64_t>(r.token_ids.size());
      if (r.finish_reason == FinishReason::kLength) {
        ++truncated;
        if (mask_truncated_) mask[i].zero_();
      }
    }
    POSTTRAIN_ASSIGN_OR_RETURN(at::Tensor advantages,
                               GroupAdvantages(at::tensor(input.rewards->total), num_generations_, scale_rewards_));
    at::Tensor logps = CompletionLogprobs(*policy_, cb, temperature_);
    at::Tensor ref_logps;
    if (options_.beta != 0.0) {
      at::NoGradGuard no_grad;
      ref_logps = CompletionLogprobs(*reference_, cb, temperature_);
    }
    POSTTRAIN_ASSIGN_OR_RETURN(GrpoLossResult r, GrpoLoss(logps, old_logps, ref_logps, advantages, mask, options_));
    StepOutput out;
    out.loss = r.loss;
    AddRewardMetrics(*input.rewards, &out.metrics);
    at::Tensor grouped = at::tensor(input.rewards->total).view({n / num_generations_, num_generations_});
    out.metrics["frac_reward_zero_std"] = (grouped.std(1) < 1e-6).to(at::kFloat).mean().item<double>();
    if (options_.beta != 0.0) out.metrics["kl"] = r.mean_kl;
    out.metrics["clip_ratio/low_mean"] = r.clip_ratio_low;
    out.metrics["clip_ratio/high_mean"] = r.clip_ratio_high;
    out.metrics["completions/mean_length"] = static_cast<double>(total_length) / static_cast<double>(n);
    out.metrics["completions/clipped_ratio"] = static_cast<double>(truncated) / static_cast<double>(n);
    return out;
  }

 private:
  CausalLM* policy_ = nullptr;
  const CausalLM* reference_ = nullptr;
  std::int64_t num_generations_ = 8;
  GrpoLossOptions options_;
  std::string scale_rewards_ = "group";
  bool mask_truncated_ = false;
  double temperature_ = 1.0;
};

}  // namespace
}  // namespace posttrain

POSTTRAIN_REGISTER_TRAINER("grpo", posttrain::GrpoTrainer);
POSTTRAIN_PLUGIN("posttrain_trainer_grpo");

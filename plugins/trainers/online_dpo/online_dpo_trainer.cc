// Trainer "online_dpo": Online DPO (Guo et al. 2024, "Direct Language Model
// Alignment from Online AI Feedback"; TRL's OnlineDPOTrainer).
//
// Each step the engine samples two completions per prompt from the current policy
// and scores them with the recipe's [[rewards]] (a reward model, a program, any
// reward function: the judge); the better one (the first on a tie) is "chosen",
// after subtracting missing_eos_penalty from completions that end without EOS. The
// pair then takes a DPO step (loss_type sigmoid or ipo, β) against the reference,
// on summed completion log-probs at the sampling temperature.
// Metrics (TRL): objective/kl, objective/entropy, objective/non_score_reward,
// objective/rlhf_reward, objective/scores, objective/scores_margin, rewards/chosen,
// rewards/rejected, rewards/accuracies, rewards/margins, logps/chosen,
// logps/rejected, val/contain_eos_token, beta, plus reward metrics.
#include <c10/core/GradMode.h>

#include "posttrain/generation/logprobs.h"
#include "posttrain/losses/preference_losses.h"
#include "posttrain/model/causal_lm.h"
#include "posttrain/plugin/plugin.h"
#include "posttrain/run/reward_pipeline.h"
#include "posttrain/train/rollout_batch.h"

namespace posttrain {
namespace {

class OnlineDpoTrainer final : public Trainer {
 public:
  static ComponentSchema Schema() {
    return ComponentSchema("Online DPO: pairs sampled from the policy, preferred by the reward functions.")
        .Float("learning_rate", 5e-7, "Peak learning rate (TRL OnlineDPOConfig default).").AtLeast(0)
        .Bool("disable_dropout", true, "Train without the model's dropout (TRL's default for this trainer).")
        .Float("beta", 0.1, "DPO β.").GreaterThan(0)
        .String("loss_type", "sigmoid", "DPO loss on each sampled pair.", {"sigmoid", "ipo"})
        .Float("missing_eos_penalty", 0.0, "Subtracted from the score of a completion that ends without EOS.").AtLeast(0)
        .Float("temperature", 0.9, "Sampling temperature; must match the sampler's.").GreaterThan(0);
  }
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const ComponentConfig& config) {
    auto t = std::make_unique<OnlineDpoTrainer>();
    t->beta_ = config.GetFloat("beta");
    t->loss_type_ = config.GetString("loss_type");
    t->missing_eos_penalty_ = config.GetFloat("missing_eos_penalty");
    t->temperature_ = config.GetFloat("temperature");
    if (t->beta_ <= 0) return config.Error("beta", "must be > 0");
    if (t->temperature_ <= 0) return config.Error("temperature", "must be > 0");
    return t;
  }

  TrainerNeeds Needs() const override { return TrainerNeeds::Online(/*reference=*/true, /*num_generations=*/2); }
  absl::Status Setup(const TrainerContext& context) override {
    policy_ = context.policy;
    reference_ = context.reference;
    return absl::OkStatus();
  }

  absl::StatusOr<StepOutput> Step(const StepInput& input) override {
    POSTTRAIN_ASSIGN_OR_RETURN(RolloutBatch rb, MakeRolloutBatch(input.rollouts, policy_->device(), "online_dpo"));
    const auto n = static_cast<std::int64_t>(input.rollouts.size()) / 2;
    // Forward passes first: the rewards are still being scored meanwhile.
    const at::Tensor logps = (CompletionLogprobs(*policy_, rb.sequences, temperature_) * rb.mask).sum(1);  // [2n]
    at::Tensor ref_logps;
    {
      c10::NoGradGuard no_grad;
      ref_logps = (CompletionLogprobs(*reference_, rb.sequences, temperature_) * rb.mask).sum(1);
    }
    POSTTRAIN_ASSIGN_OR_RETURN(const RewardTable* table, input.rewards.Wait());
    const at::Tensor scores = PenalizedScores(*table, input.rollouts, missing_eos_penalty_, logps.options());
    // Rollouts come grouped by prompt: rows 2i and 2i + 1 are prompt i's pair.
    const at::Tensor pairs = scores.view({n, 2});
    const at::Tensor first_wins = pairs.select(1, 0) >= pairs.select(1, 1);
    const at::Tensor base = at::arange(n, scores.options().dtype(at::kLong)) * 2;
    const at::Tensor chosen_rows = at::where(first_wins, base, base + 1);
    const at::Tensor rejected_rows = at::where(first_wins, base + 1, base);
    POSTTRAIN_ASSIGN_OR_RETURN(
        DpoLossResult r, DpoLoss(loss_type_, logps.index_select(0, chosen_rows), logps.index_select(0, rejected_rows),
                                 ref_logps.index_select(0, chosen_rows), ref_logps.index_select(0, rejected_rows), beta_,
                                 /*label_smoothing=*/0.0, nullptr));
    StepOutput out;
    out.loss = r.losses.mean();
    AddRewardMetrics(*table, &out.metrics);
    rb.AddMetrics(&out.metrics);
    c10::NoGradGuard no_grad;
    const at::Tensor detached = logps.detach();
    AddPreferenceMetrics(r.chosen_rewards, r.rejected_rewards, detached.index_select(0, chosen_rows),
                         detached.index_select(0, rejected_rows), &out.metrics);
    const at::Tensor kl = (detached - ref_logps);
    out.metrics["objective/kl"] = kl.mean().item<double>();
    out.metrics["objective/entropy"] = -detached.mean().item<double>();
    out.metrics["objective/non_score_reward"] = (-beta_ * kl).mean().item<double>();
    out.metrics["objective/rlhf_reward"] = (scores - beta_ * kl).mean().item<double>();
    out.metrics["objective/scores"] = scores.mean().item<double>();
    out.metrics["objective/scores_margin"] =
        (scores.index_select(0, chosen_rows) - scores.index_select(0, rejected_rows)).mean().item<double>();
    out.metrics["val/contain_eos_token"] = 1.0 - rb.truncated.to(at::kFloat).mean().item<double>();
    out.metrics["beta"] = beta_;
    return out;
  }

 private:
  CausalLM* policy_ = nullptr;
  const CausalLM* reference_ = nullptr;
  double beta_ = 0.1, missing_eos_penalty_ = 0.0, temperature_ = 0.9;
  std::string loss_type_ = "sigmoid";
};

}  // namespace
}  // namespace posttrain

POSTTRAIN_REGISTER_TRAINER("online_dpo", posttrain::OnlineDpoTrainer);
POSTTRAIN_PLUGIN("posttrain_trainer_online_dpo");

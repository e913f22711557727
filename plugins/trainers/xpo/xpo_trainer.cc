// Trainer "xpo": Exploratory Preference Optimization (Xie et al. 2024; TRL's
// XPOTrainer).
//
// Each step the engine samples, per prompt, one completion y from the policy and one
// y_ref from the reference, and scores both with the recipe's [[rewards]]
// (missing_eos_penalty subtracted from a completion without EOS); the better one (y
// on a tie) is chosen. The loss (losses/preference_losses.h: XpoLoss) is online DPO
// on that pair plus the exploration bonus α · log π(y_ref), on summed completion
// log-probs at temperature 1, as TRL computes them.
// Metrics (TRL): loss/dpo, loss/xpo, objective/model_scores, objective/ref_scores,
// objective/scores_margin, objective/kl, objective/entropy, logps/chosen,
// logps/rejected, rewards/chosen, rewards/rejected, rewards/margins,
// rewards/accuracies, val/model_contain_eos_token, val/ref_contain_eos_token, alpha,
// beta, plus the reward metrics (over both completions).
#include <c10/core/GradMode.h>

#include "posttrain/generation/logprobs.h"
#include "posttrain/losses/preference_losses.h"
#include "posttrain/model/causal_lm.h"
#include "posttrain/plugin/plugin.h"
#include "posttrain/run/reward_pipeline.h"
#include "posttrain/train/rollout_batch.h"

namespace posttrain {
namespace {

class XpoTrainer final : public Trainer {
 public:
  static ComponentSchema Schema() {
    return ComponentSchema("XPO: online DPO of the policy's completions against the reference's, plus exploration.")
        .Float("learning_rate", 5e-7, "Peak learning rate (TRL XPOConfig default).").AtLeast(0)
        .Bool("disable_dropout", true, "Train without the model's dropout (TRL's default for this trainer).")
        .Float("beta", 0.1, "DPO β.").GreaterThan(0)
        .Float("alpha", 1e-5, "Weight α of the exploration term α · log π(y_ref).").AtLeast(0)
        .String("loss_type", "sigmoid", "DPO loss on each pair.", {"sigmoid", "ipo"})
        .Float("missing_eos_penalty", 0.0, "Subtracted from the score of a completion that ends without EOS.").AtLeast(0);
  }
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const ComponentConfig& config) {
    auto t = std::make_unique<XpoTrainer>();
    t->beta_ = config.GetFloat("beta");
    t->alpha_ = config.GetFloat("alpha");
    t->loss_type_ = config.GetString("loss_type");
    t->missing_eos_penalty_ = config.GetFloat("missing_eos_penalty");
    return t;
  }

  TrainerNeeds Needs() const override {
    TrainerNeeds needs = TrainerNeeds::Online(/*reference=*/true, /*num_generations=*/2);
    RolloutSource reference;
    reference.model = RolloutSource::Model::kReference;
    needs.rollout_sources = {RolloutSource(), reference};
    return needs;
  }
  absl::Status Setup(const TrainerContext& context) override {
    policy_ = context.policy;
    reference_ = context.reference;
    return absl::OkStatus();
  }

  absl::StatusOr<StepOutput> Step(const StepInput& input) override {
    // Rollouts come grouped by prompt: 2i is the policy's, 2i + 1 the reference's.
    POSTTRAIN_ASSIGN_OR_RETURN(RolloutBatch rb, MakeRolloutBatch(input.rollouts, policy_->device(), "xpo"));
    const auto n = static_cast<std::int64_t>(input.rollouts.size()) / 2;
    // Forward passes first: the rewards are still being scored meanwhile.
    const at::Tensor logps = (CompletionLogprobs(*policy_, rb.sequences, 1.0) * rb.mask).sum(1).view({n, 2});
    at::Tensor ref_logps;
    {
      c10::NoGradGuard no_grad;
      ref_logps = (CompletionLogprobs(*reference_, rb.sequences, 1.0) * rb.mask).sum(1).view({n, 2});
    }
    POSTTRAIN_ASSIGN_OR_RETURN(const RewardTable* table, input.rewards.Wait());
    const at::Tensor no_eos = rb.truncated.to(at::kFloat).view({n, 2});
    const at::Tensor scores = PenalizedScores(*table, input.rollouts, missing_eos_penalty_, logps.options()).view({n, 2});
    const at::Tensor model_scores = scores.select(1, 0), ref_scores = scores.select(1, 1);
    const at::Tensor model_chosen = model_scores >= ref_scores;
    POSTTRAIN_ASSIGN_OR_RETURN(XpoLossResult r, XpoLoss(loss_type_, logps.select(1, 0), logps.select(1, 1), ref_logps.select(1, 0),
                                                        ref_logps.select(1, 1), model_chosen, beta_, alpha_));
    StepOutput out;
    out.loss = r.losses.mean();
    AddRewardMetrics(*table, &out.metrics);
    rb.AddMetrics(&out.metrics);
    c10::NoGradGuard no_grad;
    const at::Tensor lp = logps.detach();
    const at::Tensor chosen_logps = at::where(model_chosen, lp.select(1, 0), lp.select(1, 1));
    const at::Tensor rejected_logps = at::where(model_chosen, lp.select(1, 1), lp.select(1, 0));
    AddPreferenceMetrics(r.chosen_rewards, r.rejected_rewards, chosen_logps, rejected_logps, &out.metrics);
    out.metrics["loss/dpo"] = r.dpo_losses.mean().item<double>();
    out.metrics["loss/xpo"] = r.xpo_losses.mean().item<double>();
    out.metrics["objective/model_scores"] = model_scores.mean().item<double>();
    out.metrics["objective/ref_scores"] = ref_scores.mean().item<double>();
    out.metrics["objective/scores_margin"] = (model_scores - ref_scores).mean().item<double>();
    out.metrics["objective/kl"] = (lp.select(1, 0) - ref_logps.select(1, 0)).mean().item<double>();
    out.metrics["objective/entropy"] = -lp.select(1, 0).mean().item<double>();
    out.metrics["val/model_contain_eos_token"] = 1.0 - no_eos.select(1, 0).mean().item<double>();
    out.metrics["val/ref_contain_eos_token"] = 1.0 - no_eos.select(1, 1).mean().item<double>();
    out.metrics["alpha"] = alpha_;
    out.metrics["beta"] = beta_;
    return out;
  }

 private:
  CausalLM* policy_ = nullptr;
  const CausalLM* reference_ = nullptr;
  double beta_ = 0.1, alpha_ = 1e-5, missing_eos_penalty_ = 0.0;
  std::string loss_type_ = "sigmoid";
};

}  // namespace
}  // namespace posttrain

POSTTRAIN_REGISTER_TRAINER("xpo", posttrain::XpoTrainer);
POSTTRAIN_PLUGIN("posttrain_trainer_xpo");

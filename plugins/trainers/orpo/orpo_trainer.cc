// Trainer "orpo": Odds Ratio Preference Optimization (Hong et al. 2024; TRL's
// ORPOTrainer). Reference-free: loss = NLL(chosen) − β·logσ(log odds ratio) on
// length-averaged log-probs (posttrain/losses/preference_losses.h).
// Metrics (TRL): rewards/chosen, rewards/rejected, rewards/accuracies,
// rewards/margins, logps/chosen, logps/rejected, nll_loss, log_odds_ratio.
#include "posttrain/losses/preference_losses.h"
#include "posttrain/plugin/plugin.h"
#include "posttrain/train/pair_logps.h"

namespace posttrain {
namespace {

class OrpoTrainer final : public Trainer {
 public:
  static ComponentSchema Schema() {
    return ComponentSchema("Odds Ratio Preference Optimization: SFT on chosen plus an odds-ratio penalty; no reference model.")
        .Float("learning_rate", 1e-6, "Peak learning rate (TRL ORPOConfig default).").AtLeast(0)
        .Bool("disable_dropout", true, "Train without the model's dropout (TRL's default for this trainer).")
        .Float("beta", 0.1, "Weight λ of the odds-ratio term (TRL's beta).").AtLeast(0);
  }
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const ComponentConfig& config) {
    auto t = std::make_unique<OrpoTrainer>();
    t->beta_ = config.GetFloat("beta");
    if (t->beta_ <= 0) return config.Error("beta", "must be > 0");
    return t;
  }
  TrainerNeeds Needs() const override {
    TrainerNeeds needs;
    needs.router_aux_loss = true;
    return needs;
  }
  absl::Status Setup(const TrainerContext& context) override {
    policy_ = context.policy;
    return absl::OkStatus();
  }
  absl::StatusOr<StepOutput> Step(const StepInput& input) override {
    POSTTRAIN_RETURN_IF_ERROR(RequirePairs(input.tokens, "orpo"));
    PairLogps lp = ComputePairLogps(*policy_, input.tokens);
    DpoLossResult r = OrpoLoss(lp.chosen_average(), lp.rejected_average(), beta_);
    StepOutput out;
    out.loss = lp.chosen_nll + r.losses.mean();
    out.metrics["nll_loss"] = lp.chosen_nll.item<double>();
    out.metrics["log_odds_ratio"] = (-r.losses / beta_).mean().item<double>();
    AddPreferenceMetrics(r.chosen_rewards, r.rejected_rewards, lp.chosen_average(), lp.rejected_average(), &out.metrics);
    return out;
  }

 private:
  CausalLM* policy_ = nullptr;
  double beta_ = 0.1;
};

}  // namespace
}  // namespace posttrain

POSTTRAIN_REGISTER_TRAINER("orpo", posttrain::OrpoTrainer);
POSTTRAIN_PLUGIN("posttrain_trainer_orpo");

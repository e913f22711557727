// Trainer "cpo": Contrastive Preference Optimization (Xu et al. 2024) and, with
// loss_type = "simpo", SimPO (Meng et al. 2024); TRL's CPOTrainer. Reference-free:
// loss = mean preference loss + cpo_alpha · NLL(chosen). simpo and ipo use
// length-averaged log-probs, the others sums (posttrain/losses/preference_losses.h).
// For plain SimPO set cpo_alpha = 0.
// Metrics (TRL): rewards/chosen, rewards/rejected, rewards/accuracies,
// rewards/margins, logps/chosen, logps/rejected, nll_loss.
#include "posttrain/losses/preference_losses.h"
#include "posttrain/plugin/plugin.h"
#include "posttrain/train/pair_logps.h"

namespace posttrain {
namespace {

class CpoTrainer final : public Trainer {
 public:
  static ComponentSchema Schema() {
    return ComponentSchema("Contrastive Preference Optimization; loss_type = \"simpo\" gives SimPO. No reference model.")
        .Float("learning_rate", 1e-6, "Peak learning rate (TRL CPOConfig default).").AtLeast(0)
        .Bool("disable_dropout", true, "Train without the model's dropout (TRL's default for this trainer).")
        .Float("beta", 0.1, "Temperature β of the preference loss.").GreaterThan(0)
        .String("loss_type", "sigmoid", "The preference loss.", CpoLossTypes())
        .Float("label_smoothing", 0.0, "Label noise for the sigmoid and simpo losses.").AtLeast(0).LessThan(0.5)
        .Float("cpo_alpha", 1.0, "Weight of the NLL on chosen completions (0 for plain SimPO).").AtLeast(0)
        .Float("simpo_gamma", 0.5, "SimPO's target reward margin γ.");
  }
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const ComponentConfig& config) {
    auto t = std::make_unique<CpoTrainer>();
    t->beta_ = config.GetFloat("beta");
    t->loss_type_ = config.GetString("loss_type");
    t->label_smoothing_ = config.GetFloat("label_smoothing");
    t->alpha_ = config.GetFloat("cpo_alpha");
    t->gamma_ = config.GetFloat("simpo_gamma");
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
    POSTTRAIN_RETURN_IF_ERROR(RequirePairs(input.tokens, "cpo"));
    PairLogps lp = ComputePairLogps(*policy_, input.tokens);
    const bool average = loss_type_ == "simpo" || loss_type_ == "ipo";
    at::Tensor chosen = average ? lp.chosen_average() : lp.chosen;
    at::Tensor rejected = average ? lp.rejected_average() : lp.rejected;
    POSTTRAIN_ASSIGN_OR_RETURN(DpoLossResult r, CpoLoss(loss_type_, chosen, rejected, beta_, label_smoothing_, gamma_));
    StepOutput out;
    out.loss = r.losses.mean() + alpha_ * lp.chosen_nll;
    out.metrics["nll_loss"] = lp.chosen_nll.item<double>();
    AddPreferenceMetrics(r.chosen_rewards, r.rejected_rewards, chosen, rejected, &out.metrics);
    return out;
  }

 private:
  CausalLM* policy_ = nullptr;
  double beta_ = 0.1, label_smoothing_ = 0.0, alpha_ = 1.0, gamma_ = 0.5;
  std::string loss_type_ = "sigmoid";
};

}  // namespace
}  // namespace posttrain

POSTTRAIN_REGISTER_TRAINER("cpo", posttrain::CpoTrainer);
POSTTRAIN_PLUGIN("posttrain_trainer_cpo");

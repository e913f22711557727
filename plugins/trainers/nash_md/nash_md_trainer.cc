// Trainer "nash_md": Nash Mirror Descent (Munos et al. 2024, "Nash Learning from
// Human Feedback"; TRL's NashMDTrainer).
//
// Each step the engine samples, per prompt, one completion y from the policy and one
// y' from the geometric mixture of policy and reference (tokens drawn from
// softmax((1 − c)·z_π + c·z_ref), c = mixture_coef; generation/generate.h) and
// scores both with the recipe's [[rewards]] (missing_eos_penalty subtracted from a
// completion that ends without EOS). P(y ≻ y') = σ(r(y) − r(y')), and the policy
// takes the REINFORCE step of losses/preference_losses.h: NashMdLoss
//   loss = β · Σ_t sg(log π − log π_ref)(y_t) · log π(y_t) − (P − ½) · log π(y)
// on log-probs at temperature 1, as TRL computes them.
// Metrics (TRL): loss/score, loss/kl, logps/chosen (log π(y)), logps/rejected
// (log π_ref(y)), rewards/chosen, rewards/rejected (the scores of y and y'),
// rewards/probabilities, rewards/margins, rewards/accuracies (log π(y) > log π_ref(y)),
// objective/entropy, val/model_contain_eos_token, val/ref_contain_eos_token, beta,
// mixture_coef (when one value is given), plus the reward metrics (over both completions).
#include <c10/core/GradMode.h>

#include "posttrain/generation/logprobs.h"
#include "posttrain/losses/preference_losses.h"
#include "posttrain/model/causal_lm.h"
#include "posttrain/plugin/plugin.h"
#include "posttrain/run/reward_pipeline.h"
#include "posttrain/train/rollout_batch.h"

namespace posttrain {
namespace {

class NashMdTrainer final : public Trainer {
 public:
  static ComponentSchema Schema() {
    return ComponentSchema("Nash-MD: the policy's completions against the policy–reference geometric mixture's.")
        .Float("learning_rate", 5e-7, "Peak learning rate (TRL NashMDConfig default).").AtLeast(0)
        .Bool("disable_dropout", true, "Train without the model's dropout (TRL's default for this trainer).")
        .Float("beta", 0.1, "Weight of the KL term.").GreaterThan(0)
        .FloatList("mixture_coef", {0.5},
                   "Weight of the reference in the geometric mixture: a number, or one per epoch (the last for later epochs).")
        .AtLeast(0).AtMost(1)
        .Float("missing_eos_penalty", 0.0, "Subtracted from the score of a completion that ends without EOS.").AtLeast(0);
  }
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const ComponentConfig& config) {
    auto t = std::make_unique<NashMdTrainer>();
    t->beta_ = config.GetFloat("beta");
    t->mixture_coef_ = config.GetFloatList("mixture_coef");
    t->missing_eos_penalty_ = config.GetFloat("missing_eos_penalty");
    if (t->mixture_coef_.empty()) return config.Error("mixture_coef", "needs at least one value");
    return t;
  }

  TrainerNeeds Needs() const override {
    TrainerNeeds needs = TrainerNeeds::Online(/*reference=*/true, /*num_generations=*/2);
    RolloutSource mixture;
    mixture.model = RolloutSource::Model::kMixture;
    mixture.mixture_coef = mixture_coef_;
    needs.rollout_sources = {RolloutSource(), mixture};
    return needs;
  }
  absl::Status Setup(const TrainerContext& context) override {
    policy_ = context.policy;
    reference_ = context.reference;
    return absl::OkStatus();
  }

  absl::StatusOr<StepOutput> Step(const StepInput& input) override {
    // Rollouts come grouped by prompt: 2i is the policy's, 2i + 1 the mixture's.
    const auto n = static_cast<std::int64_t>(input.rollouts.size()) / 2;
    std::vector<Rollout> own;
    for (std::int64_t i = 0; i < n; ++i) own.push_back(input.rollouts[static_cast<size_t>(2 * i)]);
    POSTTRAIN_ASSIGN_OR_RETURN(RolloutBatch rb, MakeRolloutBatch(own, policy_->device(), "nash_md"));
    // Forward passes first: the rewards are still being scored meanwhile.
    const at::Tensor logps = CompletionLogprobs(*policy_, rb.sequences, 1.0) * rb.mask;  // [n, C]
    at::Tensor ref_logps;
    {
      c10::NoGradGuard no_grad;
      ref_logps = CompletionLogprobs(*reference_, rb.sequences, 1.0) * rb.mask;
    }
    POSTTRAIN_ASSIGN_OR_RETURN(const RewardTable* table, input.rewards.Wait());
    const at::Tensor scores = PenalizedScores(*table, input.rollouts, missing_eos_penalty_, logps.options()).view({n, 2});
    std::vector<float> ended_without_eos;
    for (const Rollout& r : input.rollouts) ended_without_eos.push_back(r.finish_reason == FinishReason::kLength ? 1.0f : 0.0f);
    const at::Tensor no_eos = at::tensor(ended_without_eos, logps.options().dtype(at::kFloat)).view({n, 2});
    const at::Tensor model_scores = scores.select(1, 0), mixture_scores = scores.select(1, 1);
    const at::Tensor probability = at::sigmoid(model_scores - mixture_scores);
    NashMdLossResult r = NashMdLoss(logps, ref_logps, probability, beta_);

    StepOutput out;
    out.loss = r.losses.mean();
    AddRewardMetrics(*table, &out.metrics);
    rb.AddMetrics(&out.metrics);
    c10::NoGradGuard no_grad;
    const at::Tensor sequence_logps = logps.detach().sum(1), ref_sequence_logps = ref_logps.sum(1);
    const at::Tensor margin = sequence_logps - ref_sequence_logps;
    out.metrics["loss/score"] = r.score.mean().item<double>();
    out.metrics["loss/kl"] = r.kl.mean().item<double>();
    out.metrics["logps/chosen"] = sequence_logps.mean().item<double>();
    out.metrics["logps/rejected"] = ref_sequence_logps.mean().item<double>();
    out.metrics["rewards/chosen"] = model_scores.mean().item<double>();
    out.metrics["rewards/rejected"] = mixture_scores.mean().item<double>();
    out.metrics["rewards/probabilities"] = probability.mean().item<double>();
    out.metrics["rewards/margins"] = margin.mean().item<double>();
    out.metrics["rewards/accuracies"] = (margin > 0).to(at::kFloat).mean().item<double>();
    out.metrics["objective/entropy"] = -sequence_logps.mean().item<double>();
    out.metrics["val/model_contain_eos_token"] = 1.0 - no_eos.select(1, 0).mean().item<double>();
    out.metrics["val/ref_contain_eos_token"] = 1.0 - no_eos.select(1, 1).mean().item<double>();
    out.metrics["beta"] = beta_;
    if (mixture_coef_.size() == 1) out.metrics["mixture_coef"] = mixture_coef_[0];
    return out;
  }

 private:
  CausalLM* policy_ = nullptr;
  const CausalLM* reference_ = nullptr;
  double beta_ = 0.1, missing_eos_penalty_ = 0.0;
  std::vector<double> mixture_coef_{0.5};
};

}  // namespace
}  // namespace posttrain

POSTTRAIN_REGISTER_TRAINER("nash_md", posttrain::NashMdTrainer);
POSTTRAIN_PLUGIN("posttrain_trainer_nash_md");

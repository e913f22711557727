// Trainer "dpo": Direct Preference Optimization and its loss variants (TRL's
// DPOTrainer; the maths in posttrain/losses/preference_losses.h).
//
// Chosen and rejected completions go through the policy in one batch of 2B rows
// (TRL's concatenated_forward); sequence log-probs are sums over completion tokens
// (averages for ipo). The reference is a frozen copy of the initial policy, the
// model at `ref_model`, or none (reference_free). precompute_ref_log_probs
// computes the reference log-probs of every training pair once, before training.
// Metrics (TRL): rewards/chosen, rewards/rejected, rewards/accuracies,
// rewards/margins, logps/chosen, logps/rejected.
#include <c10/core/GradMode.h>

#include "posttrain/losses/preference_losses.h"
#include "posttrain/model/causal_lm.h"
#include "posttrain/plugin/plugin.h"
#include "posttrain/train/pair_logps.h"

namespace posttrain {
namespace {

class DpoTrainer final : public Trainer {
 public:
  static ComponentSchema Schema() {
    return ComponentSchema("Direct Preference Optimization (sigmoid, ipo, hinge, robust, bco_pair, "
                           "sppo_hard, nca_pair, apo_zero, apo_down).")
        .Float("learning_rate", 1e-6, "Peak learning rate (TRL DPOConfig default).").AtLeast(0)
        .Bool("disable_dropout", true, "Train without the model's dropout (TRL's default for this trainer).")
        .Float("beta", 0.1, "Temperature of the implicit reward β (KL strength).").GreaterThan(0)
        .String("loss_type", "sigmoid", "The DPO loss.", DpoLossTypes())
        .Float("label_smoothing", 0.0, "Label noise ε for sigmoid (cDPO) and robust.").AtLeast(0).LessThan(0.5)
        .Bool("reference_free", false, "Use a uniform reference (log π_ref = 0).")
        .Bool("precompute_ref_log_probs", false, "Compute reference log-probs of the training pairs once, up front.");
  }
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const ComponentConfig& config) {
    auto t = std::make_unique<DpoTrainer>();
    t->beta_ = config.GetFloat("beta");
    t->loss_type_ = config.GetString("loss_type");
    t->label_smoothing_ = config.GetFloat("label_smoothing");
    t->reference_free_ = config.GetBool("reference_free");
    t->precompute_ = config.GetBool("precompute_ref_log_probs");
    if (t->beta_ <= 0) return config.Error("beta", "must be > 0");
    if (t->label_smoothing_ < 0 || t->label_smoothing_ >= 0.5) return config.Error("label_smoothing", "must be in [0, 0.5)");
    return t;
  }

  TrainerNeeds Needs() const override {
    TrainerNeeds needs;
    needs.reference = !reference_free_;
    needs.router_aux_loss = true;
    return needs;
  }
  absl::Status Setup(const TrainerContext& context) override {
    policy_ = context.policy;
    reference_ = context.reference;
    collectives_ = context.collectives;
    return absl::OkStatus();
  }

  absl::Status Prepare(absl::Span<const TokenizedExample> train, absl::Span<const TokenizedExample> eval) override {
    if (!precompute_ || reference_free_) return absl::OkStatus();
    c10::NoGradGuard no_grad;
    // Training and evaluation pairs both, so the reference can be freed after this.
    PrecomputeReference(train, &ref_train_);
    PrecomputeReference(eval, &ref_eval_);
    return absl::OkStatus();
  }
  bool ReleasesReference() const override { return precompute_ && !reference_free_; }

  std::vector<std::pair<std::string, at::Tensor>> State() const override {
    if (loss_type_ != "bco_pair") return {};
    return {{"bco_pair.running_moments", moments_.ToTensor()}};
  }
  absl::Status LoadState(const std::map<std::string, at::Tensor>& state) override {
    if (auto it = state.find("bco_pair.running_moments"); it != state.end()) moments_.FromTensor(it->second);
    return absl::OkStatus();
  }

  absl::StatusOr<StepOutput> Step(const StepInput& input) override {
    POSTTRAIN_RETURN_IF_ERROR(RequirePairs(input.tokens, "dpo"));
    std::vector<const TokenizedExample*> batch(input.tokens.begin(), input.tokens.end());
    auto [policy_chosen, policy_rejected] = SequenceLogps(*policy_, batch);
    at::Tensor ref_chosen, ref_rejected;
    if (reference_free_) {
      ref_chosen = at::zeros_like(policy_chosen);
      ref_rejected = at::zeros_like(policy_rejected);
    } else if (ReleasesReference()) {
      const Precomputed& ref = input.training ? ref_train_ : ref_eval_;
      std::vector<float> c, r;
      for (const TokenizedExample* t : batch) {
        c.push_back(ref.chosen[static_cast<size_t>(t->index)]);
        r.push_back(ref.rejected[static_cast<size_t>(t->index)]);
      }
      ref_chosen = at::tensor(c, policy_chosen.options().dtype(at::kFloat));
      ref_rejected = at::tensor(r, policy_chosen.options().dtype(at::kFloat));
    } else {
      c10::NoGradGuard no_grad;
      std::tie(ref_chosen, ref_rejected) = SequenceLogps(*reference_, batch);
    }
    POSTTRAIN_ASSIGN_OR_RETURN(
        DpoLossResult result,
        DpoLoss(loss_type_, policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta_, label_smoothing_,
                input.training ? &moments_ : nullptr, collectives_));
    StepOutput out;
    out.loss = result.losses.mean();
    AddPreferenceMetrics(result.chosen_rewards, result.rejected_rewards, policy_chosen, policy_rejected, &out.metrics);
    return out;
  }

 private:
  // Reference log-probs per example index, computed once (precompute_ref_log_probs).
  struct Precomputed {
    std::vector<float> chosen, rejected;
  };
  void PrecomputeReference(absl::Span<const TokenizedExample> examples, Precomputed* out) const {
    out->chosen.assign(examples.size(), 0.0f);
    out->rejected.assign(examples.size(), 0.0f);
    constexpr size_t kBatch = 8;
    for (size_t start = 0; start < examples.size(); start += kBatch) {
      std::vector<const TokenizedExample*> batch;
      for (size_t i = start; i < std::min(examples.size(), start + kBatch); ++i) batch.push_back(&examples[i]);
      auto [chosen, rejected] = SequenceLogps(*reference_, batch);
      for (size_t k = 0; k < batch.size(); ++k) {
        out->chosen[static_cast<size_t>(batch[k]->index)] = chosen[static_cast<std::int64_t>(k)].item<float>();
        out->rejected[static_cast<size_t>(batch[k]->index)] = rejected[static_cast<std::int64_t>(k)].item<float>();
      }
    }
  }

  // Summed (ipo: averaged) completion log-probs [B] of chosen and rejected.
  std::pair<at::Tensor, at::Tensor> SequenceLogps(const CausalLM& model, const std::vector<const TokenizedExample*>& batch) const {
    PairLogps lp = ComputePairLogps(model, batch);
    if (loss_type_ == "ipo") return {lp.chosen_average(), lp.rejected_average()};
    return {lp.chosen, lp.rejected};
  }

  CausalLM* policy_ = nullptr;
  const CausalLM* reference_ = nullptr;
  double beta_ = 0.1, label_smoothing_ = 0.0;
  std::string loss_type_ = "sigmoid";
  bool reference_free_ = false, precompute_ = false;
  Precomputed ref_train_, ref_eval_;
  RunningMoments moments_;
  const Collectives* collectives_ = nullptr;
};

}  // namespace
}  // namespace posttrain

POSTTRAIN_REGISTER_TRAINER("dpo", posttrain::DpoTrainer);
POSTTRAIN_PLUGIN("posttrain_trainer_dpo");

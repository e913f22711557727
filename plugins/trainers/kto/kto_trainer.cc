// Trainer "kto": Kahneman–Tversky Optimization (Ethayarajh et al. 2024; TRL's
// KTOTrainer). Works on unpaired preference data (prompt, completion, label); a
// paired dataset is unpaired on the fly (chosen → desirable, rejected →
// undesirable), as TRL's unpair_preference_dataset does.
//
// The KL reference point z is estimated per batch from mismatched pairs: prompt i
// with the completion of another example's row (TRL's shifted KL dataset; rows of
// one unpaired pair never meet, see KtoMismatchedRows):
//   z = max(0, mean(log π(y_j|x_i) − log π_ref(y_j|x_i))), no gradient; z = 0 for a
//   batch of a single example, which has no mismatched pair.
// Losses in posttrain/losses/preference_losses.h; weighted by desirable_weight /
// undesirable_weight and averaged over the batch.
// Metrics (TRL): rewards/chosen, rewards/rejected, rewards/margins, kl,
// logps/chosen, logps/rejected.
#include <c10/core/GradMode.h>

#include "absl/cleanup/cleanup.h"
#include "posttrain/generation/logprobs.h"
#include "posttrain/losses/preference_losses.h"
#include "posttrain/model/causal_lm.h"
#include "posttrain/plugin/plugin.h"
#include "posttrain/train/pair_logps.h"

namespace posttrain {
namespace {

class KtoTrainer final : public Trainer {
 public:
  static ComponentSchema Schema() {
    return ComponentSchema("Kahneman–Tversky Optimization on unpaired (or unpaired-on-the-fly) preference data.")
        .Float("learning_rate", 1e-6, "Peak learning rate.").AtLeast(0)
        .Bool("disable_dropout", true, "Train without the model's dropout (TRL's default for this trainer).")
        .Float("beta", 0.1, "Temperature β.").GreaterThan(0)
        .Float("desirable_weight", 1.0, "Weight of desirable examples' losses.").AtLeast(0)
        .Float("undesirable_weight", 1.0, "Weight of undesirable examples' losses.").AtLeast(0);
  }
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const ComponentConfig& config) {
    auto t = std::make_unique<KtoTrainer>();
    t->beta_ = config.GetFloat("beta");
    t->desirable_ = config.GetFloat("desirable_weight");
    t->undesirable_ = config.GetFloat("undesirable_weight");
    if (t->beta_ <= 0) return config.Error("beta", "must be > 0");
    return t;
  }
  TrainerNeeds Needs() const override {
    TrainerNeeds needs;
    needs.reference = true;
    needs.router_aux_loss = true;
    return needs;
  }
  absl::Status Setup(const TrainerContext& context) override {
    policy_ = context.policy;
    collectives_ = context.collectives;
    reference_ = context.reference;
    return absl::OkStatus();
  }

  absl::StatusOr<StepOutput> Step(const StepInput& input) override {
    POSTTRAIN_ASSIGN_OR_RETURN(UnpairedRows unpaired, UnpairRows(input.batch, input.tokens, "kto"));
    const std::vector<std::vector<std::int64_t>>& prompts = unpaired.prompts;
    const std::vector<std::vector<std::int64_t>>& completions = unpaired.completions;
    const std::vector<bool>& desirable = unpaired.desirable;
    const std::vector<std::int64_t>& example_of_row = unpaired.batch_position;
    const auto n = static_cast<std::int64_t>(completions.size());
    // Mismatched pairs for the KL estimate: prompt i with another example's completion.
    const std::vector<size_t> kl_rows = KtoMismatchedRows(example_of_row);

    const at::Tensor policy_logps = CompletionLogprobs(*policy_, MakeCompletionBatch(prompts, completions, policy_->device()), 1.0).sum(1);
    at::Tensor reference_logps, kl = at::zeros({}, policy_logps.options().dtype(at::kFloat));
    {
      c10::NoGradGuard no_grad;
      reference_logps = CompletionLogprobs(*reference_, MakeCompletionBatch(prompts, completions, policy_->device()), 1.0).sum(1);
      if (!kl_rows.empty()) {
        std::vector<std::vector<std::int64_t>> kl_completions;
        for (size_t row : kl_rows) kl_completions.push_back(completions[row]);
        CompletionBatch kl_batch = MakeCompletionBatch(prompts, kl_completions, policy_->device());
        // TRL's aux loss comes from the main forward only: an evaluation's router
        // recording (which runs without a graph) skips the KL pairs.
        const bool recording = policy_->records_router();
        if (recording) policy_->set_record_router(true, /*without_grad=*/false);
        const auto record_again = absl::MakeCleanup([&] {
          if (recording) policy_->set_record_router(true, /*without_grad=*/true);
        });
        kl = (CompletionLogprobs(*policy_, kl_batch, 1.0).sum(1) - CompletionLogprobs(*reference_, kl_batch, 1.0).sum(1)).sum();
      }
    }
    // z: the mean over every rank's mismatched pairs (TRL gathers them), ≥ 0.
    {
      POSTTRAIN_ASSIGN_OR_RETURN(const at::Tensor sums,
                                 collectives_->Sum(at::stack({kl.to(at::kDouble), at::scalar_tensor(static_cast<double>(kl_rows.size()), kl.options().dtype(at::kDouble))})));
      kl = sums[1].item<double>() > 0 ? (sums[0] / sums[1]).to(at::kFloat).clamp_min(0) : at::zeros({}, kl.options().dtype(at::kFloat));
    }
    std::vector<std::int64_t> chosen_idx, rejected_idx;
    for (std::int64_t i = 0; i < n; ++i) (desirable[static_cast<size_t>(i)] ? chosen_idx : rejected_idx).push_back(i);
    auto pick = [](const at::Tensor& t, const std::vector<std::int64_t>& idx) {
      return idx.empty() ? at::zeros({0}, t.options()) : t.index_select(0, at::tensor(idx, t.options().dtype(at::kLong)));
    };
    KtoLossResult r = KtoLoss(pick(policy_logps, chosen_idx), pick(reference_logps, chosen_idx),
                              pick(policy_logps, rejected_idx), pick(reference_logps, rejected_idx), kl, beta_,
                              desirable_, undesirable_);
    StepOutput out;
    out.loss = r.losses.mean();
    out.metrics["kl"] = kl.item<double>();
    if (!chosen_idx.empty()) {
      out.metrics["rewards/chosen"] = r.chosen_rewards.mean().item<double>();
      out.metrics["logps/chosen"] = pick(policy_logps, chosen_idx).detach().mean().item<double>();
    }
    if (!rejected_idx.empty()) {
      out.metrics["rewards/rejected"] = r.rejected_rewards.mean().item<double>();
      out.metrics["logps/rejected"] = pick(policy_logps, rejected_idx).detach().mean().item<double>();
    }
    if (!chosen_idx.empty() && !rejected_idx.empty()) {
      out.metrics["rewards/margins"] = out.metrics["rewards/chosen"] - out.metrics["rewards/rejected"];
    }
    return out;
  }

 private:
  CausalLM* policy_ = nullptr;
  const Collectives* collectives_ = nullptr;
  const CausalLM* reference_ = nullptr;
  double beta_ = 0.1, desirable_ = 1.0, undesirable_ = 1.0;
};

}  // namespace
}  // namespace posttrain

POSTTRAIN_REGISTER_TRAINER("kto", posttrain::KtoTrainer);
POSTTRAIN_PLUGIN("posttrain_trainer_kto");

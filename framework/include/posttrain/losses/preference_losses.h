// Preference-optimisation losses on sequence log-probabilities.
//
// Inputs are per-pair tensors [B] (fp32): summed (or, for IPO, length-averaged)
// log-probs of the chosen / rejected completion under the policy and the
// reference. Outputs are per-pair losses [B] (the trainer averages) and the
// implicit rewards β·(log π − log π_ref), detached, for TRL's metrics.
//
// The formulas are those of TRL's DPOTrainer.dpo_loss, with h = (π_c − π_r) −
// (ref_c − ref_r), ρ_c = π_c − ref_c, ρ_r = π_r − ref_r, ε = label_smoothing:
//   sigmoid   −(1−ε)·logσ(βh) − ε·logσ(−βh)           Rafailov et al. 2023, eq. 7;
//                                                      cDPO (Mitchell 2023) for ε > 0
//   robust    (−(1−ε)·logσ(βh) + ε·logσ(−βh)) / (1−2ε) Chowdhury et al. 2024, eq. 21
//   hinge     relu(1 − βh)                             SLiC, Zhao et al. 2023
//   ipo       (h − 1/(2β))²                            Azar et al. 2023, eq. 17
//   bco_pair  −logσ(βρ_c − δ) − logσ(−(βρ_r − δ)),     Jung et al. 2024; δ = running
//             mean of the rewards (RunningMoments)
//   sppo_hard (ρ_c − 1/(2β))² + (ρ_r + 1/(2β))²        Wu et al. 2024
//   nca_pair  −logσ(βρ_c) − ½logσ(−βρ_c) − ½logσ(−βρ_r) Chen et al. 2024
//   apo_zero  (1 − σ(βρ_c)) + σ(βρ_r)                  D'Oosterlinck et al. 2024
//   apo_down  σ(βρ_c) + (1 − σ(β(ρ_c − ρ_r)))          ibid.
// Bradley–Terry reward loss (Ouyang et al. 2022, eq. 1; TRL RewardTrainer):
//   −logσ(r_c − r_r − margin) + c·(r_c + r_r)²  (c = center_rewards_coefficient)
// ORPO (Hong et al. 2024, eq. 6–7; TRL ORPOTrainer), on length-averaged log-probs:
//   log odds(y) = log p − log(1 − p);  L = NLL(chosen) − β·logσ(log odds_c − log odds_r)
// CPO (Xu et al. 2024; TRL CPOTrainer), reference-free, h = π_c − π_r:
//   sigmoid −(1−ε)logσ(βh) − ε·logσ(−βh); hinge relu(1 − βh); ipo (h − 1/(2β))²;
//   simpo (Meng et al. 2024) the sigmoid loss on h − γ/β with length-averaged log-probs;
//   total = mean loss + cpo_alpha · NLL(chosen)
// KTO (Ethayarajh et al. 2024, eq. 8; TRL KTOTrainer), with z = max(0, KL estimate):
//   desirable   1 − σ(β(ρ − z)),   undesirable 1 − σ(β(z − ρ)),   ρ = π − π_ref
#pragma once

#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "posttrain/distributed/collectives.h"

namespace posttrain {

const std::vector<std::string>& DpoLossTypes();

// Running mean / variance of a stream of batches (TRL's RunningMoments), for bco_pair.
struct RunningMoments {
  double mean = 0.0, var = 1.0, count = 1e-24;
  void Update(const at::Tensor& xs);
  // [3] fp64 (mean, var, count), for checkpoints; FromTensor is its inverse.
  at::Tensor ToTensor() const;
  void FromTensor(const at::Tensor& t);
};

// KTO's KL reference point pairs each prompt with another example's completion
// (TRL shifts the batch's completions by one). Given the example each row comes
// from (paired data unpaired on the fly give two rows per example), returns for
// every row i the row whose completion goes with prompt i: the rotation by the
// smallest shift under which no row meets a row of its own example. Empty if
// there is none (every row is from one example).
std::vector<std::size_t> KtoMismatchedRows(const std::vector<std::int64_t>& example_of_row);

struct DpoLossResult {
  at::Tensor losses;            // [B]
  at::Tensor chosen_rewards;    // [B], detached
  at::Tensor rejected_rewards;  // [B], detached
};

// InvalidArgument for an unknown loss_type. `moments` is used (and updated) by
// bco_pair only, with every rank's rewards when `collectives` is given (TRL
// gathers them across processes), so all ranks keep the same running mean.
absl::StatusOr<DpoLossResult> DpoLoss(const std::string& loss_type, const at::Tensor& policy_chosen,
                                      const at::Tensor& policy_rejected, const at::Tensor& reference_chosen,
                                      const at::Tensor& reference_rejected, double beta, double label_smoothing,
                                      RunningMoments* moments, const Collectives* collectives = nullptr);

// ORPO: per-pair odds-ratio terms −β·logσ(log odds_c − log odds_r) [B] (the NLL
// term is the trainer's); `chosen_rewards`/`rejected_rewards` = β·avg-logps.
DpoLossResult OrpoLoss(const at::Tensor& avg_chosen, const at::Tensor& avg_rejected, double beta);

const std::vector<std::string>& CpoLossTypes();
// CPO / SimPO per-pair losses (without the NLL term); rewards = β·logps.
absl::StatusOr<DpoLossResult> CpoLoss(const std::string& loss_type, const at::Tensor& chosen,
                                      const at::Tensor& rejected, double beta, double label_smoothing,
                                      double simpo_gamma);

// KTO losses for desirable [Nc] and undesirable [Nr] completions (either may be
// empty), given summed policy/reference log-probs and the (detached) KL estimate.
struct KtoLossResult {
  at::Tensor losses;            // [Nc + Nr], weighted
  at::Tensor chosen_rewards;    // [Nc] detached
  at::Tensor rejected_rewards;  // [Nr] detached
};
KtoLossResult KtoLoss(const at::Tensor& policy_chosen, const at::Tensor& reference_chosen,
                      const at::Tensor& policy_rejected, const at::Tensor& reference_rejected, const at::Tensor& kl,
                      double beta, double desirable_weight, double undesirable_weight);

// BCO (Jung et al. 2024, "Binary Classifier Optimization for Large Language Model
// Alignment"; TRL's BCOTrainer.bco_loss) for desirable [Nc] and undesirable [Nr]
// completions (either may be empty): rewards r = β(log π − log π_ref); δ is the
// running mean in `moments` (0 without), which training (`update`) first updates
// with every rank's rewards (the concatenation, gathered when `collectives` is
// given) and evaluation only reads, as TRL's do_train;
//   losses = [−logσ(r_c − δ)] ++ [w ⊙ −logσ(−(r_r − δ))]
// with w the undesirable examples' density-ratio weights (UDM; undefined: 1).
struct BcoLossResult {
  at::Tensor losses;            // [Nc + Nr]
  at::Tensor chosen_rewards;    // [Nc] detached
  at::Tensor rejected_rewards;  // [Nr] detached
  double delta = 0;
};
absl::StatusOr<BcoLossResult> BcoLoss(const at::Tensor& policy_chosen, const at::Tensor& reference_chosen,
                                      const at::Tensor& policy_rejected, const at::Tensor& reference_rejected,
                                      double beta, const at::Tensor& rejected_weights, RunningMoments* moments,
                                      bool update, const Collectives* collectives = nullptr);

// BCO's underlying-distribution matching: a logistic regression telling desirable
// prompts (label 1) from undesirable ones (0) by their embeddings [N, D], as
// scikit-learn's LogisticRegression(class_weight="balanced") fits it (L2 with C = 1
// on the weights, intercept unpenalised, classes weighted n / (2 n_class)), solved
// to convergence by Newton's method in fp64. Then the density ratio of a prompt is
// p / (1 − p + 1e-8) clamped to [min_ratio, max_ratio] (TRL's _get_udm_weight).
struct DensityRatioClassifier {
  at::Tensor weight;  // [D] fp64
  double bias = 0;
  static DensityRatioClassifier Fit(const at::Tensor& embeddings, const at::Tensor& labels);
  at::Tensor Probability(const at::Tensor& embeddings) const;  // [N] fp64: P(desirable)
  at::Tensor Ratio(const at::Tensor& embeddings, double min_ratio, double max_ratio) const;
};

// Nash-MD (Munos et al. 2024, "Nash Learning from Human Feedback"; TRL's
// NashMDTrainer): the policy's completion y against one y' from the geometric
// mixture of policy and reference, P = P(y ≻ y') (σ of the reward difference).
// Per prompt, on token log-probs [N, C] of y (zero at padding):
//   score = (P − ½) · Σ_t log π(y_t)                   (REINFORCE, ½ a control variate)
//   kl    = Σ_t sg(log π(y_t) − log π_ref(y_t)) · log π(y_t)  (REINFORCE for KL(π‖π_ref))
//   loss  = β · kl − score
// sg = stop-gradient. Gradients flow through policy_logps only.
struct NashMdLossResult {
  at::Tensor losses;  // [N]
  at::Tensor score;   // [N] detached
  at::Tensor kl;      // [N] detached: Σ_t (log π − log π_ref), the sequence log-ratio
};
NashMdLossResult NashMdLoss(const at::Tensor& policy_logps, const at::Tensor& reference_logps,
                            const at::Tensor& probability, double beta);

// XPO (Xie et al. 2024, "Exploratory Preference Optimization"; TRL's XPOTrainer):
// online DPO on the pair (policy's completion y, reference's completion y_ref),
// the better-scored one chosen (`model_chosen` [N] bool: y is), plus the exploration
// term α · log π(y_ref). Inputs are summed completion log-probs [N]:
// policy_model = log π(y), policy_ref = log π(y_ref), reference_model = log π_ref(y),
// reference_ref = log π_ref(y_ref). With h = (log π − log π_ref)(chosen) −
// (log π − log π_ref)(rejected):
//   dpo = −log σ(β h) (sigmoid) or (h − 1/(2β))² (ipo);  xpo = α · log π(y_ref)
//   loss = dpo + xpo
// InvalidArgument for another loss_type.
struct XpoLossResult {
  at::Tensor losses;            // [N]
  at::Tensor dpo_losses;        // [N] detached
  at::Tensor xpo_losses;        // [N] detached
  at::Tensor chosen_rewards;    // [N] detached: β (log π − log π_ref) of the chosen
  at::Tensor rejected_rewards;  // [N] detached
};
absl::StatusOr<XpoLossResult> XpoLoss(const std::string& loss_type, const at::Tensor& policy_model,
                                      const at::Tensor& policy_ref, const at::Tensor& reference_model,
                                      const at::Tensor& reference_ref, const at::Tensor& model_chosen, double beta,
                                      double alpha);

// TRL's preference metrics from per-pair rewards and policy log-probs [B]:
// rewards/chosen, rewards/rejected, rewards/accuracies (chosen > rejected),
// rewards/margins, logps/chosen, logps/rejected (the last two if defined).
void AddPreferenceMetrics(const at::Tensor& chosen_rewards, const at::Tensor& rejected_rewards,
                          const at::Tensor& chosen_logps, const at::Tensor& rejected_logps,
                          std::map<std::string, double>* metrics);

// [B] losses of the Bradley–Terry reward model.
at::Tensor BradleyTerryLoss(const at::Tensor& rewards_chosen, const at::Tensor& rewards_rejected,
                            const at::Tensor& margin, double center_rewards_coefficient);

}  // namespace posttrain

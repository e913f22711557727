// Trainer "bco": Binary Classifier Optimization (Jung et al. 2024; TRL's BCOTrainer)
// on unpaired thumbs-up / thumbs-down data (prompt, completion, label); preference
// pairs are unpaired on the fly (chosen → desirable, rejected → undesirable).
//
// The implicit reward r = β(log π(y|x) − log π_ref(y|x)) is the logit of a binary
// classifier of desirable completions, shifted by δ, the running mean of every
// reward seen in training (TRL's RunningMoments, over every rank's rewards):
//   loss = mean( [−logσ(r_c − δ)] ++ [w · −logσ(−(r_r − δ))] )
// match_underlying_distribution = true weights each undesirable example by the
// density ratio w = p/(1−p) of its prompt (clamped to [min_density_ratio,
// max_density_ratio]), p from a logistic regression telling desirable prompts from
// undesirable ones (up to prompt_sample_size of each, balanced classes) on an
// embedding of the prompt: the mean of the initial policy's final hidden states over
// its tokens (TRL asks for an external embedding_func; the policy's own is what is
// at hand). The classifier and the weights are fixed before training.
// Metrics: rewards/chosen, rewards/rejected, rewards/margins, rewards/accuracies
// (the share of rows the shifted reward classifies right: r_c > δ, r_r < δ),
// logps/chosen, logps/rejected, delta.
#include <algorithm>
#include <c10/core/GradMode.h>
#include <random>

#include "posttrain/generation/logprobs.h"
#include "posttrain/losses/preference_losses.h"
#include "posttrain/model/causal_lm.h"
#include "posttrain/plugin/plugin.h"
#include "posttrain/train/pair_logps.h"

namespace posttrain {
namespace {

class BcoTrainer final : public Trainer {
 public:
  static ComponentSchema Schema() {
    return ComponentSchema("Binary Classifier Optimization on unpaired (or unpaired-on-the-fly) preference data.")
        .Float("learning_rate", 5e-7, "Peak learning rate (TRL's BCOConfig default).").AtLeast(0)
        .Bool("disable_dropout", true, "Train without the model's dropout (TRL's default for this trainer).")
        .Float("beta", 0.1, "Temperature β of the implicit reward.").GreaterThan(0)
        .Bool("match_underlying_distribution", false,
              "Weight undesirable examples by the density ratio of their prompts (UDM).")
        .Int("prompt_sample_size", 1024, "Prompts of each class the density-ratio classifier is fitted on.").AtLeast(1)
        .Float("min_density_ratio", 0.5, "Lower clamp of the density ratio.").GreaterThan(0)
        .Float("max_density_ratio", 10.0, "Upper clamp of the density ratio.").GreaterThan(0);
  }
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const ComponentConfig& config) {
    auto t = std::make_unique<BcoTrainer>();
    t->beta_ = config.GetFloat("beta");
    t->udm_ = config.GetBool("match_underlying_distribution");
    t->sample_size_ = config.GetInt("prompt_sample_size");
    t->min_ratio_ = config.GetFloat("min_density_ratio");
    t->max_ratio_ = config.GetFloat("max_density_ratio");
    if (t->min_ratio_ > t->max_ratio_) return config.Error("min_density_ratio", "must not exceed max_density_ratio");
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
    reference_ = context.reference;
    collectives_ = context.collectives;
    return absl::OkStatus();
  }

  // UDM: the classifier on the initial policy's prompt embeddings, and the density
  // ratio of every example's prompt (train and eval), fixed for the run.
  absl::Status Prepare(absl::Span<const TokenizedExample> train, absl::Span<const TokenizedExample> eval) override {
    if (!udm_) return absl::OkStatus();
    std::vector<const std::vector<std::int64_t>*> desirable, undesirable;
    for (const TokenizedExample& t : train) {
      if (!t.chosen_ids.empty() && !t.rejected_ids.empty()) {
        desirable.push_back(&t.prompt_ids);
        undesirable.push_back(&t.prompt_ids);
      } else if (t.label.has_value()) {
        (*t.label ? desirable : undesirable).push_back(&t.prompt_ids);
      }
    }
    if (desirable.empty() || undesirable.empty()) {
      return absl::InvalidArgumentError("bco: match_underlying_distribution needs desirable and undesirable examples");
    }
    std::mt19937_64 rng(1234);
    for (auto* set : {&desirable, &undesirable}) {
      std::shuffle(set->begin(), set->end(), rng);
      if (static_cast<std::int64_t>(set->size()) > sample_size_) set->resize(static_cast<size_t>(sample_size_));
    }
    std::vector<const std::vector<std::int64_t>*> prompts = desirable;
    prompts.insert(prompts.end(), undesirable.begin(), undesirable.end());
    const at::Tensor x = Embed(prompts);
    at::Tensor labels = at::zeros({x.size(0)}, x.options());
    labels.narrow(0, 0, static_cast<std::int64_t>(desirable.size())).fill_(1.0);
    classifier_ = DensityRatioClassifier::Fit(x, labels);
    for (auto [set, ratios] : {std::pair{train, &train_ratio_}, std::pair{eval, &eval_ratio_}}) {
      std::vector<const std::vector<std::int64_t>*> all;
      for (const TokenizedExample& t : set) all.push_back(&t.prompt_ids);
      *ratios = all.empty() ? at::Tensor() : classifier_.Ratio(Embed(all), min_ratio_, max_ratio_).to(at::kFloat);
    }
    return absl::OkStatus();
  }

  std::vector<std::pair<std::string, at::Tensor>> State() const override {
    return {{"bco.running_moments", moments_.ToTensor()}};
  }
  absl::Status LoadState(const std::map<std::string, at::Tensor>& state) override {
    if (auto it = state.find("bco.running_moments"); it != state.end()) moments_.FromTensor(it->second);
    return absl::OkStatus();
  }

  absl::StatusOr<StepOutput> Step(const StepInput& input) override {
    POSTTRAIN_ASSIGN_OR_RETURN(UnpairedRows unpaired, UnpairRows(input.batch, input.tokens, "bco"));
    const std::vector<std::vector<std::int64_t>>& prompts = unpaired.prompts;
    const std::vector<std::vector<std::int64_t>>& completions = unpaired.completions;
    const std::vector<bool>& desirable = unpaired.desirable;
    std::vector<std::int64_t> index_of_row;  // dataset index of each row's example (density ratios)
    for (std::int64_t p : unpaired.batch_position) index_of_row.push_back(input.tokens[static_cast<size_t>(p)]->index);
    const at::Tensor policy_logps = CompletionLogprobs(*policy_, MakeCompletionBatch(prompts, completions, policy_->device()), 1.0).sum(1);
    at::Tensor reference_logps;
    {
      c10::NoGradGuard no_grad;
      reference_logps = CompletionLogprobs(*reference_, MakeCompletionBatch(prompts, completions, policy_->device()), 1.0).sum(1);
    }
    std::vector<std::int64_t> chosen_idx, rejected_idx, rejected_examples;
    for (size_t r = 0; r < desirable.size(); ++r) {
      if (desirable[r]) {
        chosen_idx.push_back(static_cast<std::int64_t>(r));
      } else {
        rejected_idx.push_back(static_cast<std::int64_t>(r));
        rejected_examples.push_back(index_of_row[r]);
      }
    }
    auto pick = [](const at::Tensor& t, const std::vector<std::int64_t>& idx) {
      return idx.empty() ? at::zeros({0}, t.options()) : t.index_select(0, at::tensor(idx, t.options().dtype(at::kLong)));
    };
    at::Tensor weights;
    const at::Tensor& ratios = input.training ? train_ratio_ : eval_ratio_;
    if (udm_ && ratios.defined()) weights = pick(ratios, rejected_examples).to(policy_logps.device());
    POSTTRAIN_ASSIGN_OR_RETURN(
        BcoLossResult r, BcoLoss(pick(policy_logps, chosen_idx), pick(reference_logps, chosen_idx),
                                 pick(policy_logps, rejected_idx), pick(reference_logps, rejected_idx), beta_, weights,
                                 &moments_, /*update=*/input.training, collectives_));
    StepOutput out;
    out.loss = r.losses.mean();
    out.metrics["delta"] = r.delta;
    double correct = 0;
    if (!chosen_idx.empty()) {
      out.metrics["rewards/chosen"] = r.chosen_rewards.mean().item<double>();
      out.metrics["logps/chosen"] = pick(policy_logps, chosen_idx).detach().mean().item<double>();
      correct += (r.chosen_rewards > r.delta).sum().item<double>();
    }
    if (!rejected_idx.empty()) {
      out.metrics["rewards/rejected"] = r.rejected_rewards.mean().item<double>();
      out.metrics["logps/rejected"] = pick(policy_logps, rejected_idx).detach().mean().item<double>();
      correct += (r.rejected_rewards < r.delta).sum().item<double>();
    }
    if (!chosen_idx.empty() && !rejected_idx.empty()) {
      out.metrics["rewards/margins"] = out.metrics["rewards/chosen"] - out.metrics["rewards/rejected"];
    }
    out.metrics["rewards/accuracies"] = correct / static_cast<double>(desirable.size());
    if (weights.defined() && weights.numel() > 0) out.metrics["density_ratio/mean"] = weights.mean().item<double>();
    return out;
  }

 private:
  // Mean of the policy's final hidden states over each prompt's tokens: [N, H] fp64.
  at::Tensor Embed(const std::vector<const std::vector<std::int64_t>*>& prompts) const {
    c10::NoGradGuard no_grad;
    std::vector<at::Tensor> out;
    for (size_t begin = 0; begin < prompts.size(); begin += 32) {
      std::vector<std::vector<std::int64_t>> chunk;
      for (size_t i = begin; i < std::min(prompts.size(), begin + 32); ++i) {
        chunk.push_back(prompts[i]->empty() ? std::vector<std::int64_t>{0} : *prompts[i]);
      }
      const at::Tensor hidden = policy_->PackedHidden(PackSequences(chunk)).to(at::kDouble);
      std::int64_t offset = 0;
      for (const auto& p : chunk) {
        const auto n = static_cast<std::int64_t>(p.size());
        out.push_back(hidden.narrow(0, offset, n).mean(0));
        offset += n;
      }
    }
    return at::stack(out).cpu();
  }

  CausalLM* policy_ = nullptr;
  const CausalLM* reference_ = nullptr;
  const Collectives* collectives_ = nullptr;
  double beta_ = 0.1, min_ratio_ = 0.5, max_ratio_ = 10.0;
  bool udm_ = false;
  std::int64_t sample_size_ = 1024;
  RunningMoments moments_;
  DensityRatioClassifier classifier_;
  at::Tensor train_ratio_, eval_ratio_;  // [examples] fp32, by TokenizedExample::index
};

}  // namespace
}  // namespace posttrain

POSTTRAIN_REGISTER_TRAINER("bco", posttrain::BcoTrainer);
POSTTRAIN_PLUGIN("posttrain_trainer_bco");

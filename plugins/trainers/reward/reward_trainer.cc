// Trainer "reward": a Bradley–Terry reward model (TRL's RewardTrainer).
//
// A scalar head `score.weight` [1, hidden] reads the final hidden state at the last
// token of prompt + completion (its EOS); r = score · h. It starts random, or from the
// model's own when model.path is already a *ForSequenceClassification. Loss per pair:
//   −logσ(r_chosen − r_rejected − margin) + center_rewards_coefficient · (r_c + r_r)²
// with `margin` from the record's "margin" field when present. The trained model
// is saved as LlamaForSequenceClassification (num_labels 1), which transformers
// loads, and which the `reward_model` reward function scores with.
// Metrics: rewards/chosen, rewards/rejected, rewards/accuracies, rewards/margins.
#include "absl/strings/str_cat.h"
#include "posttrain/core/status.h"
#include "posttrain/generation/logprobs.h"
#include "posttrain/losses/preference_losses.h"
#include "posttrain/model/causal_lm.h"
#include "posttrain/model/sequence_classifier.h"
#include "posttrain/plugin/plugin.h"
#include "posttrain/train/pair_logps.h"

namespace posttrain {
namespace {

class RewardTrainer final : public Trainer {
 public:
  static ComponentSchema Schema() {
    return ComponentSchema("Bradley–Terry reward model on preference pairs; saved as LlamaForSequenceClassification.")
        .Float("learning_rate", 1e-5, "Peak learning rate.").AtLeast(0)
        .Bool("disable_dropout", true, "Train without the model's dropout (TRL's default for this trainer).")
        .Float("center_rewards_coefficient", 0.0, "Weight of the (r_c + r_r)² centring term (Eisenstein et al. 2023).").AtLeast(0)
        .Int("head_seed", 0, "Seed of the score head's initialisation.").AtLeast(0);
  }
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const ComponentConfig& config) {
    auto t = std::make_unique<RewardTrainer>();
    t->center_ = config.GetFloat("center_rewards_coefficient");
    t->head_seed_ = static_cast<std::uint64_t>(config.GetInt("head_seed"));
    t->where_ = config.where();
    return t;
  }

  TrainerNeeds Needs() const override { return {}; }
  absl::Status Setup(const TrainerContext& context) override {
    policy_ = context.policy;
    // What it would save must load in transformers.
    if (absl::Status has = TransformersHasClassifier(policy_->config(), ClassifierTask::kSequence); !has.ok()) {
      return Annotate(has, where_);
    }
    absl::StatusOr<ClassifierHead> head = StartingClassifierHead(context.classifier_head, policy_->config(), ClassifierTask::kSequence,
                                                                 1, head_seed_, policy_->options());
    if (!head.ok()) return Annotate(head.status(), where_);
    head_ = std::move(*head);
    return absl::OkStatus();
  }
  std::vector<std::pair<std::string, at::Tensor>> ExtraParameters() override { return head_.Named(); }
  std::pair<std::string, std::int64_t> SavedArchitecture() const override {
    // LlamaForCausalLM → LlamaForSequenceClassification; GPT2LMHeadModel → GPT2ForSequenceClassification.
    return {ClassifierArchitecture(policy_->config().architecture, ClassifierTask::kSequence), 1};
  }

  absl::StatusOr<StepOutput> Step(const StepInput& input) override {
    std::vector<std::vector<std::int64_t>> prompts, completions;
    std::vector<float> margins;
    bool has_margin = false;
    POSTTRAIN_RETURN_IF_ERROR(RequirePairs(input.tokens, "reward"));
    for (size_t i = 0; i < input.tokens.size(); ++i) {
      const TokenizedExample* t = input.tokens[i];
      prompts.push_back(t->prompt_ids);
      completions.push_back(t->chosen_ids);
      auto m = input.batch[i]->metadata.find("margin");
      has_margin |= m != input.batch[i]->metadata.end() && m->is_number();
      margins.push_back(m != input.batch[i]->metadata.end() && m->is_number() ? m->get<float>() : 0.0f);
    }
    for (const TokenizedExample* t : input.tokens) {
      prompts.push_back(t->prompt_ids);
      completions.push_back(t->rejected_ids);
    }
    CompletionBatch cb = MakeCompletionBatch(prompts, completions, policy_->device());
    at::Tensor rewards = SequenceScores(*policy_, head_, cb).squeeze(-1);
    const auto b = static_cast<std::int64_t>(input.tokens.size());
    at::Tensor chosen = rewards.narrow(0, 0, b), rejected = rewards.narrow(0, b, b);
    StepOutput out;
    out.loss = BradleyTerryLoss(chosen, rejected, has_margin ? at::tensor(margins, chosen.options().dtype(at::kFloat)) : at::Tensor(), center_).mean();
    AddPreferenceMetrics(chosen.detach(), rejected.detach(), at::Tensor(), at::Tensor(), &out.metrics);
    return out;
  }

 private:
  CausalLM* policy_ = nullptr;
  ClassifierHead head_;
  double center_ = 0.0;
  std::uint64_t head_seed_ = 0;
  std::string where_;
};

}  // namespace
}  // namespace posttrain

POSTTRAIN_REGISTER_TRAINER("reward", posttrain::RewardTrainer);
POSTTRAIN_PLUGIN("posttrain_trainer_reward");

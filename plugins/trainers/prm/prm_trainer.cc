// Trainer "prm": a process reward model (TRL's PRMTrainer; Uesato et al. 2022,
// Lightman et al. 2023): token classification at the end of each reasoning step.
//
// Data: stepwise supervision (`prompt`, `completions` = the steps, `labels` = whether
// each step is correct). Each example becomes prompt + step₁ + separator + step₂ +
// separator + ..., labelled at the last token of each step's separator with the
// step's label and ignored elsewhere (train/tokenize.h: StepwiseTokens;
// train_on_last_step_only keeps the last step's label only). A head with a bias
// [2, hidden] + [2] (`score`, GPT-2/NeoX/BLOOM: `classifier`; random, or the model's
// own when model.path is already a *ForTokenClassification) reads every token's final
// hidden state, after transformers' classifier dropout unless disable_dropout; the loss is the
// cross-entropy over labelled tokens, the mean over the batch's labelled tokens (as
// transformers' token classification loss). Saved as *ForTokenClassification with
// num_labels 2, which transformers loads and the `prm` reward function scores with.
// Metrics: accuracy (argmax = label over labelled steps), steps (labelled per
// example), and on evaluation eval_accuracy, as TRL's compute_accuracy.
#include <c10/core/GradMode.h>

#include "posttrain/core/status.h"
#include "posttrain/model/causal_lm.h"
#include "posttrain/model/sequence_classifier.h"
#include "posttrain/plugin/plugin.h"
#include "posttrain/tokenizer/tokenizer.h"
#include "posttrain/train/tokenize.h"

namespace posttrain {
namespace {

class PrmTrainer final : public Trainer {
 public:
  static ComponentSchema Schema() {
    return ComponentSchema("Process reward model: token classification of each reasoning step; saved as *ForTokenClassification.")
        .Float("learning_rate", 1e-5, "Peak learning rate (TRL PRMConfig default).").AtLeast(0)
        .Bool("disable_dropout", true, "Train without the model's dropout (TRL's default for this trainer).")
        .String("step_separator", "\n", "Text appended after each step; its last token carries the step's label.")
        .Bool("train_on_last_step_only", false, "Train on the last step's label only.")
        .Int("max_completion_length", -1, "Tokens of the steps at most (-1: no limit).").AtLeast(1).OrEqualTo(-1)
        .Int("head_seed", 0, "Seed of the classification head's initialisation.").AtLeast(0);
  }
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const ComponentConfig& config) {
    auto t = std::make_unique<PrmTrainer>();
    t->separator_ = config.GetString("step_separator");
    t->last_step_only_ = config.GetBool("train_on_last_step_only");
    t->max_completion_length_ = config.GetInt("max_completion_length");
    t->max_length_ = config.GetInt("max_length");
    t->head_seed_ = static_cast<std::uint64_t>(config.GetInt("head_seed"));
    t->where_ = config.where();
    return t;
  }

  TrainerNeeds Needs() const override { return {}; }
  absl::Status Setup(const TrainerContext& context) override {
    policy_ = context.policy;
    if (absl::Status has = TransformersHasClassifier(policy_->config(), ClassifierTask::kToken); !has.ok()) {
      return Annotate(has, where_);
    }
    separator_ids_ = context.tokenizer->Encode(separator_, /*add_special_tokens=*/false);
    if (separator_ids_.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(where_, ": step_separator must tokenize to at least one token"));
    }
    absl::StatusOr<ClassifierHead> head = StartingClassifierHead(context.classifier_head, policy_->config(), ClassifierTask::kToken,
                                                                 2, head_seed_, policy_->options());
    if (!head.ok()) return Annotate(head.status(), where_);
    head_ = std::move(*head);
    dropout_ = context.classifier_dropout;
    return absl::OkStatus();
  }
  std::vector<std::pair<std::string, at::Tensor>> ExtraParameters() override { return head_.Named(); }
  std::pair<std::string, std::int64_t> SavedArchitecture() const override {
    return {ClassifierArchitecture(policy_->config().architecture, ClassifierTask::kToken), 2};
  }

  absl::StatusOr<StepOutput> Step(const StepInput& input) override {
    std::vector<std::vector<std::int64_t>> streams;
    std::vector<std::int64_t> rows, labels;
    std::int64_t offset = 0;
    for (size_t i = 0; i < input.tokens.size(); ++i) {
      const Example& e = *input.batch[i];
      if (e.format != ExampleFormat::kStepwiseSupervision) {
        return absl::InvalidArgumentError(absl::StrCat(ExampleLocation(e), ": prm needs stepwise supervision data (prompt, "
                                                       "completions = the steps, labels = one bool per step); this is ",
                                                       ExampleFormatName(e.format)));
      }
      StepwiseSequence s = StepwiseTokens(input.tokens[i]->prompt_ids, input.tokens[i]->step_ids, e.step_labels, separator_ids_,
                                          last_step_only_ && input.training, max_completion_length_, max_length_);
      for (size_t k = 0; k < s.labels.size(); ++k) {
        if (s.labels[k] == kIgnoreLabel) continue;
        rows.push_back(offset + static_cast<std::int64_t>(k));
        labels.push_back(s.labels[k]);
      }
      offset += static_cast<std::int64_t>(s.input_ids.size());
      streams.push_back(std::move(s.input_ids));
    }
    const at::Tensor hidden = policy_->PackedHidden(PackSequences(streams));  // [tokens, H]
    StepOutput out;
    const at::TensorOptions long_options = hidden.options().dtype(at::kLong);
    at::Tensor labelled = hidden.index_select(0, at::tensor(rows, long_options));  // [M, H]
    // The head's dropout, as transformers' token classifier applies it in training
    // (elementwise, so dropping at the labelled rows only is the same in law).
    if (policy_->dropout() && at::GradMode::is_enabled() && dropout_ > 0) labelled = at::dropout(labelled, dropout_, /*train=*/true);
    const at::Tensor logits = head_(labelled).to(at::kFloat);  // [M, 2]
    const at::Tensor target = at::tensor(labels, long_options);
    // No labelled step in the batch (all cut by max_length): a zero loss that still
    // touches the parameters, so every rank reduces the same gradients.
    out.loss = rows.empty() ? hidden.sum() * 0.0 : at::cross_entropy_loss(logits, target);
    c10::NoGradGuard no_grad;
    out.metrics["accuracy"] = rows.empty() ? 0.0 : (logits.argmax(-1) == target).to(at::kFloat).mean().item<double>();
    out.metrics["steps"] = static_cast<double>(rows.size()) / static_cast<double>(std::max<size_t>(1, streams.size()));
    return out;
  }

 private:
  std::string separator_ = "\n", where_;
  bool last_step_only_ = false;
  std::int64_t max_completion_length_ = -1, max_length_ = 1024;
  std::uint64_t head_seed_ = 0;
  std::vector<std::int64_t> separator_ids_;
  CausalLM* policy_ = nullptr;
  ClassifierHead head_;
  double dropout_ = 0.0;
};

}  // namespace
}  // namespace posttrain

POSTTRAIN_REGISTER_TRAINER("prm", posttrain::PrmTrainer);
POSTTRAIN_PLUGIN("posttrain_trainer_prm");

// Trainer "gkd": Generalized Knowledge Distillation (Agarwal et al. 2024, "On-Policy
// Distillation of Language Models: Learning from Self-Generated Mistakes"; TRL's
// GKDTrainer). A student (the recipe's [model]) learns the next-token distributions
// of a teacher (teacher_model_name_or_path, the same vocabulary) on completion
// tokens:
//   loss = mean over completion tokens of JSD_β(p_student, p_teacher)
// (model/token_logprobs.h: GeneralizedJsd; β = 0 forward KL, 1 reverse KL), computed
// a chunk of tokens at a time: no full-vocabulary logits beyond one chunk.
// The completions: with probability lmbda per step the student's own samples
// (on-policy, at `temperature`, at most max_new_tokens), else the teacher's samples
// if seq_kd, else the dataset's. Data: prompt-completion (or conversational).
// Metrics: loss, jsd (the mean per-token divergence), on_policy (1 when the step's
// completions were the student's), completions/mean_length.
#include <c10/core/GradMode.h>
#include <random>

#include "posttrain/generation/generate.h"
#include "posttrain/model/causal_lm.h"
#include "posttrain/model/hf_model.h"
#include "posttrain/model/token_logprobs.h"
#include "posttrain/plugin/plugin.h"

namespace posttrain {
namespace {

class GkdTrainer final : public Trainer {
 public:
  static ComponentSchema Schema() {
    return ComponentSchema("Generalized Knowledge Distillation from a teacher model (generalized JSD, on-policy mix).")
        .Float("learning_rate", 2e-5, "Peak learning rate.").AtLeast(0)
        .Bool("disable_dropout", true, "Train without the model's dropout (TRL's default for this trainer).")
        .Required("teacher_model_name_or_path", OptionType::kString,
                  "The teacher: a Hugging Face model directory with the student's vocabulary.")
        .Float("beta", 0.5, "Interpolation of the generalized JSD: 0 = forward KL, 1 = reverse KL.").AtLeast(0).AtMost(1)
        .Float("lmbda", 0.5, "Fraction of steps trained on the student's own samples (on-policy).").AtLeast(0).AtMost(1)
        .Bool("seq_kd", false, "Off-policy steps train on the teacher's samples instead of the dataset's completions.")
        .Float("temperature", 0.9, "Sampling temperature of on-policy and seq_kd generation.").GreaterThan(0)
        .Int("max_new_tokens", 128, "Tokens generated at most per completion.").AtLeast(1);
  }
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const ComponentConfig& config) {
    auto t = std::make_unique<GkdTrainer>();
    t->teacher_path_ = config.GetString("teacher_model_name_or_path");
    t->beta_ = config.GetFloat("beta");
    t->lmbda_ = config.GetFloat("lmbda");
    t->seq_kd_ = config.GetBool("seq_kd");
    t->temperature_ = config.GetFloat("temperature");
    t->max_new_tokens_ = config.GetInt("max_new_tokens");
    t->where_ = config.where();
    return t;
  }
  TrainerNeeds Needs() const override { return TrainerNeeds(); }
  absl::Status Setup(const TrainerContext& context) override {
    policy_ = context.policy;
    tokenizer_ = context.tokenizer;
    collectives_ = context.collectives;
    POSTTRAIN_ASSIGN_OR_RETURN(teacher_, LoadCausalLM(teacher_path_, policy_->dtype()));
    if (teacher_->device() != policy_->device()) teacher_->MoveTo(policy_->device());
    if (teacher_->config().vocab_size != policy_->config().vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          where_, ": teacher_model_name_or_path '", teacher_path_, "' has vocab_size ", teacher_->config().vocab_size,
          " but the student has ", policy_->config().vocab_size,
          ": GKD compares their next-token distributions token by token, so they must share a vocabulary"));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<StepOutput> Step(const StepInput& input) override {
    std::vector<std::vector<std::int64_t>> prompts, completions;
    for (size_t i = 0; i < input.tokens.size(); ++i) {
      const TokenizedExample& t = *input.tokens[i];
      if (t.prompt_ids.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(ExampleLocation(*input.batch[i]), ": gkd needs prompts"));
      }
      prompts.push_back(t.prompt_ids);
      completions.push_back(t.completion_ids);
    }
    // TRL draws once per step: on-policy with probability lmbda.
    std::mt19937_64 rng(Mix64(static_cast<std::uint64_t>(input.step) * 7919 + static_cast<std::uint64_t>(input.micro_batch)));
    const bool on_policy = input.training && std::uniform_real_distribution<double>(0, 1)(rng) < lmbda_;
    const CausalLM* generator = on_policy ? policy_ : (input.training && seq_kd_ ? teacher_.get() : nullptr);
    if (generator != nullptr) {
      SamplingParams params;
      params.max_new_tokens = max_new_tokens_;
      params.temperature = temperature_;
      params.do_sample = true;
      params.seed = Mix64(rng());
      params.compute_logprobs = false;
      params.eos_token_ids = EosTokenIds(*generator, tokenizer_);
      std::vector<Generation> generated;
      {
        c10::NoGradGuard no_grad;
        POSTTRAIN_ASSIGN_OR_RETURN(generated, Generate(*generator, prompts, 1, params, tokenizer_));
      }
      for (const Generation& g : generated) completions[static_cast<size_t>(g.prompt_index)] = g.token_ids;
    }
    std::vector<std::vector<std::int64_t>> streams;
    std::vector<std::int64_t> rows;
    std::int64_t offset = 0, completion_tokens = 0;
    for (size_t i = 0; i < prompts.size(); ++i) {
      std::vector<std::int64_t> ids = prompts[i];
      ids.insert(ids.end(), completions[i].begin(), completions[i].end());
      // Position k − 1 predicts token k: the rows that predict completion tokens.
      for (size_t k = prompts[i].size(); k < ids.size(); ++k) rows.push_back(offset + static_cast<std::int64_t>(k) - 1);
      completion_tokens += static_cast<std::int64_t>(completions[i].size());
      offset += static_cast<std::int64_t>(ids.size());
      streams.push_back(std::move(ids));
    }
    const PackedSequences packed = PackSequences(streams);
    const at::Tensor hidden = policy_->PackedHidden(packed);
    at::Tensor teacher_hidden;
    {
      c10::NoGradGuard no_grad;
      teacher_hidden = teacher_->PackedHidden(packed);
    }
    const at::Tensor index = at::tensor(rows, hidden.options().dtype(at::kLong));
    // The mean over every rank's completion tokens (the engine averages gradients
    // over ranks), as TRL's batchmean over the labels.
    POSTTRAIN_ASSIGN_OR_RETURN(const double global_tokens, collectives_->Sum(static_cast<double>(rows.size())));
    const double per_rank = std::max(1.0, global_tokens / collectives_->world_size());
    const at::Tensor weights = at::full({static_cast<std::int64_t>(rows.size())}, 1.0 / per_rank, hidden.options().dtype(at::kFloat));
    GeneralizedJsdResult r = GeneralizedJsd(policy_->HeadInput(hidden.index_select(0, index)), policy_->lm_head_weight(),
                                            teacher_->HeadInput(teacher_hidden.index_select(0, index)), teacher_->lm_head_weight(), weights, beta_,
                                            /*temperature=*/1.0, /*chunk=*/0, policy_->logit_softcap(), teacher_->logit_softcap());
    StepOutput out;
    out.loss = r.sum;
    out.metrics["jsd"] = rows.empty() ? 0.0 : r.per_token.mean().item<double>();
    out.metrics["on_policy"] = on_policy ? 1.0 : 0.0;
    out.metrics["completions/mean_length"] = static_cast<double>(completion_tokens) / static_cast<double>(prompts.size());
    return out;
  }

 private:
  std::string teacher_path_, where_;
  double beta_ = 0.5, lmbda_ = 0.5, temperature_ = 0.9;
  bool seq_kd_ = false;
  std::int64_t max_new_tokens_ = 128;
  CausalLM* policy_ = nullptr;
  const Tokenizer* tokenizer_ = nullptr;
  const Collectives* collectives_ = nullptr;
  std::unique_ptr<CausalLM> teacher_;
};

}  // namespace
}  // namespace posttrain

POSTTRAIN_REGISTER_TRAINER("gkd", posttrain::GkdTrainer);
POSTTRAIN_PLUGIN("posttrain_trainer_gkd");

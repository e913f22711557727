// Trainer "ppo": Proximal Policy Optimization for language models (Schulman et al.
// 2017; Ziegler et al. 2019; TRL's PPOTrainer, with its config names).
//
// A value head `v_head` (Linear(hidden, 1)) reads the policy's final hidden states
// (a shared backbone, as transformers' AutoModelForCausalLMWithValueHead); it is
// trained with the policy and checkpointed (trainer_params.safetensors) but not
// saved with the final model. Each generated batch (sampled and scored by the
// engine) is used for num_ppo_epochs steps; at its first step the trainer fixes,
// with the weights that sampled it:
//   scores   = reward − missing_eos_penalty for completions without EOS
//   rewards  = −kl_coef · KL_t per token (k1: old − ref; k3), + score at the last token
//   values   = v_head(h_t) at the positions that predict each completion token
//   A, ret   = GAE(γ = gamma, λ = lam), A whitened over the batch
// and every step minimises pg_loss + vf_coef · vf_loss with ratio and value
// clipping (posttrain/losses/policy_gradient.h).
// Metrics (TRL): objective/kl, objective/non_score_reward, objective/rlhf_reward,
// objective/scores, policy/approxkl_avg, policy/clipfrac_avg, loss/policy_avg,
// loss/value_avg, val/clipfrac_avg, val/ratio, val/num_eos_tokens, plus reward and
// completion metrics.
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/GradMode.h>

#include "absl/strings/match.h"
#include "posttrain/generation/logprobs.h"
#include "posttrain/losses/policy_gradient.h"
#include "posttrain/model/causal_lm.h"
#include "posttrain/plugin/plugin.h"
#include "posttrain/run/reward_pipeline.h"
#include "posttrain/train/rollout_batch.h"

namespace posttrain {
namespace {

class PpoTrainer final : public Trainer {
 public:
  static ComponentSchema Schema() {
    return ComponentSchema("PPO with a value head, GAE and a per-token KL penalty to the reference.")
        .Float("learning_rate", 3e-6, "Peak learning rate (TRL PPOConfig default).").AtLeast(0)
        .Bool("disable_dropout", true, "Train without the model's dropout (TRL's default for this trainer).")
        .Int("num_generations", 1, "Completions per prompt.").AtLeast(1)
        .Int("num_ppo_epochs", 4, "Optimisation steps on each generated batch.").AtLeast(1)
        .Float("kl_coef", 0.05, "Per-token KL penalty in the reward (0: no reference model).").AtLeast(0)
        .String("kl_estimator", "k1", "KL estimator: k1 (old − ref) or k3 (Schulman's unbiased, non-negative).",
                {"k1", "k3"})
        .Float("cliprange", 0.2, "Policy ratio clip range.").AtLeast(0)
        .Float("cliprange_value", 0.2, "Value clip range around the values at sampling time.").AtLeast(0)
        .Float("vf_coef", 0.1, "Weight of the value loss.").AtLeast(0)
        .Float("gamma", 1.0, "Discount factor.").AtLeast(0).AtMost(1)
        .Float("lam", 0.95, "GAE λ.").AtLeast(0).AtMost(1)
        .Bool("whiten_rewards", false, "Whiten the per-token rewards before GAE.")
        .Float("missing_eos_penalty", 0.0, "Subtracted from the score of a completion that ends without EOS.").AtLeast(0)
        .Float("temperature", 0.7, "Sampling temperature; must match the sampler's.").GreaterThan(0)
        .Int("value_head_seed", 0, "Seed of the value head's initialisation.").AtLeast(0);
  }
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const ComponentConfig& config) {
    auto t = std::make_unique<PpoTrainer>();
    t->num_generations_ = config.GetInt("num_generations");
    t->num_ppo_epochs_ = config.GetInt("num_ppo_epochs");
    t->kl_coef_ = config.GetFloat("kl_coef");
    t->k3_ = config.GetString("kl_estimator") == "k3";
    t->loss_.cliprange = config.GetFloat("cliprange");
    t->loss_.cliprange_value = config.GetFloat("cliprange_value");
    t->loss_.vf_coef = config.GetFloat("vf_coef");
    t->gamma_ = config.GetFloat("gamma");
    t->lam_ = config.GetFloat("lam");
    t->whiten_rewards_ = config.GetBool("whiten_rewards");
    t->missing_eos_penalty_ = config.GetFloat("missing_eos_penalty");
    t->temperature_ = config.GetFloat("temperature");
    t->seed_ = static_cast<std::uint64_t>(config.GetInt("value_head_seed"));
    if (t->num_generations_ < 1) return config.Error("num_generations", "must be >= 1");
    if (t->num_ppo_epochs_ < 1) return config.Error("num_ppo_epochs", "must be >= 1");
    if (t->temperature_ <= 0) return config.Error("temperature", "must be > 0");
    if (t->gamma_ < 0 || t->gamma_ > 1) return config.Error("gamma", "must be in [0, 1]");
    if (t->lam_ < 0 || t->lam_ > 1) return config.Error("lam", "must be in [0, 1]");
    return t;
  }

  TrainerNeeds Needs() const override { return TrainerNeeds::Online(kl_coef_ != 0.0, num_generations_, num_ppo_epochs_); }
  absl::Status Setup(const TrainerContext& context) override {
    policy_ = context.policy;
    collectives_ = context.collectives;
    reference_ = context.reference;
    const std::int64_t hidden = policy_->config().output_size();  // the width of the decoder's outputs
    at::Generator gen = at::detail::createCPUGenerator(seed_);
    // Small random weights: values start near 0 and every hidden direction gets a gradient.
    v_weight_ = (at::normal(0.0, 1.0 / std::sqrt(static_cast<double>(hidden)), {1, hidden}, gen) * 0.1).to(policy_->options());
    v_bias_ = at::zeros({1}, policy_->options());
    return absl::OkStatus();
  }
  std::vector<std::pair<std::string, at::Tensor>> TrainerParameters() override {
    return {{"v_head.weight", v_weight_}, {"v_head.bias", v_bias_}};
  }

  // What each micro-batch's generation fixed at its first step, for resuming
  // within its num_ppo_epochs: "fixed.<micro>.<tensor>" and ".metric.<name>".
  std::vector<std::pair<std::string, at::Tensor>> State() const override {
    std::vector<std::pair<std::string, at::Tensor>> state;
    for (size_t m = 0; m < cache_.size(); ++m) {
      const Fixed& f = cache_[m];
      if (!f.advantages.defined()) continue;
      const std::string prefix = absl::StrCat("fixed.", m, ".");
      state.push_back({prefix + "old_logps", f.old_logps});
      state.push_back({prefix + "old_values", f.old_values});
      state.push_back({prefix + "advantages", f.advantages});
      state.push_back({prefix + "returns", f.returns});
      for (const auto& [name, value] : f.metrics) state.push_back({prefix + "metric." + name, at::scalar_tensor(value, at::TensorOptions().device(at::kCPU).dtype(at::kDouble))});  // checkpoint state
    }
    return state;
  }
  absl::Status LoadState(const std::map<std::string, at::Tensor>& state) override {
    cache_.clear();
    for (size_t m = 0;; ++m) {
      const std::string prefix = absl::StrCat("fixed.", m, ".");
      auto get = [&](const char* name) {
        auto it = state.find(prefix + name);
        return it == state.end() ? at::Tensor() : it->second;
      };
      Fixed f;
      f.old_logps = get("old_logps");
      f.old_values = get("old_values");
      f.advantages = get("advantages");
      f.returns = get("returns");
      if (!f.advantages.defined()) break;
      for (auto it = state.lower_bound(prefix + "metric."); it != state.end() && absl::StartsWith(it->first, prefix + "metric."); ++it) {
        f.metrics[it->first.substr(prefix.size() + 7)] = it->second.item<double>();
      }
      cache_.push_back(std::move(f));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<StepOutput> Step(const StepInput& input) override {
    POSTTRAIN_ASSIGN_OR_RETURN(RolloutBatch rb, MakeRolloutBatch(input.rollouts, policy_->device(), "ppo"));
    const at::Tensor hidden = CompletionHiddenStates(*policy_, rb.sequences);
    const at::Tensor logps = CompletionLogprobsFromHidden(*policy_, rb.sequences, hidden, temperature_);
    const at::Tensor values = Values(hidden);
    // At a batch's first step the weights are the sampling weights: this forward
    // pass gives the old log-probs and values.
    const auto micro = static_cast<size_t>(input.micro_batch);
    if (cache_.size() <= micro) cache_.resize(micro + 1);
    Fixed& fixed = cache_[micro];
    if (input.iteration == 0 || !fixed.advantages.defined()) {
      POSTTRAIN_ASSIGN_OR_RETURN(fixed, FixRollouts(rb, input.rollouts, input.rewards, logps.detach(), values.detach() * rb.mask));
    }
    POSTTRAIN_ASSIGN_OR_RETURN(const RewardTable* table, input.rewards.Wait());
    PpoLossResult r =
        PpoLoss(logps, fixed.old_logps, values, fixed.old_values, fixed.advantages, fixed.returns, rb.mask, loss_);
    StepOutput out;
    out.loss = r.loss;
    out.metrics = fixed.metrics;
    AddRewardMetrics(*table, &out.metrics);
    rb.AddMetrics(&out.metrics);
    {
      c10::NoGradGuard no_grad;
      const at::Tensor log_ratio = (logps - fixed.old_logps) * rb.mask;
      const at::Tensor tokens = rb.mask.sum().clamp_min(1);
      out.metrics["policy/approxkl_avg"] = (0.5 * (log_ratio.pow(2)).sum() / tokens).item<double>();
      out.metrics["val/ratio"] = ((at::exp(log_ratio) * rb.mask).sum() / tokens).item<double>();
    }
    out.metrics["policy/clipfrac_avg"] = r.clipfrac;
    out.metrics["loss/policy_avg"] = r.pg_loss.item<double>();
    out.metrics["loss/value_avg"] = r.vf_loss.item<double>();
    out.metrics["val/clipfrac_avg"] = r.vf_clipfrac;
    return out;
  }

 private:
  // What a generated batch fixes at its first step.
  struct Fixed {
    at::Tensor old_logps, old_values, advantages, returns;
    std::map<std::string, double> metrics;
  };

  at::Tensor Values(const at::Tensor& hidden) const {
    return at::linear(hidden, v_weight_, v_bias_).squeeze(-1).to(at::kFloat);  // [N, C]
  }

  absl::StatusOr<Fixed> FixRollouts(const RolloutBatch& rb, absl::Span<const Rollout> rollouts, const StepRewards& pending,
                                    const at::Tensor& old_logps,
                                    const at::Tensor& old_values) {
    c10::NoGradGuard no_grad;
    Fixed f;
    f.old_logps = old_logps;
    f.old_values = old_values;
    at::Tensor kl = at::zeros_like(old_logps);
    if (kl_coef_ != 0.0) {
      const at::Tensor ref = CompletionLogprobs(*reference_, rb.sequences, temperature_);
      const at::Tensor log_r = ref - old_logps;  // log π_ref/π_old
      kl = (k3_ ? at::exp(log_r) - 1 - log_r : -log_r) * rb.mask;
    }
    // The scores are needed from here on (they were scored during the passes above).
    POSTTRAIN_ASSIGN_OR_RETURN(const RewardTable* table, pending.Wait());
    const auto n = static_cast<std::int64_t>(table->total.size());
    const at::Tensor scores = PenalizedScores(*table, rollouts, missing_eos_penalty_, f.old_values.options());
    at::Tensor rewards = -kl_coef_ * kl;
    const at::Tensor non_score = rewards.sum(1);
    std::vector<std::int64_t> last;
    for (std::int64_t i = 0; i < n; ++i) last.push_back(rb.sequences.completion_lengths[static_cast<size_t>(i)] - 1);
    rewards.scatter_add_(1, at::tensor(last, rewards.options().dtype(at::kLong)).unsqueeze(1), scores.unsqueeze(1));
    // Whitening is over the global batch (every rank's rollouts).
    if (whiten_rewards_) {
      POSTTRAIN_ASSIGN_OR_RETURN(rewards, MaskedWhiten(rewards, rb.mask, /*shift_mean=*/false, *collectives_));
      rewards = rewards * rb.mask;
    }
    GaeResult gae = GeneralizedAdvantages(rewards, f.old_values, rb.mask, gamma_, lam_);
    POSTTRAIN_ASSIGN_OR_RETURN(f.advantages, MaskedWhiten(gae.advantages, rb.mask, /*shift_mean=*/true, *collectives_));
    f.advantages = f.advantages * rb.mask;
    f.returns = gae.returns;
    f.metrics["objective/kl"] = kl.sum(1).mean().item<double>();
    f.metrics["objective/non_score_reward"] = non_score.mean().item<double>();
    f.metrics["objective/scores"] = scores.mean().item<double>();
    f.metrics["objective/rlhf_reward"] = (scores + non_score).mean().item<double>();
    f.metrics["val/num_eos_tokens"] = (n - rb.truncated.sum()).item<double>();
    return f;
  }

  CausalLM* policy_ = nullptr;
  const Collectives* collectives_ = nullptr;
  const CausalLM* reference_ = nullptr;
  at::Tensor v_weight_, v_bias_;
  std::vector<Fixed> cache_;
  std::int64_t num_generations_ = 1, num_ppo_epochs_ = 4;
  double kl_coef_ = 0.05, gamma_ = 1.0, lam_ = 0.95, missing_eos_penalty_ = 0.0, temperature_ = 0.7;
  bool k3_ = false, whiten_rewards_ = false;
  std::uint64_t seed_ = 0;
  PpoLossOptions loss_;
};

}  // namespace
}  // namespace posttrain

POSTTRAIN_REGISTER_TRAINER("ppo", posttrain::PpoTrainer);
POSTTRAIN_PLUGIN("posttrain_trainer_ppo");

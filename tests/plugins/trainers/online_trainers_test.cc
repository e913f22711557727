// The online trainers' wiring on a tiny random model, against hand computations:
// rewards → advantages → the loss, the KL to a reference that differs from the
// policy, and a reuse step (iteration 1) whose importance ratio differs from 1 and
// engages the clip. The expected values take their log-probs from a plain forward
// of each sequence alone (no batching, no padding) and assemble the formulas
// (TRL's GRPOTrainer, RLOOTrainer, OnlineDPOTrainer) here, term by term.
#include <ATen/CPUGeneratorImpl.h>

#include <c10/core/GradMode.h>
#include <cmath>

#include "gtest/gtest.h"
#include "posttrain/model/causal_lm.h"
#include "test_support.h"

namespace posttrain {
namespace {

ModelConfig Tiny() { return testing::TinyTrainerModelConfig(); }

// Per-token log p(completion_t | prefix) at temperature 1, one sequence alone.
// log softmax of the next-token distribution at each completion position, from
// the padded libtorch path with full logits: [completion length, V] fp64.
at::Tensor CompletionLogSoftmax(const CausalLM& model, const std::vector<std::int64_t>& prompt,
                                const std::vector<std::int64_t>& completion) {
  c10::NoGradGuard no_grad;
  std::vector<std::int64_t> ids = prompt;
  ids.insert(ids.end(), completion.begin(), completion.end());
  const auto len = static_cast<std::int64_t>(ids.size());
  const at::Tensor logits =
      model.Forward(at::tensor(ids, at::kLong).unsqueeze(0), at::arange(len, at::kLong).unsqueeze(0), at::Tensor(), nullptr)[0];
  const auto p = static_cast<std::int64_t>(prompt.size());
  return at::log_softmax(logits.narrow(0, p - 1, static_cast<std::int64_t>(completion.size())).to(at::kDouble), -1);
}

std::vector<double> TokenLogps(const CausalLM& model, const std::vector<std::int64_t>& prompt,
                               const std::vector<std::int64_t>& completion) {
  const at::Tensor rows = CompletionLogSoftmax(model, prompt, completion);
  std::vector<double> out;
  for (size_t t = 0; t < completion.size(); ++t) out.push_back(rows[static_cast<std::int64_t>(t)][completion[t]].item<double>());
  return out;
}

// Entropy (nats) of the model's next-token distribution at each completion position.
std::vector<double> TokenEntropies(const CausalLM& model, const std::vector<std::int64_t>& prompt,
                                   const std::vector<std::int64_t>& completion) {
  const at::Tensor rows = CompletionLogSoftmax(model, prompt, completion);
  std::vector<double> out;
  for (std::int64_t t = 0; t < rows.size(0); ++t) out.push_back(-(rows[t].exp() * rows[t]).sum().item<double>());
  return out;
}

double Sum(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s;
}

// Two prompts, two completions each (grouped by prompt), of different lengths.
std::vector<Rollout> Rollouts() {
  const std::vector<std::vector<std::int64_t>> prompts = {{1, 5, 6}, {1, 10}};
  const std::vector<std::vector<std::int64_t>> completions = {{7, 8, 9, 2}, {11, 2}, {12, 13, 2}, {14, 15, 16, 17, 2}};
  std::vector<Rollout> rollouts(4);
  for (size_t i = 0; i < 4; ++i) {
    rollouts[i].prompt_index = static_cast<std::int64_t>(i / 2);
    rollouts[i].prompt_ids = prompts[i / 2];
    rollouts[i].token_ids = completions[i];
  }
  return rollouts;
}

struct Rig {
  std::unique_ptr<CausalLM> policy, reference;
  std::vector<Rollout> rollouts = Rollouts();
  std::vector<Example> examples = std::vector<Example>(2);
  std::vector<const Example*> example_ptrs;
  std::vector<absl::Span<const Rollout>> generation;
  RewardTable table;
  Rig(std::vector<float> rewards) {
    policy = std::move(*CausalLM::Random(Tiny(), at::kFloat, 21));
    reference = std::move(*CausalLM::Random(Tiny(), at::kFloat, 22));
    for (auto& [name, p] : policy->named_parameters()) p.set_requires_grad(true);
    for (auto& e : examples) example_ptrs.push_back(&e);
    generation = {rollouts};
    table.total = std::move(rewards);
  }
  StepInput Input(std::int64_t iteration) {
    StepInput in;
    in.step = 1 + iteration;
    in.iteration = iteration;
    in.batch = example_ptrs;
    in.rollouts = rollouts;
    in.generation = generation;
    in.rewards = StepRewards(&table);
    return in;
  }
  // Moves the policy as an optimizer step would (deterministically).
  void Perturb(double scale) {
    c10::NoGradGuard no_grad;
    at::Generator gen = at::detail::createCPUGenerator(5);
    for (auto& [name, p] : policy->named_parameters()) p.add_(at::normal(0.0, scale, p.sizes(), gen));
  }
};

// GRPO, loss_type dapo, β = 0.1: A_i = (r_i − mean_group) / (std_group + 1e-4);
// ℓ_t = −min(ρ_t·A_i, clip(ρ_t, 1 − ε, 1 + ε)·A_i) + β·(e^{ref−logp} − (ref − logp) − 1);
// loss = Σ ℓ / Σ tokens (one micro-batch: the whole generation).
TEST(OnlineTrainerWiringTest, GrpoAdvantagesKlAndAClippedReuseStepByHand) {
  Rig s({1.0f, 0.0f, 2.0f, 0.0f});
  const double beta = 0.1, epsilon = 0.05;
  auto trainer = testing::CreateBuiltin<Trainer>(
      "grpo", {{"num_generations", std::int64_t{2}}, {"beta", beta}, {"epsilon", epsilon}, {"num_iterations", std::int64_t{2}}});
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  ASSERT_TRUE((*trainer)->Setup(TrainerContext{s.policy.get(), s.reference.get(), nullptr}).ok());
  // Group 1: rewards 1, 0 → mean 0.5, std √0.5; group 2: 2, 0 → mean 1, std √2.
  const double advantage[4] = {0.5 / (std::sqrt(0.5) + 1e-4), -0.5 / (std::sqrt(0.5) + 1e-4),
                               1.0 / (std::sqrt(2.0) + 1e-4), -1.0 / (std::sqrt(2.0) + 1e-4)};
  std::vector<std::vector<double>> old(4), ref(4);
  for (size_t i = 0; i < 4; ++i) {
    old[i] = TokenLogps(*s.policy, s.rollouts[i].prompt_ids, s.rollouts[i].token_ids);
    ref[i] = TokenLogps(*s.reference, s.rollouts[i].prompt_ids, s.rollouts[i].token_ids);
  }
  auto expected = [&](const std::vector<std::vector<double>>& now, double* clipped_share) {
    double total = 0, tokens = 0, clipped = 0;
    for (size_t i = 0; i < 4; ++i) {
      for (size_t t = 0; t < now[i].size(); ++t) {
        const double ratio = std::exp(now[i][t] - old[i][t]);
        const double clip = std::min(std::max(ratio, 1 - epsilon), 1 + epsilon);
        const double d = ref[i][t] - now[i][t];
        total += -std::min(ratio * advantage[i], clip * advantage[i]) + beta * (std::exp(d) - d - 1);
        clipped += (advantage[i] < 0 && ratio < 1 - epsilon) || (advantage[i] > 0 && ratio > 1 + epsilon);
        tokens += 1;
      }
    }
    *clipped_share = clipped / tokens;
    return total / tokens;
  };
  double clipped = 0;
  auto first = (*trainer)->Step(s.Input(0));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_NEAR(first->loss.item<double>(), expected(old, &clipped), 1e-5);
  // TRL's "entropy": the mean over completion tokens, from the padded full logits.
  double entropy_sum = 0, entropy_tokens = 0;
  for (size_t i = 0; i < 4; ++i) {
    for (double e : TokenEntropies(*s.policy, s.rollouts[i].prompt_ids, s.rollouts[i].token_ids)) {
      entropy_sum += e;
      entropy_tokens += 1;
    }
  }
  EXPECT_NEAR(first->metrics.at("entropy"), entropy_sum / entropy_tokens, 1e-5);
  EXPECT_EQ(clipped, 0.0);
  // The reuse step after the policy moved: ratio ≠ 1 and the tight clip engages.
  s.Perturb(0.05);
  std::vector<std::vector<double>> now(4);
  for (size_t i = 0; i < 4; ++i) now[i] = TokenLogps(*s.policy, s.rollouts[i].prompt_ids, s.rollouts[i].token_ids);
  auto second = (*trainer)->Step(s.Input(1));
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_NEAR(second->loss.item<double>(), expected(now, &clipped), 1e-5);
  EXPECT_GT(clipped, 0.0) << "the perturbation should push some ratios past 1 ± ε";
  EXPECT_NEAR(second->metrics.at("clip_ratio/low_mean") + second->metrics.at("clip_ratio/high_mean"), clipped, 1e-6);
}

// RLOO, β = 0.1: the KL of each sequence under the sampling policy is folded into
// its reward, r'_i = R_i − β·Σ_t (old_t − ref_t); A_i = r'_i − r'_{other} (groups
// of 2); loss = mean_i −min(ρ_i·A_i, clip(ρ_i)·A_i) with the sequence ratio
// ρ_i = exp(Σ_t now − Σ_t old).
TEST(OnlineTrainerWiringTest, RlooKlInTheRewardLeaveOneOutAndSequenceRatioByHand) {
  Rig s({1.0f, 0.0f, 0.5f, 0.25f});
  const double beta = 0.1, epsilon = 0.2;
  auto trainer = testing::CreateBuiltin<Trainer>("rloo", {{"num_generations", std::int64_t{2}}, {"beta", beta},
                                                          {"num_iterations", std::int64_t{2}}});
  ASSERT_TRUE((*trainer)->Setup(TrainerContext{s.policy.get(), s.reference.get(), nullptr}).ok());
  double old_sum[4], reward[4];
  for (size_t i = 0; i < 4; ++i) {
    old_sum[i] = Sum(TokenLogps(*s.policy, s.rollouts[i].prompt_ids, s.rollouts[i].token_ids));
    reward[i] = s.table.total[i] - beta * (old_sum[i] - Sum(TokenLogps(*s.reference, s.rollouts[i].prompt_ids, s.rollouts[i].token_ids)));
  }
  double advantage[4];
  for (size_t i = 0; i < 4; ++i) advantage[i] = reward[i] - reward[i ^ 1];
  auto expected = [&](const double* now_sum) {
    double total = 0;
    for (size_t i = 0; i < 4; ++i) {
      const double ratio = std::exp(now_sum[i] - old_sum[i]);
      const double clip = std::min(std::max(ratio, 1 - epsilon), 1 + epsilon);
      total += -std::min(ratio * advantage[i], clip * advantage[i]);
    }
    return total / 4;
  };
  auto first = (*trainer)->Step(s.Input(0));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_NEAR(first->loss.item<double>(), expected(old_sum), 1e-5);
  s.Perturb(0.05);
  double now_sum[4];
  for (size_t i = 0; i < 4; ++i) now_sum[i] = Sum(TokenLogps(*s.policy, s.rollouts[i].prompt_ids, s.rollouts[i].token_ids));
  auto second = (*trainer)->Step(s.Input(1));
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_NEAR(second->loss.item<double>(), expected(now_sum), 1e-5);
  EXPECT_GT(std::abs(second->loss.item<double>() - first->loss.item<double>()), 1e-4) << "the reuse must see the moved policy";
}

// Online DPO: in each prompt's pair the completion with the higher reward is
// chosen; loss = mean −logσ(β·((π_c − ref_c) − (π_r − ref_r))) on summed log-probs.
TEST(OnlineTrainerWiringTest, OnlineDpoPicksTheBetterSampleAndAppliesDpoByHand) {
  Rig s({0.0f, 1.0f, 3.0f, 2.0f});  // prompt 0: the second wins; prompt 1: the first
  const double beta = 0.5;
  auto trainer = testing::CreateBuiltin<Trainer>("online_dpo", {{"beta", beta}, {"temperature", 1.0}});
  ASSERT_TRUE((*trainer)->Setup(TrainerContext{s.policy.get(), s.reference.get(), nullptr}).ok());
  double margin[4];
  for (size_t i = 0; i < 4; ++i) {
    margin[i] = Sum(TokenLogps(*s.policy, s.rollouts[i].prompt_ids, s.rollouts[i].token_ids)) -
                Sum(TokenLogps(*s.reference, s.rollouts[i].prompt_ids, s.rollouts[i].token_ids));
  }
  auto log_sigmoid = [](double x) { return -std::log1p(std::exp(-x)); };
  const double expected = (-log_sigmoid(beta * (margin[1] - margin[0])) - log_sigmoid(beta * (margin[2] - margin[3]))) / 2;
  auto out = (*trainer)->Step(s.Input(0));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_NEAR(out->loss.item<double>(), expected, 1e-5);
  EXPECT_NEAR(out->metrics.at("objective/scores_margin"), 1.0, 1e-6);
}

// PPO (k1 KL, kl_coef 0.1, γ = 1, λ = 0.95, no reward whitening), by hand:
//   r_t = −kl_coef·(old_t − ref_t), plus the score at the last token;
//   δ_t = r_t + γ·V_{t+1} − V_t (V past the end = 0), A_t = δ_t + γλ·A_{t+1};
//   returns = A + V; advantages whitened over all completion tokens (unbiased var);
//   pg = mean max(−Â·ρ, −Â·clip(ρ, 1 ± ε)), vf = ½·mean max((V − ret)², (clip(V, V_old ± ε_v) − ret)²);
//   loss = pg + vf_coef·vf; V_t = v_head · h_t with h_t the hidden state that predicts token t.
// Checked at the generation's first step and at a reuse step after the policy moved.
TEST(OnlineTrainerWiringTest, PpoRewardsGaeWhiteningAndClippedLossesByHand) {
  Rig s({1.0f, -0.5f, 0.25f, 2.0f});
  const double kl_coef = 0.1, gamma = 1.0, lam = 0.95, cliprange = 0.2, cliprange_value = 0.2, vf_coef = 0.1;
  auto trainer = testing::CreateBuiltin<Trainer>(
      "ppo", {{"num_generations", std::int64_t{2}}, {"num_ppo_epochs", std::int64_t{2}}, {"kl_coef", kl_coef},
              {"gamma", gamma}, {"lam", lam}, {"vf_coef", vf_coef}, {"temperature", 1.0}});
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  ASSERT_TRUE((*trainer)->Setup(TrainerContext{s.policy.get(), s.reference.get(), nullptr}).ok());
  at::Tensor v_weight, v_bias;
  for (auto& [name, t] : (*trainer)->TrainerParameters()) (name == "v_head.weight" ? v_weight : v_bias) = t;
  // Per sequence alone: token log-probs and values.
  auto values_of = [&](const Rollout& r) {
    c10::NoGradGuard no_grad;
    std::vector<std::int64_t> ids = r.prompt_ids;
    ids.insert(ids.end(), r.token_ids.begin(), r.token_ids.end());
    const auto len = static_cast<std::int64_t>(ids.size());
    const at::Tensor h = s.policy->Hidden(at::tensor(ids, at::kLong).unsqueeze(0), at::arange(len, at::kLong).unsqueeze(0),
                                          at::Tensor(), nullptr)[0];
    std::vector<double> v;
    for (size_t t = 0; t < r.token_ids.size(); ++t) {
      v.push_back(((h[static_cast<std::int64_t>(r.prompt_ids.size() + t) - 1] * v_weight[0]).sum() + v_bias[0]).item<double>());
    }
    return v;
  };
  std::vector<std::vector<double>> old(4), old_values(4), advantages(4), returns(4);
  std::vector<double> flat;
  for (size_t i = 0; i < 4; ++i) {
    const Rollout& r = s.rollouts[i];
    old[i] = TokenLogps(*s.policy, r.prompt_ids, r.token_ids);
    const std::vector<double> ref = TokenLogps(*s.reference, r.prompt_ids, r.token_ids);
    old_values[i] = values_of(r);
    const size_t n = r.token_ids.size();
    std::vector<double> reward(n);
    for (size_t t = 0; t < n; ++t) reward[t] = -kl_coef * (old[i][t] - ref[t]);
    reward[n - 1] += s.table.total[i];
    advantages[i].assign(n, 0.0);
    double next_a = 0;
    for (size_t t = n; t-- > 0;) {
      const double next_v = t + 1 < n ? old_values[i][t + 1] : 0.0;
      next_a = reward[t] + gamma * next_v - old_values[i][t] + gamma * lam * next_a;
      advantages[i][t] = next_a;
    }
    for (size_t t = 0; t < n; ++t) {
      returns[i].push_back(advantages[i][t] + old_values[i][t]);
      flat.push_back(advantages[i][t]);
    }
  }
  double mean = 0, var = 0;
  for (double a : flat) mean += a / static_cast<double>(flat.size());
  for (double a : flat) var += (a - mean) * (a - mean) / static_cast<double>(flat.size() - 1);
  auto expected = [&](const std::vector<std::vector<double>>& now, const std::vector<std::vector<double>>& values) {
    double pg = 0, vf = 0, tokens = 0;
    for (size_t i = 0; i < 4; ++i) {
      for (size_t t = 0; t < now[i].size(); ++t) {
        const double a = (advantages[i][t] - mean) / std::sqrt(var + 1e-8);
        const double ratio = std::exp(now[i][t] - old[i][t]);
        pg += std::max(-a * ratio, -a * std::min(std::max(ratio, 1 - cliprange), 1 + cliprange));
        const double v = values[i][t], v_old = old_values[i][t];
        const double v_clipped = std::min(std::max(v, v_old - cliprange_value), v_old + cliprange_value);
        vf += std::max(std::pow(v - returns[i][t], 2), std::pow(v_clipped - returns[i][t], 2));
        tokens += 1;
      }
    }
    return pg / tokens + vf_coef * 0.5 * vf / tokens;
  };
  auto first = (*trainer)->Step(s.Input(0));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_NEAR(first->loss.item<double>(), expected(old, old_values), 1e-4);
  s.Perturb(0.05);
  std::vector<std::vector<double>> now(4), now_values(4);
  for (size_t i = 0; i < 4; ++i) {
    now[i] = TokenLogps(*s.policy, s.rollouts[i].prompt_ids, s.rollouts[i].token_ids);
    now_values[i] = values_of(s.rollouts[i]);
  }
  auto second = (*trainer)->Step(s.Input(1));
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_NEAR(second->loss.item<double>(), expected(now, now_values), 1e-4);
  EXPECT_GT(std::abs(second->loss.item<double>() - first->loss.item<double>()), 1e-4);
}

// DAPO divides by the completion tokens of the whole generation batch: with two
// micro-batches of unequal token counts (6 and 8 tokens) the engine's mean of the
// two micro-batch losses equals the loss of one micro-batch holding all four
// rollouts (bnpo would give (Σa/6 + Σb/8)/2 instead of (Σa + Σb)/14).
TEST(OnlineTrainerWiringTest, DapoWithAccumulationEqualsOneBigMicroBatch) {
  Rig s({1.0f, 0.0f, 0.0f, 2.0f});
  auto make = [&] {
    auto t = testing::CreateBuiltin<Trainer>("grpo", {{"num_generations", std::int64_t{2}}, {"loss_type", std::string("dapo")}});
    EXPECT_TRUE(t.ok());
    EXPECT_TRUE((*t)->Setup(TrainerContext{s.policy.get(), nullptr, nullptr}).ok());
    return std::move(*t);
  };
  auto big = make();
  const double whole = (*big).Step(s.Input(0))->loss.item<double>();
  auto accumulated = make();
  const absl::Span<const Rollout> all = s.rollouts;
  std::vector<absl::Span<const Rollout>> halves = {all.subspan(0, 2), all.subspan(2, 2)};
  double sum = 0;
  for (std::int64_t micro = 0; micro < 2; ++micro) {
    StepInput in = s.Input(0);
    in.micro_batch = micro;
    in.rollouts = halves[static_cast<size_t>(micro)];
    in.generation = halves;
    in.batch = absl::MakeSpan(s.example_ptrs).subspan(static_cast<size_t>(micro), 1);
    RewardTable table;
    table.total = {s.table.total[static_cast<size_t>(2 * micro)], s.table.total[static_cast<size_t>(2 * micro + 1)]};
    in.rewards = StepRewards(&table);
    auto out = accumulated->Step(in);
    ASSERT_TRUE(out.ok()) << out.status();
    sum += out->loss.item<double>() / 2;  // the engine's loss / gradient_accumulation_steps
  }
  EXPECT_NEAR(sum, whole, 1e-6);
  EXPECT_GT(std::abs(whole), 1e-4) << "a degenerate check";
}

}  // namespace
}  // namespace posttrain

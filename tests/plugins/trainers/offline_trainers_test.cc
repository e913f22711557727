// sft, dpo and reward trainers on a tiny random model, through the real loader.
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/GradMode.h>
#include <tuple>

#include "posttrain/generation/logprobs.h"
#include "posttrain/losses/preference_losses.h"
#include "posttrain/model/causal_lm.h"
#include "posttrain/model/sequence_classifier.h"
#include "posttrain/tokenizer/tokenizer.h"
#include "test_support.h"

namespace posttrain {
namespace {

ModelConfig Tiny() { return testing::TinyTrainerModelConfig(); }

std::vector<std::int64_t> Ids(std::initializer_list<std::int64_t> ids) { return ids; }

struct Batch {
  std::vector<Example> examples;
  std::vector<TokenizedExample> tokens;
  std::vector<const Example*> example_ptrs;
  std::vector<const TokenizedExample*> token_ptrs;
  StepInput Input(bool training = true) {
    example_ptrs.clear();
    token_ptrs.clear();
    for (auto& e : examples) example_ptrs.push_back(&e);
    for (auto& t : tokens) token_ptrs.push_back(&t);
    StepInput in;
    in.step = 1;
    in.training = training;
    in.batch = example_ptrs;
    in.tokens = token_ptrs;
    return in;
  }
};

Batch SftBatch() {
  Batch b;
  b.examples.resize(3);
  b.tokens.resize(3);
  b.tokens[0].prompt_ids = Ids({1, 5, 6});
  b.tokens[0].completion_ids = Ids({7, 8, 9, 2});
  b.tokens[1].prompt_ids = Ids({1, 10});
  b.tokens[1].completion_ids = Ids({11, 12, 2});
  b.tokens[2].prompt_ids = Ids({1, 20, 21, 22, 23});
  b.tokens[2].completion_ids = Ids({24, 2});
  return b;
}

TEST(SftTrainerTest, LossIsTheMeanCompletionNllAndPackingChangesNothing) {
  auto model = CausalLM::Random(Tiny(), at::kFloat, 1);
  ASSERT_TRUE(model.ok());
  TrainerContext ctx{model->get(), nullptr, nullptr};
  Batch b = SftBatch();
  // Reference: −Σ log p(completion) / #completion tokens, via CompletionLogprobs.
  std::vector<std::vector<std::int64_t>> p, c;
  for (auto& t : b.tokens) {
    p.push_back(t.prompt_ids);
    c.push_back(t.completion_ids);
  }
  CompletionBatch cb = MakeCompletionBatch(p, c, at::kCPU);
  const double expected = -(CompletionLogprobs(**model, cb, 1.0).sum() / cb.completion_mask.sum()).item<double>();
  for (bool packing : {false, true}) {
    auto trainer = testing::CreateBuiltin<Trainer>("sft", {{"packing", packing}, {"max_length", std::int64_t{12}}});
    ASSERT_TRUE(trainer.ok()) << trainer.status();
    ASSERT_TRUE((*trainer)->Setup(ctx).ok());
    auto out = (*trainer)->Step(b.Input());
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_NEAR(out->loss.item<double>(), expected, 1e-5) << "packing=" << packing;
    EXPECT_EQ(out->metrics.at("num_tokens"), 9.0);
    EXPECT_EQ((*trainer)->Needs().pack_to_length, packing ? 12 : 0) << "the engine packs the dataset";
  }
  // The same sequences as one packed row (what the engine hands a packing trainer):
  // the same loss, each sequence still attending only to itself.
  TokenizedExample row;
  row.packed = b.tokens;
  Batch packed_batch;
  packed_batch.examples.resize(1);
  packed_batch.tokens = {row};
  auto trainer = testing::CreateBuiltin<Trainer>("sft", {{"packing", true}, {"max_length", std::int64_t{12}}});
  ASSERT_TRUE((*trainer)->Setup(ctx).ok());
  auto out = (*trainer)->Step(packed_batch.Input());
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_NEAR(out->loss.item<double>(), expected, 1e-5);
  EXPECT_EQ(out->metrics.at("num_tokens"), 9.0);
}

Batch PreferenceBatch() {
  Batch b;
  b.examples.resize(2);
  b.tokens.resize(2);
  for (int i = 0; i < 2; ++i) b.tokens[i].index = i;
  b.tokens[0].prompt_ids = Ids({1, 5, 6});
  b.tokens[0].chosen_ids = Ids({7, 8, 2});
  b.tokens[0].rejected_ids = Ids({9, 2});
  b.tokens[1].prompt_ids = Ids({1, 30});
  b.tokens[1].chosen_ids = Ids({31, 2});
  b.tokens[1].rejected_ids = Ids({32, 33, 34, 2});
  return b;
}

TEST(DpoTrainerTest, AtInitialisationTheLossIsLog2AndPrecomputingChangesNothing) {
  auto model = CausalLM::Random(Tiny(), at::kFloat, 2);
  std::unique_ptr<CausalLM> reference = (*model)->Clone();
  for (auto& [name, p] : (*model)->named_parameters()) p.set_requires_grad(true);  // as the engine does
  TrainerContext ctx{model->get(), reference.get(), nullptr};
  Batch b = PreferenceBatch();
  for (bool precompute : {false, true}) {
    auto trainer = testing::CreateBuiltin<Trainer>("dpo", {{"precompute_ref_log_probs", precompute}});
    ASSERT_TRUE(trainer.ok());
    EXPECT_TRUE((*trainer)->Needs().reference);
    ASSERT_TRUE((*trainer)->Setup(ctx).ok());
    ASSERT_TRUE((*trainer)->Prepare(b.tokens, {}).ok());
    auto out = (*trainer)->Step(b.Input());
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_NEAR(out->loss.item<double>(), std::log(2.0), 1e-6);
    EXPECT_NEAR(out->metrics.at("rewards/margins"), 0.0, 1e-6);
    EXPECT_TRUE(out->loss.requires_grad());
  }
}

TEST(DpoTrainerTest, ATrainingStepRaisesTheChosenMargin) {
  auto model = CausalLM::Random(Tiny(), at::kFloat, 3);
  std::unique_ptr<CausalLM> reference = (*model)->Clone();
  for (auto& [name, p] : (*model)->named_parameters()) p.set_requires_grad(true);
  auto trainer = testing::CreateBuiltin<Trainer>("dpo", {{"beta", 0.5}});
  ASSERT_TRUE((*trainer)->Setup(TrainerContext{model->get(), reference.get(), nullptr}).ok());
  Batch b = PreferenceBatch();
  auto before = (*trainer)->Step(b.Input());
  before->loss.backward();
  {
    c10::NoGradGuard no_grad;
    for (auto& [name, p] : (*model)->named_parameters()) {
      if (p.grad().defined()) p.sub_(0.5 * p.grad());
    }
  }
  auto after = (*trainer)->Step(b.Input());
  EXPECT_LT(after->loss.item<double>(), before->loss.item<double>());
  EXPECT_GT(after->metrics.at("rewards/margins"), 0.0);
}

TEST(RewardTrainerTest, ScoresTheLastTokenAndSavesAsASequenceClassifier) {
  auto model = CausalLM::Random(Tiny(), at::kFloat, 4);
  auto trainer = testing::CreateBuiltin<Trainer>("reward", {});
  ASSERT_TRUE((*trainer)->Setup(TrainerContext{model->get(), nullptr, nullptr}).ok());
  auto extras = (*trainer)->ExtraParameters();
  ASSERT_EQ(extras.size(), 1u);
  EXPECT_EQ(extras[0].first, "score.weight");
  EXPECT_EQ(extras[0].second.sizes(), at::IntArrayRef({1, 16}));
  EXPECT_EQ((*trainer)->SavedArchitecture(), (std::pair<std::string, std::int64_t>{"LlamaForSequenceClassification", 1}));
  Batch b = PreferenceBatch();
  auto out = (*trainer)->Step(b.Input());
  ASSERT_TRUE(out.ok()) << out.status();
  // By hand, one sequence at a time (no padding, no batching): r = score · h, h the
  // backbone's final hidden state at the sequence's last token; the Bradley–Terry
  // loss is mean(−logσ(r_c − r_r)).
  const at::Tensor score = extras[0].second.detach();
  auto reward = [&](const std::vector<std::int64_t>& prompt, const std::vector<std::int64_t>& completion) {
    std::vector<std::int64_t> ids = prompt;
    ids.insert(ids.end(), completion.begin(), completion.end());
    const auto t = static_cast<std::int64_t>(ids.size());
    at::Tensor hidden = (*model)->Hidden(at::tensor(ids, at::kLong).unsqueeze(0), at::arange(t, at::kLong).unsqueeze(0),
                                         at::Tensor(), nullptr);
    return (hidden[0][t - 1] * score[0]).sum().item<double>();
  };
  double loss = 0, chosen = 0, rejected = 0;
  for (const TokenizedExample& t : b.tokens) {
    const double rc = reward(t.prompt_ids, t.chosen_ids), rr = reward(t.prompt_ids, t.rejected_ids);
    loss += std::log1p(std::exp(-(rc - rr))) / 2;
    chosen += rc / 2;
    rejected += rr / 2;
  }
  EXPECT_NEAR(out->metrics.at("rewards/chosen"), chosen, 1e-5);
  EXPECT_NEAR(out->metrics.at("rewards/rejected"), rejected, 1e-5);
  EXPECT_NEAR(out->loss.item<double>(), loss, 1e-5);
  EXPECT_GT(std::abs(chosen - rejected), 1e-4) << "a degenerate check: both rewards equal";
}

// With precompute_ref_log_probs the reference's log-probs of the training and the
// evaluation pairs are computed in Prepare, after which the engine frees the
// reference: the trainer asks for that, and its losses then equal those of a
// trainer that runs the reference every step (the policy differs from the
// reference here, so the reference's values matter).
TEST(DpoTrainerTest, PrecomputingReleasesTheReferenceForTrainingAndEvaluation) {
  auto model = CausalLM::Random(Tiny(), at::kFloat, 12);
  auto reference = CausalLM::Random(Tiny(), at::kFloat, 13);
  Batch train = PreferenceBatch(), eval = PreferenceBatch();
  std::swap(eval.tokens[0].chosen_ids, eval.tokens[0].rejected_ids);
  auto plain = testing::CreateBuiltin<Trainer>("dpo", {});
  EXPECT_FALSE((*plain)->ReleasesReference());
  ASSERT_TRUE((*plain)->Setup(TrainerContext{model->get(), reference->get(), nullptr}).ok());
  const double train_loss = (*plain)->Step(train.Input())->loss.item<double>();
  const double eval_loss = (*plain)->Step(eval.Input(/*training=*/false))->loss.item<double>();
  EXPECT_GT(std::abs(train_loss - std::log(2.0)), 1e-4) << "policy and reference should differ";

  auto precomputed = testing::CreateBuiltin<Trainer>("dpo", {{"precompute_ref_log_probs", true}});
  EXPECT_TRUE((*precomputed)->ReleasesReference());
  ASSERT_TRUE((*precomputed)->Setup(TrainerContext{model->get(), reference->get(), nullptr}).ok());
  ASSERT_TRUE((*precomputed)->Prepare(train.tokens, eval.tokens).ok());
  reference->reset();  // as the engine does: any later use would crash
  EXPECT_NEAR((*precomputed)->Step(train.Input())->loss.item<double>(), train_loss, 1e-6);
  EXPECT_NEAR((*precomputed)->Step(eval.Input(false))->loss.item<double>(), eval_loss, 1e-6);
}

TEST(OfflineTrainersTest, PreferenceTrainersRefuseOtherData) {
  auto model = CausalLM::Random(Tiny(), at::kFloat, 5);
  auto ref = (*model)->Clone();
  Batch b = SftBatch();
  for (const char* name : {"dpo", "reward"}) {
    auto trainer = testing::CreateBuiltin<Trainer>(name, {});
    ASSERT_TRUE((*trainer)->Setup(TrainerContext{model->get(), ref.get(), nullptr}).ok());
    absl::Status s = (*trainer)->Step(b.Input()).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("preference data")) << name;
  }
}

}  // namespace
}  // namespace posttrain

namespace posttrain {
namespace {

TEST(ReferenceFreeTrainersTest, OrpoAndCpoLossesFromThePolicyAlone) {
  auto model = CausalLM::Random(Tiny(), at::kFloat, 6);
  for (auto& [name, p] : (*model)->named_parameters()) p.set_requires_grad(true);
  Batch b = PreferenceBatch();
  std::vector<const TokenizedExample*> tokens;
  for (auto& t : b.tokens) tokens.push_back(&t);
  // Hand-assembled expectations from the pair log-probs.
  std::vector<std::vector<std::int64_t>> p, c;
  for (auto& t : b.tokens) { p.push_back(t.prompt_ids); c.push_back(t.chosen_ids); }
  for (auto& t : b.tokens) { p.push_back(t.prompt_ids); c.push_back(t.rejected_ids); }
  CompletionBatch cb = MakeCompletionBatch(p, c, at::kCPU);
  at::Tensor sums = CompletionLogprobs(**model, cb, 1.0).sum(1).detach(), lens = cb.completion_mask.sum(1);
  at::Tensor pc = sums.narrow(0, 0, 2), pr = sums.narrow(0, 2, 2);
  const double nll = (-pc.sum() / lens.narrow(0, 0, 2).sum()).item<double>();
  {
    auto trainer = testing::CreateBuiltin<Trainer>("orpo", {{"beta", 0.25}});
    ASSERT_TRUE((*trainer)->Setup(TrainerContext{model->get(), nullptr, nullptr}).ok());
    auto out = (*trainer)->Step(b.Input());
    ASSERT_TRUE(out.ok()) << out.status();
    at::Tensor ac = pc / lens.narrow(0, 0, 2), ar = pr / lens.narrow(0, 2, 2);
    at::Tensor log_odds = (ac - ar) - (at::log1p(-at::exp(ac)) - at::log1p(-at::exp(ar)));
    EXPECT_NEAR(out->loss.item<double>(), nll - 0.25 * at::log_sigmoid(log_odds).mean().item<double>(), 1e-5);
    EXPECT_NEAR(out->metrics.at("nll_loss"), nll, 1e-5);
  }
  {
    auto trainer = testing::CreateBuiltin<Trainer>("cpo", {{"beta", 0.1}, {"cpo_alpha", 0.5}});
    ASSERT_TRUE((*trainer)->Setup(TrainerContext{model->get(), nullptr, nullptr}).ok());
    auto out = (*trainer)->Step(b.Input());
    ASSERT_TRUE(out.ok());
    EXPECT_NEAR(out->loss.item<double>(), -at::log_sigmoid(0.1 * (pc - pr)).mean().item<double>() + 0.5 * nll, 1e-5);
  }
  {
    auto trainer = testing::CreateBuiltin<Trainer>("cpo", {{"loss_type", std::string("simpo")}, {"cpo_alpha", 0.0},
                                                           {"beta", 2.0}, {"simpo_gamma", 1.0}});
    ASSERT_TRUE((*trainer)->Setup(TrainerContext{model->get(), nullptr, nullptr}).ok());
    auto out = (*trainer)->Step(b.Input());
    at::Tensor h = pc / lens.narrow(0, 0, 2) - pr / lens.narrow(0, 2, 2) - 1.0 / 2.0;
    EXPECT_NEAR(out->loss.item<double>(), -at::log_sigmoid(2.0 * h).mean().item<double>(), 1e-5);
  }
}

TEST(KtoTrainerTest, AtInitialisationEveryLossIsOneHalf) {
  // Policy = reference: ρ = 0 and z = 0, so each loss is 1 − σ(0) = 0.5.
  auto model = CausalLM::Random(Tiny(), at::kFloat, 7);
  auto reference = (*model)->Clone();
  for (auto& [name, p] : (*model)->named_parameters()) p.set_requires_grad(true);
  auto trainer = testing::CreateBuiltin<Trainer>("kto", {{"undesirable_weight", 2.0}});
  ASSERT_TRUE((*trainer)->Setup(TrainerContext{model->get(), reference.get(), nullptr}).ok());
  Batch b = PreferenceBatch();  // unpaired on the fly: 2 desirable, 2 undesirable
  auto out = (*trainer)->Step(b.Input());
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_NEAR(out->loss.item<double>(), (2 * 0.5 + 2 * 2.0 * 0.5) / 4, 1e-6);
  EXPECT_NEAR(out->metrics.at("kl"), 0.0, 1e-6);
  // Unpaired data with labels works too.
  Batch u;
  u.examples.resize(2);
  u.tokens.resize(2);
  u.examples[0].label = true;
  u.examples[1].label = false;
  u.tokens[0].prompt_ids = Ids({1, 4});
  u.tokens[0].completion_ids = Ids({5, 2});
  u.tokens[1].prompt_ids = Ids({1, 6});
  u.tokens[1].completion_ids = Ids({7, 8, 2});
  out = (*trainer)->Step(u.Input());
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_NEAR(out->loss.item<double>(), (0.5 + 2.0 * 0.5) / 2, 1e-6);
}

// The KL point's mismatched rows never pair a prompt with a completion of its own
// example: paired data unpaired on the fly give rows (x_i, y_i^c), (x_i, y_i^r).
TEST(KtoTrainerTest, MismatchedRowsNeverShareTheExample) {
  EXPECT_EQ(KtoMismatchedRows({0, 0, 1, 1, 2, 2}), (std::vector<std::size_t>{4, 5, 0, 1, 2, 3}));
  EXPECT_EQ(KtoMismatchedRows({0, 1, 2}), (std::vector<std::size_t>{2, 0, 1}));
  EXPECT_EQ(KtoMismatchedRows({0, 0, 1, 2, 2}).size(), 5u);
  for (const auto& rows : {std::vector<std::int64_t>{0, 0, 1, 2, 2}, std::vector<std::int64_t>{0, 1, 1, 1, 2, 2, 3}}) {
    std::vector<std::size_t> m = KtoMismatchedRows(rows);
    for (std::size_t i = 0; i < m.size(); ++i) EXPECT_NE(rows[i], rows[m[i]]);
  }
  EXPECT_TRUE(KtoMismatchedRows({0, 0}).empty());
}

// With a policy that differs from the reference, the logged z equals
// max(0, mean over rows of log π(y_j|x_i) − log π_ref(y_j|x_i)) with every y_j from
// the other example (by hand: rows c0 r0 c1 r1, prompts x0 x0 x1 x1 take c1 r1 c0 r0).
TEST(KtoTrainerTest, TheKlPointUsesOtherExamplesCompletions) {
  Batch b = PreferenceBatch();
  const auto& t0 = b.tokens[0];
  const auto& t1 = b.tokens[1];
  auto z = [&](const CausalLM& policy, const CausalLM& reference, const std::vector<std::vector<std::int64_t>>& prompts,
               const std::vector<std::vector<std::int64_t>>& completions) {
    CompletionBatch cb = MakeCompletionBatch(prompts, completions, at::kCPU);
    return (CompletionLogprobs(policy, cb, 1.0).sum(1) - CompletionLogprobs(reference, cb, 1.0).sum(1)).mean().item<double>();
  };
  const std::vector<std::vector<std::int64_t>> prompts = {t0.prompt_ids, t0.prompt_ids, t1.prompt_ids, t1.prompt_ids};
  // Pick a perturbation under which z > 0 and the same-example pairing (TRL's
  // rotation by one of the unpaired rows) would give another value.
  for (std::uint64_t seed = 20; seed < 60; ++seed) {
    auto reference = CausalLM::Random(Tiny(), at::kFloat, 8);
    auto policy = (*reference)->Clone();
    {
      c10::NoGradGuard no_grad;
      at::Generator gen = at::detail::createCPUGenerator(seed);
      for (auto& [name, p] : policy->named_parameters()) p.add_(at::normal(0.0, 0.3, p.sizes(), gen));
    }
    const double expected = z(*policy, **reference, prompts, {t1.chosen_ids, t1.rejected_ids, t0.chosen_ids, t0.rejected_ids});
    const double by_one = z(*policy, **reference, prompts, {t1.rejected_ids, t0.chosen_ids, t0.rejected_ids, t1.chosen_ids});
    if (expected < 0.05 || std::abs(expected - by_one) < 1e-3) continue;
    auto trainer = testing::CreateBuiltin<Trainer>("kto", {});
    ASSERT_TRUE((*trainer)->Setup(TrainerContext{policy.get(), reference->get(), nullptr}).ok());
    auto out = (*trainer)->Step(b.Input());
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_NEAR(out->metrics.at("kl"), expected, 1e-5);
    return;
  }
  FAIL() << "no perturbation gave a positive, discriminating KL point";
}

// Where transformers has no classifier to load what the reward or PRM trainer would
// save (Cohere, Cohere 2, GLM-4.5, DBRX and OLMo have neither), Setup refuses, naming
// why; BLOOM, Phi and Falcon reward models save as their *ForSequenceClassification.
TEST(RewardTrainerTest, FamiliesWithoutATransformersClassifierAreRefused) {
  const nlohmann::json cohere = {{"model_type", "cohere"}, {"vocab_size", 32}, {"hidden_size", 16},
                                 {"intermediate_size", 32}, {"num_hidden_layers", 1}, {"num_attention_heads", 2}};
  nlohmann::json cohere2 = cohere;
  cohere2["model_type"] = "cohere2";
  const nlohmann::json glm4_moe = {{"model_type", "glm4_moe"}, {"vocab_size", 32}, {"hidden_size", 16},
                                   {"intermediate_size", 32}, {"num_hidden_layers", 2}, {"num_attention_heads", 2},
                                   {"n_routed_experts", 4}, {"num_experts_per_tok", 2}, {"moe_intermediate_size", 8}};
  const nlohmann::json bloom = {{"model_type", "bloom"}, {"vocab_size", 32}, {"hidden_size", 16}, {"n_layer", 1}, {"n_head", 2}};
  const nlohmann::json dbrx = {{"model_type", "dbrx"}, {"vocab_size", 32}, {"d_model", 16}, {"n_heads", 2}, {"n_layers", 1},
                               {"ffn_config", {{"ffn_hidden_size", 8}}}};
  const nlohmann::json olmo = {{"model_type", "olmo"}, {"vocab_size", 32}, {"hidden_size", 16}, {"intermediate_size", 32},
                               {"num_hidden_layers", 1}, {"num_attention_heads", 2}};
  const nlohmann::json falcon = {{"model_type", "falcon"}, {"vocab_size", 32}, {"hidden_size", 16}, {"num_hidden_layers", 1},
                                 {"num_attention_heads", 2}};
  const nlohmann::json phi = {{"model_type", "phi"}, {"vocab_size", 32}, {"hidden_size", 16}, {"intermediate_size", 32},
                              {"num_hidden_layers", 1}, {"num_attention_heads", 2}};
  for (const auto& [json, trainer_name, message] :
       {std::tuple{cohere, "reward", "transformers has no CohereForSequenceClassification"},
        std::tuple{cohere, "prm", "transformers has no CohereForTokenClassification"},
        std::tuple{cohere2, "reward", "transformers has no Cohere2ForSequenceClassification"},
        std::tuple{cohere2, "prm", "transformers has no Cohere2ForTokenClassification"},
        std::tuple{glm4_moe, "reward", "transformers has no Glm4MoeForSequenceClassification"},
        std::tuple{glm4_moe, "prm", "transformers has no Glm4MoeForTokenClassification"},
        std::tuple{dbrx, "reward", "transformers has no DbrxForSequenceClassification"},
        std::tuple{olmo, "prm", "transformers has no OlmoForTokenClassification"}}) {
    SCOPED_TRACE(trainer_name);
    auto config = ModelConfig::FromJson(json);
    ASSERT_TRUE(config.ok()) << config.status();
    auto model = CausalLM::Random(*config, at::kFloat, 1);
    ASSERT_TRUE(model.ok());
    auto trainer = testing::CreateBuiltin<Trainer>(trainer_name, {});
    ASSERT_TRUE(trainer.ok()) << trainer.status();
    const absl::Status setup = (*trainer)->Setup(TrainerContext{model->get(), nullptr, nullptr});
    EXPECT_EQ(setup.code(), absl::StatusCode::kUnimplemented);
    EXPECT_THAT(std::string(setup.message()), ::testing::HasSubstr(message));
  }
  auto model = CausalLM::Random(*ModelConfig::FromJson(bloom), at::kFloat, 1);
  ASSERT_TRUE(model.ok());
  auto reward = testing::CreateBuiltin<Trainer>("reward", {});
  ASSERT_TRUE(reward.ok()) << reward.status();
  ASSERT_TRUE((*reward)->Setup(TrainerContext{model->get(), nullptr, nullptr}).ok());
  EXPECT_EQ((*reward)->SavedArchitecture().first, "BloomForSequenceClassification");
  auto phi_model = CausalLM::Random(*ModelConfig::FromJson(phi), at::kFloat, 1);
  ASSERT_TRUE(phi_model.ok());
  auto phi_reward = testing::CreateBuiltin<Trainer>("reward", {});
  ASSERT_TRUE(phi_reward.ok()) << phi_reward.status();
  ASSERT_TRUE((*phi_reward)->Setup(TrainerContext{phi_model->get(), nullptr, nullptr}).ok());
  EXPECT_EQ((*phi_reward)->SavedArchitecture().first, "PhiForSequenceClassification");
  auto falcon_model = CausalLM::Random(*ModelConfig::FromJson(falcon), at::kFloat, 1);
  ASSERT_TRUE(falcon_model.ok());
  auto falcon_reward = testing::CreateBuiltin<Trainer>("reward", {});
  ASSERT_TRUE(falcon_reward.ok()) << falcon_reward.status();
  ASSERT_TRUE((*falcon_reward)->Setup(TrainerContext{falcon_model->get(), nullptr, nullptr}).ok());
  EXPECT_EQ((*falcon_reward)->SavedArchitecture().first, "FalconForSequenceClassification");
  // Falcon's token classifier calls its head `classifier` (FalconForTokenClassification).
  const ModelConfig falcon_config = *ModelConfig::FromJson(falcon);
  EXPECT_EQ(NewClassifierHead(falcon_config, ClassifierTask::kToken, 2, 1, at::TensorOptions().dtype(at::kFloat)).name, "classifier");
  EXPECT_EQ(NewClassifierHead(falcon_config, ClassifierTask::kSequence, 1, 1, at::TensorOptions().dtype(at::kFloat)).name, "score");
}

// The PRM trainer's head is what each family's transformers *ForTokenClassification
// holds: `score` with a bias (GenericForTokenClassification: Llama, and Phi since
// transformers 4.48), `classifier` with a bias (GPT-2, GPT-NeoX, BLOOM); the weight
// N(0, initializer_range²), the bias zero. The reward trainer's is `score` without a bias.
TEST(PrmTrainerTest, HeadsAreNamedAndBiasedAsEachFamilysTokenClassifier) {
  auto tokenizer = LoadTokenizer(testing::Stories260KDir());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const nlohmann::json bloom = {{"model_type", "bloom"}, {"vocab_size", 32}, {"hidden_size", 16}, {"n_layer", 1}, {"n_head", 2}};
  const nlohmann::json phi = {{"model_type", "phi"}, {"vocab_size", 32}, {"hidden_size", 16}, {"intermediate_size", 32},
                              {"num_hidden_layers", 1}, {"num_attention_heads", 2}};
  const nlohmann::json gpt2 = {{"model_type", "gpt2"}, {"vocab_size", 32}, {"n_embd", 16}, {"n_layer", 1}, {"n_head", 2},
                               {"n_positions", 64}};
  const nlohmann::json neox = {{"model_type", "gpt_neox"}, {"vocab_size", 32}, {"hidden_size", 16}, {"intermediate_size", 32},
                               {"num_hidden_layers", 1}, {"num_attention_heads", 2}};
  for (const auto& [json, architecture, head] :
       {std::tuple{nlohmann::json::parse(Tiny().ToJson().dump()), "LlamaForTokenClassification", "score"},
        std::tuple{phi, "PhiForTokenClassification", "score"},
        std::tuple{bloom, "BloomForTokenClassification", "classifier"},
        std::tuple{gpt2, "GPT2ForTokenClassification", "classifier"},
        std::tuple{neox, "GPTNeoXForTokenClassification", "classifier"}}) {
    SCOPED_TRACE(architecture);
    auto config = ModelConfig::FromJson(json);
    ASSERT_TRUE(config.ok()) << config.status();
    auto model = CausalLM::Random(*config, at::kFloat, 1);
    ASSERT_TRUE(model.ok());
    auto trainer = testing::CreateBuiltin<Trainer>("prm", {});
    ASSERT_TRUE(trainer.ok()) << trainer.status();
    ASSERT_TRUE((*trainer)->Setup(TrainerContext{model->get(), nullptr, tokenizer->get()}).ok());
    EXPECT_EQ((*trainer)->SavedArchitecture(), (std::pair<std::string, std::int64_t>{architecture, 2}));
    auto extras = (*trainer)->ExtraParameters();
    ASSERT_EQ(extras.size(), 2u);
    EXPECT_EQ(extras[0].first, std::string(head) + ".weight");
    EXPECT_EQ(extras[0].second.sizes(), at::IntArrayRef({2, 16}));
    EXPECT_GT(extras[0].second.abs().max().item<double>(), 0.0);
    EXPECT_LT(extras[0].second.std().item<double>(), 0.1);  // N(0, 0.02²)
    EXPECT_EQ(extras[1].first, std::string(head) + ".bias");
    EXPECT_TRUE(at::equal(extras[1].second, at::zeros({2})));
  }
}

// The reward trainer goes on from a reward model's own `score` head (a copy), and
// refuses a token classifier's.
TEST(RewardTrainerTest, StartsFromAnExistingRewardModelsHead) {
  auto model = CausalLM::Random(Tiny(), at::kFloat, 4);
  ASSERT_TRUE(model.ok());
  ClassifierHead head;
  head.weight = at::randn({1, 16}, at::kFloat);
  TrainerContext context{model->get(), nullptr, nullptr};
  context.classifier_head = &head;
  auto trainer = testing::CreateBuiltin<Trainer>("reward", {});
  ASSERT_TRUE((*trainer)->Setup(context).ok());
  auto extras = (*trainer)->ExtraParameters();
  ASSERT_EQ(extras.size(), 1u);
  EXPECT_EQ(extras[0].first, "score.weight");
  EXPECT_TRUE(at::equal(extras[0].second, head.weight));
  head.task = ClassifierTask::kToken;
  auto again = testing::CreateBuiltin<Trainer>("reward", {});
  const absl::Status setup = (*again)->Setup(context);
  EXPECT_EQ(setup.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(setup.message()), ::testing::HasSubstr("trains a LlamaForSequenceClassification with num_labels 1"));
}

// A model directory that is already a classifier hands the trainer its head
// (TrainerContext::classifier_head): the trainer starts from a copy of it; with a
// bias b, a step's loss is the cross-entropy of W h + b (by hand at each labelled
// token). A head of the other task, or of another num_labels, is refused by name.
TEST(PrmTrainerTest, StartsFromTheModelsOwnHeadAndAppliesItsBias) {
  auto tokenizer = LoadTokenizer(testing::Stories260KDir());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  ModelConfig config = Tiny();
  config.vocab_size = 512;  // the tokenizer's separator ids
  auto model = CausalLM::Random(config, at::kFloat, 6);
  ASSERT_TRUE(model.ok());
  ClassifierHead head;
  head.task = ClassifierTask::kToken;
  head.weight = at::randn({2, 16}, at::kFloat);
  head.bias = at::tensor({0.7f, -1.3f});
  TrainerContext context{model->get(), nullptr, tokenizer->get()};
  context.classifier_head = &head;
  auto trainer = testing::CreateBuiltin<Trainer>("prm", {});
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  ASSERT_TRUE((*trainer)->Setup(context).ok());
  auto extras = (*trainer)->ExtraParameters();
  ASSERT_EQ(extras.size(), 2u);
  EXPECT_TRUE(at::equal(extras[0].second, head.weight));
  EXPECT_TRUE(at::equal(extras[1].second, head.bias));
  EXPECT_NE(extras[0].second.data_ptr(), head.weight.data_ptr());  // a copy: the trainer's own

  // One example: prompt [1, 2], steps [3, 4] (correct) and [5] (wrong), separator = the
  // tokenizer's "\n" ids; labels at the separators' last tokens.
  const std::vector<std::int64_t> sep = (*tokenizer)->Encode("\n", false);
  Example e;
  e.format = ExampleFormat::kStepwiseSupervision;
  e.step_labels = {true, false};
  TokenizedExample t;
  t.prompt_ids = {1, 2};
  t.step_ids = {{3, 4}, {5}};
  std::vector<std::int64_t> ids = {1, 2, 3, 4};
  ids.insert(ids.end(), sep.begin(), sep.end());
  const std::int64_t first = static_cast<std::int64_t>(ids.size()) - 1;
  ids.push_back(5);
  ids.insert(ids.end(), sep.begin(), sep.end());
  const std::int64_t second = static_cast<std::int64_t>(ids.size()) - 1;
  StepInput input;
  const Example* ep = &e;
  const TokenizedExample* tp = &t;
  input.batch = absl::MakeConstSpan(&ep, 1);
  input.tokens = absl::MakeConstSpan(&tp, 1);
  input.training = true;
  auto out = (*trainer)->Step(input);
  ASSERT_TRUE(out.ok()) << out.status();
  const auto n = static_cast<std::int64_t>(ids.size());
  c10::NoGradGuard no_grad;
  const at::Tensor hidden = (*model)->Hidden(at::tensor(ids).view({1, n}), at::arange(n).view({1, n}), at::Tensor(), nullptr)[0];
  double loss = 0;
  for (const auto& [row, label] : {std::pair{first, 1}, std::pair{second, 0}}) {
    const double l0 = (head.weight[0] * hidden[row]).sum().item<double>() + 0.7;
    const double l1 = (head.weight[1] * hidden[row]).sum().item<double>() - 1.3;
    const double picked = label == 1 ? l1 : l0;
    loss += (std::log(std::exp(l0) + std::exp(l1)) - picked) / 2;
  }
  EXPECT_NEAR(out->loss.item<double>(), loss, 1e-5);

  for (const auto& [task, labels, message] :
       {std::tuple{ClassifierTask::kSequence, 2, "LlamaForTokenClassification with num_labels 2"},
        std::tuple{ClassifierTask::kToken, 3, "num_labels 3"}}) {
    ClassifierHead other;
    other.task = task;
    other.weight = at::zeros({labels, 16});
    TrainerContext wrong{model->get(), nullptr, tokenizer->get()};
    wrong.classifier_head = &other;
    auto again = testing::CreateBuiltin<Trainer>("prm", {});
    const absl::Status setup = (*again)->Setup(wrong);
    EXPECT_EQ(setup.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(setup.message()), ::testing::HasSubstr(message));
  }
}

}  // namespace
}  // namespace posttrain

// sft, dpo and reward trainers on a tiny random model, through the real loader.
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "posttrain/generation/logprobs.h"
#include "posttrain/model/causal_lm.h"
#include "test_support.h"

namespace posttrain {
namespace {

ModelConfig Tiny() {
  ModelConfig c;
  c.vocab_size = 61;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 4;
  c.rms_norm_eps = 1e-5;
  return c;
}

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
  CompletionBatch cb = MakeCompletionBatch(p, c);
  const double expected = -(CompletionLogprobs(**model, cb, 1.0).sum() / cb.completion_mask.sum()).item<double>();
  for (bool packing : {false, true}) {
    auto trainer = testing::CreateBuiltin<Trainer>("sft", {{"packing", packing}, {"max_length", std::int64_t{12}}});
    ASSERT_TRUE(trainer.ok()) << trainer.status();
    ASSERT_TRUE((*trainer)->Setup(ctx).ok());
    auto out = (*trainer)->Step(b.Input());
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_NEAR(out->loss.item<double>(), expected, 1e-5) << "packing=" << packing;
    EXPECT_EQ(out->metrics.at("num_tokens"), 9.0);
  }
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
    ASSERT_TRUE((*trainer)->Prepare(b.tokens).ok());
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
    at::NoGradGuard no_grad;
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
  // Hand check: r = score · h_last, loss = mean(−logσ(r_c − r_r)).
  const double rc = out->metrics.at("rewards/chosen"), rr = out->metrics.at("rewards/rejected");
  EXPECT_TRUE(std::isfinite(rc) && std::isfinite(rr));
  EXPECT_GT(out->loss.item<double>(), 0.0);
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
  CompletionBatch cb = MakeCompletionBatch(p, c);
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

}  // namespace
}  // namespace posttrain

#include "posttrain/losses/preference_losses.h"

#include <cmath>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "test_support.h"

namespace posttrain {
namespace {

std::vector<float> Vec(const at::Tensor& t) { return std::vector<float>(t.data_ptr<float>(), t.data_ptr<float>() + t.numel()); }

TEST(DpoLossTest, EveryLossTypeMatchesPythonTorchReference) {
  const std::vector<float> pc = {-12.5f, -30.25f, -7.0f, -18.0f}, pr = {-14.0f, -29.0f, -9.5f, -18.0f};
  const std::vector<float> rc = {-13.0f, -30.0f, -8.0f, -17.5f}, rr = {-13.5f, -29.5f, -9.0f, -18.5f};
  for (double ls : {0.0, 0.1}) {
    const double beta = 0.2;
    nlohmann::json in = {{"pc", pc}, {"pr", pr}, {"rc", rc}, {"rr", rr}, {"beta", beta}, {"label_smoothing", ls}};
    const std::string path = testing::TempDir("dpo") + "/in.json";
    testing::WriteFile(path, in.dump());
    std::string out;
    ASSERT_EQ(testing::RunCommand(posttrain::testing::Python() + " " + testing::SourceDir() + "/tests/framework/losses/dpo_reference.py " + path, &out), 0) << out;
    nlohmann::json expected = nlohmann::json::parse(out.substr(0, out.find('\n')));
    nlohmann::json extra = nlohmann::json::parse(out.substr(out.find('\n') + 1));
    for (const std::string& type : DpoLossTypes()) {
      RunningMoments moments;
      auto result = DpoLoss(type, at::tensor(pc), at::tensor(pr), at::tensor(rc), at::tensor(rr), beta, ls, &moments);
      ASSERT_TRUE(result.ok()) << type;
      const std::vector<float> got = Vec(result->losses);
      const auto want = expected[type].get<std::vector<float>>();
      ASSERT_EQ(got.size(), want.size());
      for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-5) << type << " ls=" << ls << " i=" << i;
    }
    auto expect = [&](const std::string& name, const at::Tensor& losses) {
      const auto want = extra[name].get<std::vector<float>>();
      const std::vector<float> got = Vec(losses.contiguous());
      ASSERT_EQ(got.size(), want.size()) << name;
      for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-5) << name << " ls=" << ls << " i=" << i;
    };
    expect("orpo", OrpoLoss(at::tensor(pc) / 10.0, at::tensor(pr) / 10.0, beta).losses);
    for (const std::string& type : CpoLossTypes()) {
      auto cpo = CpoLoss(type, at::tensor(pc), at::tensor(pr), beta, ls, 0.5);
      ASSERT_TRUE(cpo.ok()) << type;
      expect("cpo_" + type, cpo->losses);
    }
    expect("kto", KtoLoss(at::tensor(pc), at::tensor(rc), at::tensor(pr), at::tensor(rr), at::tensor(0.3f), beta, 1.0, 1.5).losses);
  }
}

// BCO against TRL's bco_loss transcribed into python3-torch: two batches (the running
// mean δ carries over), the second with density-ratio weights; and the density-ratio
// classifier at the optimum of scikit-learn's balanced, L2-regularised objective
// (its gradient there, computed by the reference, is ~0), with TRL's clamped ratios.
TEST(BcoLossTest, MatchesTrlsFormulaAndTheClassifierIsAtTheOptimum) {
  const double beta = 0.3;
  const std::vector<std::vector<float>> pc = {{-4.0f, -6.5f, -3.25f}, {-2.0f, -9.0f}};
  const std::vector<std::vector<float>> rc = {{-4.5f, -6.0f, -3.0f}, {-2.5f, -8.0f}};
  const std::vector<std::vector<float>> pr = {{-7.0f, -5.5f}, {-3.5f, -6.0f, -1.0f}};
  const std::vector<std::vector<float>> rr = {{-6.0f, -5.0f}, {-4.0f, -5.5f, -2.0f}};
  const std::vector<float> w2 = {0.5f, 2.0f, 10.0f};
  at::manual_seed(3);
  const at::Tensor x = at::randn({40, 5}, at::kDouble) + at::cat({at::ones({20, 5}, at::kDouble) * 0.7, at::zeros({20, 5}, at::kDouble)});
  at::Tensor y = at::zeros({40}, at::kDouble);
  y.narrow(0, 0, 20).fill_(1.0);
  y[25] = 1.0;  // unbalanced classes: 21 desirable, 19 undesirable
  const DensityRatioClassifier clf = DensityRatioClassifier::Fit(x, y);
  std::vector<std::vector<double>> xs;
  for (std::int64_t i = 0; i < x.size(0); ++i) xs.push_back(std::vector<double>(x[i].data_ptr<double>(), x[i].data_ptr<double>() + 5));
  nlohmann::json in = {{"beta", beta},
                       {"batches", {{{"pc", pc[0]}, {"rc", rc[0]}, {"pr", pr[0]}, {"rr", rr[0]}},
                                    {{"pc", pc[1]}, {"rc", rc[1]}, {"pr", pr[1]}, {"rr", rr[1]}, {"w", w2}}}},
                       {"x", xs},
                       {"y", std::vector<double>(y.data_ptr<double>(), y.data_ptr<double>() + 40)},
                       {"weight", std::vector<double>(clf.weight.data_ptr<double>(), clf.weight.data_ptr<double>() + 5)},
                       {"bias", clf.bias}};
  const std::string path = testing::TempDir("bco") + "/in.json";
  testing::WriteFile(path, in.dump());
  std::string out;
  ASSERT_EQ(testing::RunCommand(posttrain::testing::Python() + " " + testing::SourceDir() + "/tests/framework/losses/bco_reference.py " + path, &out), 0) << out;
  const nlohmann::json expected = nlohmann::json::parse(out);
  RunningMoments moments;
  for (int b = 0; b < 2; ++b) {
    auto r = BcoLoss(at::tensor(pc[b]), at::tensor(rc[b]), at::tensor(pr[b]), at::tensor(rr[b]), beta,
                     b == 1 ? at::tensor(w2) : at::Tensor(), &moments, /*update=*/true);
    ASSERT_TRUE(r.ok());
    EXPECT_NEAR(r->delta, expected["deltas"][b].get<double>(), 1e-6) << "batch " << b;
    const std::vector<float> got = Vec(r->losses);
    const auto want = expected["losses"][b].get<std::vector<double>>();
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-5) << "batch " << b << " row " << i;
  }
  EXPECT_LT(expected["grad_norm"].get<double>(), 1e-8);
  const at::Tensor ratios = clf.Ratio(x, 0.5, 10.0);
  const auto want = expected["ratios"].get<std::vector<double>>();
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(ratios[static_cast<std::int64_t>(i)].item<double>(), want[i], 1e-9);
  // Evaluation reads δ without updating it.
  auto eval = BcoLoss(at::tensor(pc[0]), at::tensor(rc[0]), at::tensor(pr[0]), at::tensor(rr[0]), beta, at::Tensor(), &moments,
                      /*update=*/false);
  ASSERT_TRUE(eval.ok());
  EXPECT_EQ(eval->delta, moments.mean);
  EXPECT_NEAR(eval->delta, expected["deltas"][1].get<double>(), 1e-6);
}

TEST(DpoLossTest, HandDerivedValuesAndRewards) {
  // Policy = reference: h = 0, sigmoid loss = −logσ(0) = log 2; rewards 0.
  at::Tensor x = at::tensor({-5.0f, -3.0f});
  auto r = DpoLoss("sigmoid", x, x, x, x, 0.1, 0.0, nullptr);
  ASSERT_TRUE(r.ok());
  EXPECT_NEAR(r->losses[0].item<float>(), std::log(2.0), 1e-6);
  EXPECT_EQ(r->chosen_rewards[1].item<float>(), 0.0f);
  // ipo at h = 0: (0 − 1/(2·0.5))² = 1.  hinge at βh = 2: relu(1 − 2) = 0.
  r = DpoLoss("ipo", x, x, x, x, 0.5, 0.0, nullptr);
  EXPECT_NEAR(r->losses[0].item<float>(), 1.0, 1e-6);
  at::Tensor pc = at::tensor({0.0f}), pr = at::tensor({-20.0f}), ref = at::tensor({0.0f});
  r = DpoLoss("hinge", pc, pr, ref, ref, 0.1, 0.0, nullptr);
  EXPECT_NEAR(r->losses[0].item<float>(), 0.0, 1e-6);
  // Rewards: β·(π − π_ref) = 0.1·(−20 − 0) = −2 for rejected.
  EXPECT_NEAR(r->rejected_rewards[0].item<float>(), -2.0, 1e-6);
  EXPECT_FALSE(DpoLoss("kto", x, x, x, x, 0.1, 0.0, nullptr).ok());
}

TEST(BradleyTerryLossTest, HandDerived) {
  // −logσ(1) = log(1 + e^−1) = 0.313262; with centring 0.01·(1 + 0)² = 0.01 more.
  at::Tensor rc = at::tensor({1.0f}), rr = at::tensor({0.0f});
  EXPECT_NEAR(BradleyTerryLoss(rc, rr, at::Tensor(), 0.0)[0].item<float>(), 0.3132617, 1e-6);
  EXPECT_NEAR(BradleyTerryLoss(rc, rr, at::Tensor(), 0.01)[0].item<float>(), 0.3232617, 1e-6);
  // A margin of 1 makes the pair a tie: −logσ(0) = log 2.
  EXPECT_NEAR(BradleyTerryLoss(rc, rr, at::tensor({1.0f}), 0.0)[0].item<float>(), std::log(2.0), 1e-6);
}

// Nash-MD's REINFORCE loss (value, gradient through the policy only, score, KL) and
// XPO's DPO-plus-exploration loss (both loss types, both choices of the chosen
// completion) against TRL's formulas transcribed into python3-torch.
TEST(OnlinePreferenceLossTest, NashMdAndXpoMatchTrlsFormulasInValueAndGradient) {
  at::manual_seed(11);
  const std::int64_t N = 4, C = 5;
  const at::Tensor mask = at::tensor({1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0}, at::kFloat).view({N, C});
  const at::Tensor pm = (-at::rand({N, C}) * 3) * mask, rm = (-at::rand({N, C}) * 3) * mask;
  const at::Tensor probability = at::tensor({0.2f, 0.5f, 0.9f, 0.73f});
  const double beta = 0.3;
  const at::Tensor xpm = at::tensor({-10.0f, -12.5f, -7.25f, -20.0f}), xpr = at::tensor({-11.0f, -9.5f, -8.0f, -19.0f});
  const at::Tensor xrm = at::tensor({-10.5f, -12.0f, -7.0f, -21.0f}), xrr = at::tensor({-10.0f, -10.0f, -9.0f, -18.5f});
  const at::Tensor chosen = at::tensor({1, 0, 1, 0}, at::kLong).to(at::kBool);
  auto list = [](const at::Tensor& t) {
    const at::Tensor c = t.to(at::kDouble).contiguous();
    return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
  };
  for (const std::string loss_type : {"sigmoid", "ipo"}) {
    const double alpha = 0.05;
    nlohmann::json nash = {{"pm", nlohmann::json::array()}, {"rm", nlohmann::json::array()}, {"probability", list(probability)}, {"beta", beta}};
    for (std::int64_t i = 0; i < N; ++i) {
      nash["pm"].push_back(list(pm[i]));
      nash["rm"].push_back(list(rm[i]));
    }
    nlohmann::json in = {{"nash", nash},
                         {"xpo", {{"pm", list(xpm)}, {"pr", list(xpr)}, {"rm", list(xrm)}, {"rr", list(xrr)},
                                  {"chosen", {true, false, true, false}}, {"beta", beta}, {"alpha", alpha}, {"loss_type", loss_type}}}};
    const std::string path = testing::TempDir("online_pref") + "/in.json";
    testing::WriteFile(path, in.dump());
    std::string out;
    ASSERT_EQ(testing::RunCommand(posttrain::testing::Python() + " " + testing::SourceDir() + "/tests/framework/losses/online_preference_reference.py " + path, &out), 0) << out;
    const nlohmann::json expected = nlohmann::json::parse(out);

    const at::Tensor policy = pm.clone().requires_grad_(true);
    NashMdLossResult nr = NashMdLoss(policy, rm, probability, beta);
    const at::Tensor loss = nr.losses.mean();
    loss.backward();
    EXPECT_NEAR(loss.item<double>(), expected["nash"]["loss"].get<double>(), 1e-5);
    const auto grad = expected["nash"]["grad"].get<std::vector<std::vector<double>>>();
    for (std::int64_t i = 0; i < N; ++i) {
      EXPECT_NEAR(nr.score[i].item<double>(), expected["nash"]["score"][i].get<double>(), 1e-5);
      EXPECT_NEAR(nr.kl[i].item<double>(), expected["nash"]["kl"][i].get<double>(), 1e-5);
      for (std::int64_t t = 0; t < C; ++t) EXPECT_NEAR(policy.grad()[i][t].item<double>(), grad[i][t], 1e-6) << i << "," << t;
    }
    // Hand check: at π = π_ref the KL term has no gradient, so ∂loss/∂log π(y_t) = −(P − ½)/N.
    const at::Tensor same = rm.clone().requires_grad_(true);
    NashMdLoss(same, rm, probability, beta).losses.mean().backward();
    EXPECT_NEAR(same.grad()[0][0].item<double>(), -(0.2 - 0.5) / N, 1e-7);

    const at::Tensor p_model = xpm.clone().requires_grad_(true), p_ref = xpr.clone().requires_grad_(true);
    auto xr = XpoLoss(loss_type, p_model, p_ref, xrm, xrr, chosen, beta, alpha);
    ASSERT_TRUE(xr.ok());
    const at::Tensor xloss = xr->losses.mean();
    xloss.backward();
    EXPECT_NEAR(xloss.item<double>(), expected["xpo"]["loss"].get<double>(), 1e-5) << loss_type;
    for (std::int64_t i = 0; i < N; ++i) {
      EXPECT_NEAR(xr->dpo_losses[i].item<double>(), expected["xpo"]["dpo"][i].get<double>(), 1e-5) << loss_type << i;
      EXPECT_NEAR(xr->xpo_losses[i].item<double>(), expected["xpo"]["xpo"][i].get<double>(), 1e-7) << loss_type << i;
      EXPECT_NEAR(p_model.grad()[i].item<double>(), expected["xpo"]["grad_pm"][i].get<double>(), 1e-6) << loss_type << i;
      EXPECT_NEAR(p_ref.grad()[i].item<double>(), expected["xpo"]["grad_pr"][i].get<double>(), 1e-6) << loss_type << i;
    }
  }
  EXPECT_FALSE(XpoLoss("hinge", xpm, xpr, xrm, xrr, chosen, beta, 1e-5).ok());
}

}  // namespace
}  // namespace posttrain

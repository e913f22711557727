// The LoRA adapter against PEFT's formula (an independent python3-torch
// transcription), PEFT's initialisation and names, merge = adapter, save/load.
#include <c10/core/GradMode.h>
#include <chrono>
#include <cmath>
#include <filesystem>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "posttrain/api/adapter.h"
#include "posttrain/core/autocast.h"
#include "posttrain/generation/generate.h"
#include "posttrain/model/causal_lm.h"
#include "posttrain/model/hf_model.h"
#include "posttrain/model/safetensors.h"
#include "posttrain/run/adapters.h"
#include "test_support.h"

namespace posttrain {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<Adapter> Lora(std::map<std::string, OptionValue> options) {
  auto a = testing::CreateBuiltin<Adapter>("lora", std::move(options));
  EXPECT_TRUE(a.ok()) << a.status();
  return a.ok() ? std::move(*a) : nullptr;
}

// B is zero at initialisation; for the formula tests it gets random values.
void RandomizeB(Adapter& a, std::uint64_t seed) {
  c10::NoGradGuard no_grad;
  at::manual_seed(seed);
  for (auto& [name, p] : a.NamedParameters()) {
    if (name.find("lora_B") != std::string::npos) at::Tensor(p).copy_(at::randn(p.sizes()) * 0.3);
  }
}
// The adapter's parameters by name (PEFT's tensor names).
std::map<std::string, at::Tensor> ParametersByName(const Adapter& a) {
  const auto named = a.NamedParameters();
  return {named.begin(), named.end()};
}

// r = 4, lora_alpha = 8 on "all-linear" of `config`, B random: the adapted model
// differs from the base.
std::unique_ptr<Adapter> AllLinearWithRandomB(const ModelConfig& config) {
  auto lora = Lora({{"r", std::int64_t{4}}, {"lora_alpha", 8.0}, {"target_modules", std::vector<std::string>{"all-linear"}}});
  absl::Status attached = lora->Attach(config, at::TensorOptions().dtype(at::kFloat), 2);
  EXPECT_TRUE(attached.ok()) << attached;
  if (!attached.ok()) return nullptr;
  RandomizeB(*lora, 6);
  return lora;
}

// `lora` (attached to `config`, B randomised) on a random model of `config` with std
// 0.2 (so the adapter's terms show): the adapted logits differ from the base's; the
// padding-free path gives them too; so does the python transcription of PEFT's
// formula on the base and adapter saved in `dir` (llama_reference.py --adapter, or
// gpt_neox_reference.py for GPT-NeoX); and the merged model.
void ExpectAdaptedModelMatchesPeftAndItsMerge(const ModelConfig& config, Adapter& lora, const std::string& dir) {
  auto model = CausalLM::Random(config, at::kFloat, 3);
  ASSERT_TRUE(model.ok());
  {
    c10::NoGradGuard no_grad;
    for (auto& [name, p] : (*model)->named_parameters()) {
      if (name.find("norm") == std::string::npos) p.mul_(10.0);
    }
  }
  (*model)->set_adapter(&lora);
  const at::Tensor ids = at::randint(config.vocab_size, {2, 6}, at::kLong);
  const at::Tensor pos = at::arange(6, at::kLong).unsqueeze(0).expand({2, 6});
  c10::NoGradGuard no_grad;
  const at::Tensor adapted = (*model)->Forward(ids, pos, at::Tensor(), nullptr);
  EXPECT_GT((adapted - (*model)->BaseView()->Forward(ids, pos, at::Tensor(), nullptr)).abs().max().item<double>(), 1e-2);
  std::vector<std::vector<std::int64_t>> seqs;
  for (int b = 0; b < 2; ++b) seqs.emplace_back(ids[b].data_ptr<std::int64_t>(), ids[b].data_ptr<std::int64_t>() + 6);
  EXPECT_LT(((*model)->Logits((*model)->PackedHidden(PackSequences(seqs))).view({2, 6, -1}) - adapted).abs().max().item<double>(), 1e-4);

  ASSERT_TRUE(SaveCausalLM(*(*model)->BaseView(), dir).ok());
  ASSERT_TRUE(SaveSafetensors(dir + "/ids.safetensors", {{"ids", ids}}).ok());
  ASSERT_TRUE(lora.Save(dir + "/adapter", **model, "tiny-" + config.model_type).ok());
  std::string out;
  const std::string script = config.model_type == "gpt_neox" ? "gpt_neox_reference.py"
                             : config.model_type == "gpt2"   ? "gpt2_reference.py"
                             : config.model_type == "opt"    ? "opt_reference.py"
                             : config.model_type == "cohere" || config.model_type == "cohere2" ? "cohere_reference.py"
                             : config.model_type == "bloom"  ? "bloom_reference.py"
                             : config.model_type == "phi"    ? "phi_reference.py"
                             : config.model_type == "gptj"   ? "gptj_reference.py"
                             : config.model_type == "stablelm" ? "stablelm_reference.py"
                             : config.model_type == "starcoder2" ? "starcoder2_reference.py"
                             : config.model_type == "gpt_oss" ? "gpt_oss_reference.py"
                             : config.model_type == "deepseek_v3" ? "deepseek_v3_reference.py"
                             : config.model_type == "dbrx" ? "dbrx_reference.py"
                             : config.model_type == "gpt_neo" ? "gpt_neo_reference.py"
                             : config.model_type == "gpt_bigcode" ? "gpt_bigcode_reference.py"
                             : config.model_type == "falcon" ? "falcon_reference.py"
                             : config.mamba ? "mamba_reference.py"
                                                             : "llama_reference.py";
  ASSERT_EQ(testing::RunCommand(testing::Python() + " " + testing::SourceDir() + "/tests/framework/model/" + script + " " +
                                    dir + " --adapter " + dir + "/adapter", &out), 0) << out;
  auto expected = SafetensorsFile::Open(dir + "/reference_logits.safetensors");
  ASSERT_TRUE(expected.ok());
  EXPECT_LT((adapted - *expected->Get("logits")).abs().max().item<double>(), 1e-4);
  std::unique_ptr<CausalLM> merged = (*model)->BaseView()->Clone();
  ASSERT_TRUE(lora.MergeInto(*merged).ok());
  EXPECT_LT((merged->Forward(ids, pos, at::Tensor(), nullptr) - adapted).abs().max().item<double>(), 1e-4);
}


TEST(LoraAdapterTest, OutputEqualsPeftsFormulaWithAndWithoutRsLora) {
  const ModelConfig config = testing::TinyTrainerModelConfig();
  for (bool rslora : {false, true}) {
    auto lora = Lora({{"r", std::int64_t{4}}, {"lora_alpha", 12.0}, {"use_rslora", rslora},
                      {"target_modules", std::vector<std::string>{"q_proj", "down_proj"}}});
    ASSERT_TRUE(lora->Attach(config, at::TensorOptions().dtype(at::kFloat), 3).ok());
    RandomizeB(*lora, 5);
    auto model = CausalLM::Random(config, at::kFloat, 1);
    ASSERT_TRUE(model.ok());
    for (auto [site, weight] : {std::pair{LinearSite::kQ, "model.layers.1.self_attn.q_proj"},
                                std::pair{LinearSite::kDown, "model.layers.1.mlp.down_proj"}}) {
      at::Tensor W, A, B;
      for (const auto& [name, p] : (*model)->named_parameters()) {
        if (name == std::string(weight) + ".weight") W = p;
      }
      for (const auto& [name, p] : lora->NamedParameters()) {
        if (name == "base_model.model." + std::string(weight) + ".lora_A.weight") A = p;
        if (name == "base_model.model." + std::string(weight) + ".lora_B.weight") B = p;
      }
      ASSERT_TRUE(W.defined() && A.defined() && B.defined()) << weight;
      EXPECT_EQ(A.sizes(), (std::vector<std::int64_t>{4, W.size(1)}));  // A [r, in]
      EXPECT_EQ(B.sizes(), (std::vector<std::int64_t>{W.size(0), 4}));  // B [out, r]
      const at::Tensor x = at::randn({3, 5, W.size(1)});
      c10::NoGradGuard no_grad;
      const at::Tensor y = at::linear(x, W) + lora->Delta(1, site, x);
      const std::string dir = testing::TempDir(absl::StrCat("lora_case_", rslora, "_", static_cast<int>(site)));
      ASSERT_TRUE(SaveSafetensors(dir + "/case.safetensors", {{"x", x}, {"W", W.detach()}, {"A", A.detach()}, {"B", B.detach()}}).ok());
      testing::WriteFile(dir + "/case.json", absl::StrCat("{\"r\": 4, \"lora_alpha\": 12.0, \"use_rslora\": ", rslora ? "true" : "false", "}"));
      std::string out;
      ASSERT_EQ(testing::RunCommand(posttrain::testing::Python() + " " + testing::SourceDir() + "/tests/plugins/adapters/lora_reference.py " + dir, &out), 0) << out;
      auto expected = SafetensorsFile::Open(dir + "/expected.safetensors");
      ASSERT_TRUE(expected.ok());
      EXPECT_LT((y - *expected->Get("y")).abs().max().item<double>(), 1e-5) << weight << " rslora " << rslora;
    }
    // Sites not targeted add nothing.
    EXPECT_FALSE(lora->Delta(0, LinearSite::kV, at::randn({2, config.hidden_size})).defined());
  }
}

// DoRA (use_dora) against PEFT's DoraLinearLayer transcribed in lora_reference.py,
// on a base layer with a bias, B random and the magnitudes moved off their start:
// the magnitudes Initialize gives (||W + scaling BA|| per row), the output, and the
// gradients in m, A and B (the norm detached, as PEFT and the paper do), with
// use_rslora off and on. Before Initialize the adapter refuses to run.
TEST(LoraAdapterTest, DoraOutputAndGradientsEqualPeftsFormula) {
  const ModelConfig config = testing::TinyTrainerModelConfig();
  for (bool rslora : {false, true}) {
    auto lora = Lora({{"r", std::int64_t{4}}, {"lora_alpha", 12.0}, {"use_rslora", rslora}, {"use_dora", true},
                      {"init_lora_weights", false}, {"target_modules", std::vector<std::string>{"q_proj", "down_proj"}}});
    ASSERT_TRUE(lora->Attach(config, at::TensorOptions().dtype(at::kFloat), 3).ok());
    auto model = CausalLM::Random(config, at::kFloat, 1);
    ASSERT_TRUE(model.ok());
    const at::Tensor probe = at::randn({2, config.hidden_size});
    EXPECT_THROW(lora->Adapt(1, LinearSite::kQ, probe, probe.new_zeros({config.hidden_size, config.hidden_size}),
                             at::Tensor(), probe),
                 c10::Error);
    ASSERT_TRUE(lora->Initialize(**model).ok());
    for (auto [site, weight] : {std::pair{LinearSite::kQ, "model.layers.1.self_attn.q_proj"},
                                std::pair{LinearSite::kDown, "model.layers.1.mlp.down_proj"}}) {
      at::Tensor W;
      for (const auto& [name, p] : (*model)->named_parameters()) {
        if (name == std::string(weight) + ".weight") W = p;
      }
      auto params = ParametersByName(*lora);
      const std::string peft = "base_model.model." + std::string(weight);
      at::Tensor A = params[peft + ".lora_A.weight"], B = params[peft + ".lora_B.weight"];
      at::Tensor M = params[peft + ".lora_magnitude_vector"];
      ASSERT_TRUE(W.defined() && A.defined() && B.defined() && M.defined()) << weight;
      EXPECT_EQ(M.sizes(), (std::vector<std::int64_t>{W.size(0)}));  // one magnitude per output row
      EXPECT_TRUE(M.requires_grad());
      const at::Tensor m0 = M.detach().clone();
      at::manual_seed(static_cast<std::uint64_t>(site) + 11);
      {
        c10::NoGradGuard no_grad;
        M.mul_(1 + 0.2 * at::randn(M.sizes()));
      }
      const at::Tensor x = at::randn({3, 5, W.size(1)}), b = at::randn({W.size(0)}), ct = at::randn({3, 5, W.size(0)});
      const at::Tensor y = lora->Adapt(1, site, x, W, b, at::linear(x, W, b));
      (y * ct).sum().backward();
      const std::string dir = testing::TempDir(absl::StrCat("dora_case_", rslora, "_", static_cast<int>(site)));
      ASSERT_TRUE(SaveSafetensors(dir + "/case.safetensors", {{"x", x}, {"W", W.detach()}, {"A", A.detach()}, {"B", B.detach()},
                                                              {"b", b}, {"m", M.detach()}, {"ct", ct}})
                      .ok());
      testing::WriteFile(dir + "/case.json", absl::StrCat("{\"r\": 4, \"lora_alpha\": 12.0, \"use_dora\": true, \"use_rslora\": ",
                                                          rslora ? "true" : "false", "}"));
      std::string out;
      ASSERT_EQ(testing::RunCommand(posttrain::testing::Python() + " " + testing::SourceDir() + "/tests/plugins/adapters/lora_reference.py " + dir, &out), 0) << out;
      auto expected = SafetensorsFile::Open(dir + "/expected.safetensors");
      ASSERT_TRUE(expected.ok());
      EXPECT_LT((m0 - *expected->Get("m0")).abs().max().item<double>(), 1e-5) << weight;
      EXPECT_LT((y.detach() - *expected->Get("y")).abs().max().item<double>(), 1e-4) << weight << " rslora " << rslora;
      EXPECT_LT((M.grad() - *expected->Get("gm")).abs().max().item<double>(), 1e-3) << weight;
      EXPECT_LT((A.grad() - *expected->Get("gA")).abs().max().item<double>(), 1e-3) << weight;
      EXPECT_LT((B.grad() - *expected->Get("gB")).abs().max().item<double>(), 1e-3) << weight;
      EXPECT_GT(M.grad().abs().max().item<double>(), 1e-3);  // the magnitudes train
    }
    // Sites not targeted pass the base output through.
    const at::Tensor base_out = at::randn({2, config.hidden_size});
    EXPECT_TRUE(at::equal(lora->Adapt(0, LinearSite::kV, probe, probe, at::Tensor(), base_out), base_out));
  }
}

// An adapter whose term is not a weight (it adds a constant): it cannot merge.
class ConstantTermAdapter : public LinearAdapter {
 public:
  at::Tensor Delta(std::int64_t, LinearSite site, const at::Tensor& x) const override {
    return site == LinearSite::kQ ? at::ones_like(x.narrow(-1, 0, 1)) : at::Tensor();
  }
};

// The fused decode step with an adapter (LoRA, then DoRA, on q, v, gate and down:
// other sites stay unadapted; B and the magnitudes moved). On the merged weights
// (MergedDecodeWeights, fp32) it gives, token by token, the logits of the adapted
// libtorch forward with a KV cache, which computes the adapter's terms apart
// (x Wᵀ + scaling · (x Aᵀ) Bᵀ); with bf16 products (Bf16DecodeWeights, packed from
// the merge) the same to bf16's resolution. Without merged weights the step
// refuses; an adapter that cannot merge leaves the model to the libtorch path.
// Greedy generation (prefill adapted, steps merged) picks, token by token, the
// adapted full forward's argmax.
TEST(LoraAdapterTest, DecodeStepRunsTheAdapterOnItsMergedWeights) {
  const ModelConfig config = testing::TinyTrainerModelConfig();
  for (const bool dora : {false, true}) {
    SCOPED_TRACE(dora ? "DoRA" : "LoRA");
    auto lora = Lora({{"r", std::int64_t{4}}, {"lora_alpha", 8.0}, {"use_dora", dora},
                      {"target_modules", std::vector<std::string>{"q_proj", "v_proj", "gate_proj", "down_proj"}}});
    ASSERT_TRUE(lora->Attach(config, at::TensorOptions().dtype(at::kFloat), 2).ok());
    auto model = CausalLM::Random(config, at::kFloat, 3);
    ASSERT_TRUE(model.ok());
    CausalLM& m = **model;
    {
      c10::NoGradGuard no_grad;
      for (auto& [name, p] : m.named_parameters()) {
        if (name.find("norm") == std::string::npos) p.mul_(10.0);
      }
    }
    ASSERT_TRUE(lora->Initialize(m).ok());
    RandomizeB(*lora, 6);
    {
      c10::NoGradGuard no_grad;
      at::manual_seed(7);
      for (auto& [name, p] : lora->NamedParameters()) {
        if (absl::EndsWith(name, ".lora_magnitude_vector")) at::Tensor(p).mul_(1 + 0.2 * at::randn(p.sizes()));
      }
    }
    m.set_adapter(lora.get());
    ASSERT_TRUE(m.CanDecodeStep());
    c10::NoGradGuard no_grad;
    const std::int64_t B = 2, T = 7;
    const at::Tensor ids = at::randint(config.vocab_size, {B, T}, at::kLong);
    KVCache cache = m.NewCache(B, T), base_cache = m.NewCache(B, T);
    std::vector<at::Tensor> expected, base;
    const std::unique_ptr<CausalLM> base_view = m.BaseView();
    for (std::int64_t t = 0; t < T; ++t) {
      const at::Tensor token = ids.narrow(1, t, 1), position = at::full({B, 1}, t, at::kLong), mask = at::ones({B, t + 1}, at::kLong);
      expected.push_back(m.Forward(token, position, mask, &cache).select(1, 0));
      base.push_back(base_view->Forward(token, position, mask, &base_cache).select(1, 0));
    }
    EXPECT_GT((at::stack(expected) - at::stack(base)).abs().max().item<double>(), 0.1) << "the adapter adds nothing";
    const std::shared_ptr<const CausalLM::DecodeWeights> merged = m.MergedDecodeWeights();
    ASSERT_NE(merged, nullptr);
    KVCache fused = m.NewCache(B, T);
    for (std::int64_t t = 0; t < T; ++t) {
      const at::Tensor step = m.DecodeStep({ids[0][t].item<std::int64_t>(), ids[1][t].item<std::int64_t>()}, {t, t}, {0, 0}, &fused,
                                           merged.get());
      EXPECT_LT((step - expected[static_cast<size_t>(t)]).abs().max().item<double>(), 1e-4) << "position " << t;
    }
    {  // made under bf16 autocast, as a run with bf16 = true generates: the merge stays fp32
      SetAutocast(at::kCPU, true, at::kBFloat16);
      const std::shared_ptr<const CausalLM::DecodeWeights> under_autocast = m.MergedDecodeWeights();
      SetAutocast(at::kCPU, false);
      KVCache again = m.NewCache(B, T);
      for (std::int64_t t = 0; t < T; ++t) {
        const at::Tensor step = m.DecodeStep({ids[0][t].item<std::int64_t>(), ids[1][t].item<std::int64_t>()}, {t, t}, {0, 0},
                                             &again, under_autocast.get());
        EXPECT_LT((step - expected[static_cast<size_t>(t)]).abs().max().item<double>(), 1e-4) << "merged under autocast, position " << t;
      }
    }
    KVCache refused = m.NewCache(B, T);
    EXPECT_THROW(m.DecodeStep({1, 2}, {0, 0}, {0, 0}, &refused), c10::Error);
    if (const auto bf16 = m.Bf16DecodeWeights(); bf16 != nullptr) {
      KVCache bf16_cache = m.NewCache(B, T);
      for (std::int64_t t = 0; t < T; ++t) {
        const at::Tensor step = m.DecodeStep({ids[0][t].item<std::int64_t>(), ids[1][t].item<std::int64_t>()}, {t, t}, {0, 0},
                                             &bf16_cache, bf16.get());
        const at::Tensor& want = expected[static_cast<size_t>(t)];
        EXPECT_LT((step - want).abs().max().item<double>(), 0.02 * want.abs().max().item<double>() + 0.05) << "bf16, position " << t;
      }
    }
    // Greedy generation against the adapted forward's argmax, one token at a time.
    SamplingParams params;
    params.do_sample = false;
    params.max_new_tokens = 6;
    params.compute_logprobs = false;
    params.eos_token_ids = {};
    const std::vector<std::vector<std::int64_t>> prompts = {{1, 5, 9}, {2, 7}};
    auto generated = Generate(m, prompts, 1, params, nullptr);
    ASSERT_TRUE(generated.ok()) << generated.status();
    for (size_t p = 0; p < prompts.size(); ++p) {
      std::vector<std::int64_t> seq = prompts[p];
      for (int t = 0; t < 6; ++t) {
        const at::Tensor input = at::tensor(seq, at::kLong).unsqueeze(0);
        const auto n = static_cast<std::int64_t>(seq.size());
        seq.push_back(m.Forward(input, at::arange(n, at::kLong).unsqueeze(0), at::Tensor(), nullptr)[0][n - 1].argmax().item<std::int64_t>());
      }
      EXPECT_EQ((*generated)[p].token_ids, std::vector<std::int64_t>(seq.begin() + static_cast<std::ptrdiff_t>(prompts[p].size()), seq.end()))
          << "prompt " << p;
    }
  }
  auto model = CausalLM::Random(config, at::kFloat, 3);
  ASSERT_TRUE(model.ok());
  ConstantTermAdapter constant;
  (*model)->set_adapter(&constant);
  EXPECT_FALSE((*model)->CanDecodeStep());
  EXPECT_EQ((*model)->MergedDecodeWeights(), nullptr);
}

// DoRA on every linear layer of a Llama: at PEFT's initialisation (B zero, m = ||W||)
// the adapted model is the base; with B and m moved, it equals llama_reference.py
// with PEFT's DoRA forward on the saved adapter, and our merge equals PEFT's merged
// weight there (g ⊙ (W + scaling BA)); the saved adapter (use_dora, the magnitudes
// under PEFT's lora_magnitude_vector names) reloads to the same logits; one without
// its magnitudes is refused by name.
TEST(LoraAdapterTest, DoraModelMatchesPeftMergesAndReloads) {
  const ModelConfig config = testing::TinyTrainerModelConfig();
  auto lora = Lora({{"r", std::int64_t{4}}, {"lora_alpha", 8.0}, {"use_dora", true},
                    {"target_modules", std::vector<std::string>{"all-linear"}}});
  ASSERT_TRUE(lora->Attach(config, at::TensorOptions().dtype(at::kFloat), 2).ok());
  auto model = CausalLM::Random(config, at::kFloat, 3);
  ASSERT_TRUE(model.ok());
  {
    c10::NoGradGuard no_grad;
    for (auto& [name, p] : (*model)->named_parameters()) {
      if (name.find("norm") == std::string::npos) p.mul_(10.0);
    }
  }
  ASSERT_TRUE(lora->Initialize(**model).ok());
  (*model)->set_adapter(lora.get());
  const at::Tensor ids = at::randint(config.vocab_size, {2, 6}, at::kLong);
  const at::Tensor pos = at::arange(6, at::kLong).unsqueeze(0).expand({2, 6});
  c10::NoGradGuard no_grad;
  const at::Tensor base = (*model)->BaseView()->Forward(ids, pos, at::Tensor(), nullptr);
  EXPECT_LT(((*model)->Forward(ids, pos, at::Tensor(), nullptr) - base).abs().max().item<double>(), 1e-4);
  RandomizeB(*lora, 6);
  at::manual_seed(7);
  for (auto& [name, p] : lora->NamedParameters()) {
    if (absl::EndsWith(name, ".lora_magnitude_vector")) at::Tensor(p).mul_(1 + 0.2 * at::randn(p.sizes()));
  }
  const at::Tensor adapted = (*model)->Forward(ids, pos, at::Tensor(), nullptr);
  EXPECT_GT((adapted - base).abs().max().item<double>(), 1e-2);
  std::vector<std::vector<std::int64_t>> seqs;
  for (int b = 0; b < 2; ++b) seqs.emplace_back(ids[b].data_ptr<std::int64_t>(), ids[b].data_ptr<std::int64_t>() + 6);
  EXPECT_LT(((*model)->Logits((*model)->PackedHidden(PackSequences(seqs))).view({2, 6, -1}) - adapted).abs().max().item<double>(), 1e-4);

  const std::string dir = testing::TempDir("dora_model");
  ASSERT_TRUE(SaveCausalLM(*(*model)->BaseView(), dir).ok());
  ASSERT_TRUE(SaveSafetensors(dir + "/ids.safetensors", {{"ids", ids}}).ok());
  ASSERT_TRUE(lora->Save(dir + "/adapter", **model, "tiny").ok());
  const nlohmann::json saved = nlohmann::json::parse(testing::ReadFile(dir + "/adapter/adapter_config.json"));
  EXPECT_EQ(saved["use_dora"], true);
  auto file = SafetensorsFile::Open(dir + "/adapter/adapter_model.safetensors");
  ASSERT_TRUE(file.ok());
  EXPECT_EQ(file->Get("base_model.model.model.layers.1.mlp.up_proj.lora_magnitude_vector")->sizes(),
            at::IntArrayRef({config.intermediate_size}));
  auto reference = [&](const std::string& mode) {
    std::string out;
    EXPECT_EQ(testing::RunCommand(testing::Python() + " " + testing::SourceDir() + "/tests/framework/model/llama_reference.py " +
                                      dir + " --adapter " + dir + "/adapter " + mode, &out), 0) << out;
    auto logits = SafetensorsFile::Open(dir + "/reference_logits.safetensors");
    return logits.ok() ? *logits->Get("logits") : at::zeros_like(adapted);
  };
  EXPECT_LT((adapted - reference("")).abs().max().item<double>(), 1e-4);
  std::unique_ptr<CausalLM> merged = (*model)->BaseView()->Clone();
  ASSERT_TRUE(lora->MergeInto(*merged).ok());
  const at::Tensor merged_logits = merged->Forward(ids, pos, at::Tensor(), nullptr);
  EXPECT_LT((merged_logits - reference("--merged")).abs().max().item<double>(), 1e-4);
  EXPECT_LT((merged_logits - adapted).abs().max().item<double>(), 1e-4);

  std::unique_ptr<CausalLM> fresh = (*model)->BaseView()->Clone();
  auto loaded = LoadSavedAdapter(testing::BuiltinHost().registry(), dir + "/adapter", *fresh);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  fresh->set_adapter(loaded->get());
  EXPECT_LT((fresh->Forward(ids, pos, at::Tensor(), nullptr) - adapted).abs().max().item<double>(), 1e-6);
  fresh->set_adapter(nullptr);

  // A plain LoRA file under a config that says use_dora lacks the magnitudes.
  nlohmann::json plain = saved;
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const SafetensorsEntry& e : file->entries()) {
    if (!absl::EndsWith(e.name, "lora_magnitude_vector")) tensors.push_back({e.name, *file->Get(e.name)});
  }
  ASSERT_TRUE(SaveSafetensors(dir + "/adapter/adapter_model.safetensors", tensors).ok());
  auto missing = LoadSavedAdapter(testing::BuiltinHost().registry(), dir + "/adapter", *fresh);
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("lacks 'base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector'"));
}

TEST(LoraAdapterTest, PeftInitialisationStartsAtTheBaseModel) {
  const ModelConfig config = testing::TinyTrainerModelConfig();
  auto lora = Lora({{"r", std::int64_t{8}}, {"target_modules", std::vector<std::string>{"all-linear"}}});
  ASSERT_TRUE(lora->Attach(config, at::TensorOptions().dtype(at::kFloat), 7).ok());
  EXPECT_EQ(lora->NamedParameters().size(), 2u * 7 * static_cast<size_t>(config.num_hidden_layers));
  for (const auto& [name, p] : lora->NamedParameters()) {
    if (name.find("lora_B") != std::string::npos) {
      EXPECT_EQ(p.abs().max().item<double>(), 0.0) << name;
    } else {
      // Kaiming-uniform with a = sqrt(5): U(-1/sqrt(in), 1/sqrt(in)).
      const double bound = 1.0 / std::sqrt(static_cast<double>(p.size(1)));
      EXPECT_LE(p.abs().max().item<double>(), bound) << name;
      EXPECT_GT(p.abs().max().item<double>(), 0.5 * bound) << name;
    }
  }
  auto model = CausalLM::Random(config, at::kFloat, 2);
  ASSERT_TRUE(model.ok());
  const at::Tensor ids = at::randint(config.vocab_size, {2, 6}, at::kLong);
  const at::Tensor pos = at::arange(6, at::kLong).unsqueeze(0).expand({2, 6});
  c10::NoGradGuard no_grad;
  const at::Tensor base = (*model)->Forward(ids, pos, at::Tensor(), nullptr);
  (*model)->set_adapter(lora.get());
  EXPECT_EQ((((*model)->Forward(ids, pos, at::Tensor(), nullptr)) - base).abs().max().item<double>(), 0.0);
}

TEST(LoraAdapterTest, TargetsThatMatchNothingAreNamed) {
  const ModelConfig config = testing::TinyTrainerModelConfig();
  auto lora = Lora({{"target_modules", std::vector<std::string>{"q_proj", "qproj"}}});
  absl::Status s = lora->Attach(config, at::TensorOptions().dtype(at::kFloat), 0);
  EXPECT_THAT(std::string(s.message()), HasSubstr("target_modules: qproj match no linear layer"));
  auto regex = Lora({{"target_modules", std::vector<std::string>{R"(.*\.layers\.1\..*_proj)"}}});
  ASSERT_TRUE(regex->Attach(config, at::TensorOptions().dtype(at::kFloat), 0).ok());
  for (const auto& [name, p] : regex->NamedParameters()) EXPECT_THAT(name, HasSubstr("layers.1."));
  EXPECT_EQ(regex->NamedParameters().size(), 14u);
  // modules_to_save: a module the model lacks, and a tied lm_head (the embedding is
  // the one to name), are refused by name instead of training nothing.
  auto unknown = Lora({{"modules_to_save", std::vector<std::string>{"score_head"}}});
  s = unknown->Attach(config, at::TensorOptions().dtype(at::kFloat), 0);
  EXPECT_THAT(std::string(s.message()), HasSubstr("modules_to_save: 'score_head' names no module"));
  ModelConfig tied = config;
  tied.tie_word_embeddings = true;
  auto tied_head = Lora({{"modules_to_save", std::vector<std::string>{"lm_head"}}});
  s = tied_head->Attach(tied, at::TensorOptions().dtype(at::kFloat), 0);
  EXPECT_THAT(std::string(s.message()), HasSubstr("tied to the input embedding: name embed_tokens"));
  auto embedding = Lora({{"modules_to_save", std::vector<std::string>{"embed_tokens"}}});
  EXPECT_TRUE(embedding->Attach(tied, at::TensorOptions().dtype(at::kFloat), 0).ok());
}

// Phi-3 keeps q/k/v in one qkv_proj and gate/up in one gate_up_proj; PEFT adapts
// those modules whole (one A [r, in], one B [out, r] per fused module), and so do
// we: "all-linear" finds the four modules of its checkpoints, under PEFT's names.
// The adapted model equals the python transcription of PEFT's formula applied to
// the fused modules (tests/framework/model/llama_reference.py --adapter), on the
// padded and the padding-free paths, and merging gives the same logits. Llama's
// module names are refused on it, naming Phi-3's.
TEST(LoraAdapterTest, Phi3FusedModulesAreAdaptedWholeAsPeftDoes) {
  auto config = ModelConfig::FromJson({{"model_type", "phi3"}, {"vocab_size", 97}, {"hidden_size", 32},
                                       {"intermediate_size", 48}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                                       {"num_key_value_heads", 2}});
  ASSERT_TRUE(config.ok()) << config.status();
  const std::unique_ptr<Adapter> lora = AllLinearWithRandomB(*config);
  ASSERT_NE(lora, nullptr);
  std::map<std::string, at::Tensor> params = ParametersByName(*lora);
  EXPECT_EQ(params.size(), 2u * 4 * 2);  // A and B of 4 modules in 2 layers
  ASSERT_TRUE(params.count("base_model.model.model.layers.1.self_attn.qkv_proj.lora_B.weight"));
  EXPECT_EQ(params["base_model.model.model.layers.1.self_attn.qkv_proj.lora_A.weight"].sizes(), at::IntArrayRef({4, 32}));
  EXPECT_EQ(params["base_model.model.model.layers.1.self_attn.qkv_proj.lora_B.weight"].sizes(), at::IntArrayRef({32 + 16 + 16, 4}));
  EXPECT_EQ(params["base_model.model.model.layers.0.mlp.gate_up_proj.lora_B.weight"].sizes(), at::IntArrayRef({96, 4}));

  const std::string dir = testing::TempDir("phi3_lora");  // qkv_proj / gate_up_proj on disk
  ExpectAdaptedModelMatchesPeftAndItsMerge(*config, *lora, dir);
  nlohmann::json saved = nlohmann::json::parse(testing::ReadFile(dir + "/adapter/adapter_config.json"));
  EXPECT_EQ(saved["target_modules"], nlohmann::json({"down_proj", "gate_up_proj", "o_proj", "qkv_proj"}));

  auto llama_names = Lora({{"target_modules", std::vector<std::string>{"q_proj", "v_proj"}}});
  absl::Status s = llama_names->Attach(*config, at::TensorOptions().dtype(at::kFloat), 0);
  EXPECT_THAT(std::string(s.message()), HasSubstr("its projections: qkv_proj, o_proj, gate_up_proj, down_proj"));
}

// GPT-NeoX: LoRA on its own modules under PEFT's names
// (base_model.model.gpt_neox.layers.<i>.attention.query_key_value, ...), one A and B
// for query_key_value whose B rows follow the module's head-interleaved rows; the
// adapted model equals PEFT's formula on those files (gpt_neox_reference.py) and its
// merge; saved and loaded back, the same tensors; Llama's names are refused with the
// model's own listed.
TEST(LoraAdapterTest, GptNeoxAdaptsItsOwnModulesUnderPeftsNames) {
  auto config = ModelConfig::FromJson({{"model_type", "gpt_neox"}, {"vocab_size", 97}, {"hidden_size", 32},
                                       {"intermediate_size", 48}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                                       {"rotary_pct", 0.5}, {"use_parallel_residual", true}});
  ASSERT_TRUE(config.ok()) << config.status();
  const std::unique_ptr<Adapter> lora = AllLinearWithRandomB(*config);
  ASSERT_NE(lora, nullptr);
  std::map<std::string, at::Tensor> params = ParametersByName(*lora);
  EXPECT_EQ(params.size(), 2u * 4 * 2);  // A and B of 4 modules in 2 layers
  ASSERT_EQ(params.count("base_model.model.gpt_neox.layers.1.attention.query_key_value.lora_B.weight"), 1u);
  EXPECT_EQ(params["base_model.model.gpt_neox.layers.1.attention.query_key_value.lora_B.weight"].sizes(), at::IntArrayRef({96, 4}));
  EXPECT_EQ(params["base_model.model.gpt_neox.layers.0.mlp.dense_h_to_4h.lora_A.weight"].sizes(), at::IntArrayRef({4, 32}));

  const std::string dir = testing::TempDir("neox_lora");
  ExpectAdaptedModelMatchesPeftAndItsMerge(*config, *lora, dir);
  nlohmann::json saved = nlohmann::json::parse(testing::ReadFile(dir + "/adapter/adapter_config.json"));
  EXPECT_EQ(saved["target_modules"], nlohmann::json({"dense", "dense_4h_to_h", "dense_h_to_4h", "query_key_value"}));
  auto base = CausalLM::Random(*config, at::kFloat, 1);
  ASSERT_TRUE(base.ok());
  auto again = Lora({{"r", std::int64_t{4}}, {"lora_alpha", 8.0}, {"target_modules", std::vector<std::string>{"all-linear"}}});
  ASSERT_TRUE(again->Attach(*config, at::TensorOptions().dtype(at::kFloat), 9).ok());
  ASSERT_TRUE(again->Load(dir + "/adapter", **base).ok());
  for (const auto& [name, t] : again->NamedParameters()) EXPECT_TRUE(at::equal(t, params.at(name))) << name;

  auto llama_names = Lora({{"target_modules", std::vector<std::string>{"q_proj", "v_proj"}}});
  absl::Status s = llama_names->Attach(*config, at::TensorOptions().dtype(at::kFloat), 0);
  EXPECT_THAT(std::string(s.message()), HasSubstr("query_key_value, dense, dense_h_to_4h, dense_4h_to_h in gpt_neox.layers.<i>"));
  // modules_to_save by the checkpoint's module names: embed_out is the LM head.
  auto llama_head = Lora({{"target_modules", std::vector<std::string>{"query_key_value"}},
                          {"modules_to_save", std::vector<std::string>{"lm_head"}}});
  EXPECT_THAT(std::string(llama_head->Attach(*config, at::TensorOptions().dtype(at::kFloat), 0).message()),
              HasSubstr("'lm_head' names no module of the model (e.g. embed_in, embed_out"));
  auto with_head = Lora({{"target_modules", std::vector<std::string>{"query_key_value"}},
                         {"modules_to_save", std::vector<std::string>{"embed_out"}}});
  ASSERT_TRUE(with_head->Attach(*config, at::TensorOptions().dtype(at::kFloat), 0).ok());
  EXPECT_EQ(with_head->ModulesToSave(), std::vector<std::string>{"lm_head.weight"});
  {
    c10::NoGradGuard no_grad;
    at::Tensor((*base)->lm_head_weight()).add_(1.0);  // the untied LM head, trained
  }
  ASSERT_TRUE(with_head->Save(dir + "/with_head", **base, "tiny").ok());
  auto file = SafetensorsFile::Open(dir + "/with_head/adapter_model.safetensors");
  ASSERT_TRUE(file.ok());
  EXPECT_TRUE(file->Get("base_model.model.embed_out.weight").ok());
  auto fresh = CausalLM::Random(*config, at::kFloat, 1);
  ASSERT_TRUE(fresh.ok());
  ASSERT_TRUE(with_head->Load(dir + "/with_head", **fresh).ok());
  EXPECT_TRUE(at::equal((*fresh)->lm_head_weight(), (*base)->lm_head_weight()));
}

// gpt2_reference.py on the model directory `d` (with `flags`): its logits.
at::Tensor Gpt2ReferenceLogits(const std::string& d, const std::string& flags = "") {
  std::string out;
  EXPECT_EQ(testing::RunCommand(testing::Python() + " " + testing::SourceDir() + "/tests/framework/model/gpt2_reference.py " +
                                    d + flags, &out), 0) << out;
  auto file = SafetensorsFile::Open(d + "/reference_logits.safetensors");
  EXPECT_TRUE(file.ok()) << file.status();
  return file.ok() ? file->Get("logits")->clone() : at::zeros({1});
}

// PEFT's merge of the adapter saved in dir/adapter (gpt2_reference.py --merged) and
// ours (MergeInto `base`'s clone, saved in GPT-2's Conv1D layout) both give `peft`,
// the adapted model's logits in the transcription.
void ExpectGpt2MergesGive(const at::Tensor& peft, Adapter& lora, const CausalLM& base, const std::string& dir,
                          const std::string& tag) {
  const std::string peft_merged = testing::TempDir(tag + "_peft_merged");
  std::filesystem::copy(dir, peft_merged, std::filesystem::copy_options::recursive | std::filesystem::copy_options::overwrite_existing);
  EXPECT_LT((Gpt2ReferenceLogits(peft_merged, " --adapter " + dir + "/adapter --merged") - peft).abs().max().item<double>(), 1e-4);
  std::unique_ptr<CausalLM> merged = base.Clone();
  ASSERT_TRUE(lora.MergeInto(*merged).ok());
  const std::string ours = testing::TempDir(tag + "_our_merge");
  ASSERT_TRUE(SaveCausalLM(*merged, ours).ok());
  std::filesystem::copy_file(dir + "/ids.safetensors", ours + "/ids.safetensors", std::filesystem::copy_options::overwrite_existing);
  EXPECT_LT((Gpt2ReferenceLogits(ours) - peft).abs().max().item<double>(), 1e-4);
}

// GPT-2: LoRA on its Conv1D modules under PEFT's names
// (base_model.model.transformer.h.<i>.attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj),
// A [r, in] and B [out, r] as PEFT holds them for Conv1D, fan_in_fan_out = true. The
// adapted model equals PEFT's formula on those files (gpt2_reference.py) and our
// merge; our merged model, saved in GPT-2's Conv1D layout, equals in the python
// transcription what PEFT's merge (ΔWᵀ for fan_in_fan_out) gives. "c_proj" names
// both of a layer's c_proj, as PEFT's suffix match does; modules_to_save by GPT-2's
// names (wte).
TEST(LoraAdapterTest, Gpt2AdaptsItsConv1DModulesAsPeftDoes) {
  auto config = ModelConfig::FromJson({{"model_type", "gpt2"}, {"vocab_size", 97}, {"n_embd", 32}, {"n_inner", 48},
                                       {"n_layer", 2}, {"n_head", 4}, {"n_positions", 16}});
  ASSERT_TRUE(config.ok()) << config.status();
  const std::unique_ptr<Adapter> lora = AllLinearWithRandomB(*config);
  ASSERT_NE(lora, nullptr);
  std::map<std::string, at::Tensor> params = ParametersByName(*lora);
  EXPECT_EQ(params.size(), 2u * 4 * 2);  // A and B of 4 modules in 2 layers
  ASSERT_EQ(params.count("base_model.model.transformer.h.1.attn.c_attn.lora_B.weight"), 1u);
  EXPECT_EQ(params["base_model.model.transformer.h.1.attn.c_attn.lora_B.weight"].sizes(), at::IntArrayRef({96, 4}));
  EXPECT_EQ(params["base_model.model.transformer.h.1.attn.c_attn.lora_A.weight"].sizes(), at::IntArrayRef({4, 32}));
  EXPECT_EQ(params["base_model.model.transformer.h.0.mlp.c_proj.lora_A.weight"].sizes(), at::IntArrayRef({4, 48}));
  EXPECT_EQ(params["base_model.model.transformer.h.0.mlp.c_fc.lora_B.weight"].sizes(), at::IntArrayRef({48, 4}));

  const std::string dir = testing::TempDir("gpt2_lora");
  ExpectAdaptedModelMatchesPeftAndItsMerge(*config, *lora, dir);
  nlohmann::json saved = nlohmann::json::parse(testing::ReadFile(dir + "/adapter/adapter_config.json"));
  EXPECT_EQ(saved["target_modules"], nlohmann::json({"c_attn", "c_fc", "c_proj"}));
  EXPECT_EQ(saved["fan_in_fan_out"], true);
  // PEFT's forward on the adapter's files (the helper ran the transcription in dir).
  auto peft_file = SafetensorsFile::Open(dir + "/reference_logits.safetensors");
  ASSERT_TRUE(peft_file.ok()) << peft_file.status();
  const at::Tensor peft = peft_file->Get("logits")->clone();
  auto base = LoadCausalLM(dir, at::kFloat);  // the base the helper saved
  ASSERT_TRUE(base.ok()) << base.status();
  ExpectGpt2MergesGive(peft, *lora, **base, dir, "gpt2_lora");

  auto again = Lora({{"r", std::int64_t{4}}, {"lora_alpha", 8.0}, {"target_modules", std::vector<std::string>{"all-linear"}}});
  ASSERT_TRUE(again->Attach(*config, at::TensorOptions().dtype(at::kFloat), 9).ok());
  ASSERT_TRUE(again->Load(dir + "/adapter", **base).ok());
  for (const auto& [name, t] : again->NamedParameters()) EXPECT_TRUE(at::equal(t, params.at(name))) << name;

  auto c_proj = Lora({{"target_modules", std::vector<std::string>{"c_proj"}}});
  ASSERT_TRUE(c_proj->Attach(*config, at::TensorOptions().dtype(at::kFloat), 0).ok());
  EXPECT_EQ(c_proj->NamedParameters().size(), 2u * 2 * 2);  // attn.c_proj and mlp.c_proj of 2 layers
  auto llama_names = Lora({{"target_modules", std::vector<std::string>{"q_proj", "v_proj"}}});
  EXPECT_THAT(std::string(llama_names->Attach(*config, at::TensorOptions().dtype(at::kFloat), 0).message()),
              HasSubstr("its projections: c_attn, c_proj, c_fc in transformer.h.<i>"));
  auto with_wte = Lora({{"target_modules", std::vector<std::string>{"c_attn"}}, {"modules_to_save", std::vector<std::string>{"wte"}}});
  ASSERT_TRUE(with_wte->Attach(*config, at::TensorOptions().dtype(at::kFloat), 0).ok());
  EXPECT_EQ(with_wte->ModulesToSave(), std::vector<std::string>{"model.embed_tokens.weight"});
  ASSERT_TRUE(with_wte->Save(dir + "/with_wte", **base, "tiny").ok());
  auto file = SafetensorsFile::Open(dir + "/with_wte/adapter_model.safetensors");
  ASSERT_TRUE(file.ok());
  EXPECT_TRUE(file->Get("base_model.model.transformer.wte.weight").ok());
}

// DoRA on GPT-2's Conv1D modules: PEFT takes the weight as [out, in] (fan_in_fan_out)
// for the magnitudes' norms, one per output row of each module (c_attn's 3·n_embd:
// q, k and v rows together). With B and m moved, the adapted model equals
// gpt2_reference.py with PEFT's DoRA forward on the saved adapter, and our merge,
// saved in the Conv1D layout, equals PEFT's merged weight there.
TEST(LoraAdapterTest, Gpt2DoraOnConv1DMatchesPeftAndItsMerge) {
  auto config = ModelConfig::FromJson({{"model_type", "gpt2"}, {"vocab_size", 97}, {"n_embd", 32}, {"n_inner", 48},
                                       {"n_layer", 2}, {"n_head", 4}, {"n_positions", 16}});
  ASSERT_TRUE(config.ok()) << config.status();
  auto lora = Lora({{"r", std::int64_t{4}}, {"lora_alpha", 8.0}, {"use_dora", true},
                    {"target_modules", std::vector<std::string>{"all-linear"}}});
  ASSERT_TRUE(lora->Attach(*config, at::TensorOptions().dtype(at::kFloat), 2).ok());
  auto model = CausalLM::Random(*config, at::kFloat, 3);
  ASSERT_TRUE(model.ok());
  {
    c10::NoGradGuard no_grad;
    for (auto& [name, p] : (*model)->named_parameters()) {
      if (name.find("norm") == std::string::npos && name.find("ln_") == std::string::npos) p.mul_(10.0);
    }
  }
  ASSERT_TRUE(lora->Initialize(**model).ok());
  c10::NoGradGuard no_grad;
  RandomizeB(*lora, 6);
  at::manual_seed(7);
  for (auto& [name, p] : lora->NamedParameters()) {
    if (absl::EndsWith(name, ".lora_magnitude_vector")) at::Tensor(p).mul_(1 + 0.2 * at::randn(p.sizes()));
  }
  std::map<std::string, at::Tensor> params = ParametersByName(*lora);
  ASSERT_EQ(params.count("base_model.model.transformer.h.0.attn.c_attn.lora_magnitude_vector"), 1u);
  EXPECT_EQ(params["base_model.model.transformer.h.0.attn.c_attn.lora_magnitude_vector"].sizes(), at::IntArrayRef({96}));
  EXPECT_EQ(params["base_model.model.transformer.h.1.mlp.c_proj.lora_magnitude_vector"].sizes(), at::IntArrayRef({32}));
  (*model)->set_adapter(lora.get());
  const at::Tensor ids = at::randint(config->vocab_size, {2, 6}, at::kLong);
  const at::Tensor pos = at::arange(6, at::kLong).unsqueeze(0).expand({2, 6});
  const at::Tensor adapted = (*model)->Forward(ids, pos, at::Tensor(), nullptr);
  EXPECT_GT((adapted - (*model)->BaseView()->Forward(ids, pos, at::Tensor(), nullptr)).abs().max().item<double>(), 1e-2);

  const std::string dir = testing::TempDir("gpt2_dora");
  ASSERT_TRUE(SaveCausalLM(*(*model)->BaseView(), dir).ok());
  ASSERT_TRUE(SaveSafetensors(dir + "/ids.safetensors", {{"ids", ids}}).ok());
  ASSERT_TRUE(lora->Save(dir + "/adapter", **model, "tiny-gpt2").ok());
  EXPECT_EQ(nlohmann::json::parse(testing::ReadFile(dir + "/adapter/adapter_config.json"))["fan_in_fan_out"], true);
  const at::Tensor peft = Gpt2ReferenceLogits(dir, " --adapter " + dir + "/adapter");
  EXPECT_LT((adapted - peft).abs().max().item<double>(), 1e-4);
  ExpectGpt2MergesGive(peft, *lora, *(*model)->BaseView(), dir, "gpt2_dora");
}

// OPT: LoRA under PEFT's names (base_model.model.model.decoder.layers.<i>.self_attn.
// q_proj, out_proj, fc1, fc2, ...); PEFT's default q_proj/v_proj finds them; the
// adapted model equals PEFT's formula on those files (opt_reference.py) and its merge.
TEST(LoraAdapterTest, OptAdaptsItsModulesUnderPeftsNames) {
  auto config = ModelConfig::FromJson({{"model_type", "opt"}, {"vocab_size", 97}, {"hidden_size", 32}, {"ffn_dim", 48},
                                       {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"max_position_embeddings", 16}});
  ASSERT_TRUE(config.ok()) << config.status();
  const std::unique_ptr<Adapter> lora = AllLinearWithRandomB(*config);
  ASSERT_NE(lora, nullptr);
  std::map<std::string, at::Tensor> params = ParametersByName(*lora);
  EXPECT_EQ(params.size(), 2u * 6 * 2);  // A and B of 6 modules in 2 layers
  EXPECT_EQ(params.count("base_model.model.model.decoder.layers.1.self_attn.out_proj.lora_A.weight"), 1u);
  EXPECT_EQ(params["base_model.model.model.decoder.layers.0.fc2.lora_A.weight"].sizes(), at::IntArrayRef({4, 48}));
  ExpectAdaptedModelMatchesPeftAndItsMerge(*config, *lora, testing::TempDir("opt_lora"));
  auto defaults = Lora({});
  ASSERT_TRUE(defaults->Attach(*config, at::TensorOptions().dtype(at::kFloat), 0).ok());
  EXPECT_EQ(defaults->NamedParameters().size(), 2u * 2 * 2);  // q_proj and v_proj of 2 layers
}

// Cohere (with use_qk_norm and biases on q/k/v/o): LoRA under Llama's module names;
// the adapted model equals PEFT's formula on those files (cohere_reference.py) and
// its merge.
TEST(LoraAdapterTest, CohereAdaptsItsModulesAsPeftDoes) {
  auto config = ModelConfig::FromJson({{"model_type", "cohere"}, {"vocab_size", 97}, {"hidden_size", 32},
                                       {"intermediate_size", 48}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                                       {"num_key_value_heads", 2}, {"use_qk_norm", true}, {"attention_bias", true}});
  ASSERT_TRUE(config.ok()) << config.status();
  const std::unique_ptr<Adapter> lora = AllLinearWithRandomB(*config);
  ASSERT_NE(lora, nullptr);
  std::map<std::string, at::Tensor> params = ParametersByName(*lora);
  EXPECT_EQ(params.size(), 2u * 7 * 2);  // A and B of 7 modules in 2 layers
  EXPECT_EQ(params.count("base_model.model.model.layers.1.self_attn.o_proj.lora_B.weight"), 1u);
  ExpectAdaptedModelMatchesPeftAndItsMerge(*config, *lora, testing::TempDir("cohere_lora"));
}

// Cohere 2 (a windowed RoPE layer, then a NoPE full-attention one): LoRA under Llama's
// module names; the adapted model equals PEFT's formula on those files
// (cohere_reference.py) and its merge.
TEST(LoraAdapterTest, Cohere2AdaptsItsModulesAsPeftDoes) {
  auto config = ModelConfig::FromJson({{"model_type", "cohere2"}, {"vocab_size", 97}, {"hidden_size", 32},
                                       {"intermediate_size", 48}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                                       {"num_key_value_heads", 2}, {"sliding_window", 3}, {"sliding_window_pattern", 2}});
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_TRUE(config->uses_rope(0) && !config->uses_rope(1));
  const std::unique_ptr<Adapter> lora = AllLinearWithRandomB(*config);
  ASSERT_NE(lora, nullptr);
  EXPECT_EQ(ParametersByName(*lora).size(), 2u * 7 * 2);  // A and B of 7 modules in 2 layers
  ExpectAdaptedModelMatchesPeftAndItsMerge(*config, *lora, testing::TempDir("cohere2_lora"));
}

// GLM-4.5 (layer 0 dense, layer 1 a mixture of experts): LoRA on the attention of
// both and the MLP of the dense one (the experts are not linear sites); the adapted
// model equals PEFT's formula on those files (llama_reference.py) and its merge.
TEST(LoraAdapterTest, Glm4MoeAdaptsAttentionAndTheDenseMlp) {
  auto config = ModelConfig::FromJson({{"model_type", "glm4_moe"}, {"vocab_size", 97}, {"hidden_size", 32},
                                       {"intermediate_size", 48}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                                       {"num_key_value_heads", 2}, {"head_dim", 8}, {"rms_norm_eps", 1e-5},
                                       {"n_routed_experts", 4}, {"num_experts_per_tok", 2}, {"moe_intermediate_size", 16}});
  ASSERT_TRUE(config.ok()) << config.status();
  const std::unique_ptr<Adapter> lora = AllLinearWithRandomB(*config);
  ASSERT_NE(lora, nullptr);
  std::map<std::string, at::Tensor> params = ParametersByName(*lora);
  EXPECT_EQ(params.size(), 2u * (7 + 4));  // A and B: 7 modules of the dense layer, 4 of the MoE layer's attention
  EXPECT_EQ(params.count("base_model.model.model.layers.0.mlp.down_proj.lora_A.weight"), 1u);
  EXPECT_EQ(params.count("base_model.model.model.layers.1.mlp.down_proj.lora_A.weight"), 0u);
  ExpectAdaptedModelMatchesPeftAndItsMerge(*config, *lora, testing::TempDir("glm4_moe_lora"));
}

// GPT-OSS (every layer a mixture of experts): LoRA on q/k/v/o of each layer, the
// fused experts untouched; the adapted model equals PEFT's formula on those files
// (gpt_oss_reference.py) and its merge.
TEST(LoraAdapterTest, GptOssAdaptsItsAttention) {
  auto config = ModelConfig::FromJson({{"model_type", "gpt_oss"}, {"vocab_size", 97}, {"hidden_size", 32},
                                       {"intermediate_size", 16}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                                       {"num_key_value_heads", 2}, {"head_dim", 8}, {"sliding_window", 3},
                                       {"num_local_experts", 4}, {"num_experts_per_tok", 2}});
  ASSERT_TRUE(config.ok()) << config.status();
  const std::unique_ptr<Adapter> lora = AllLinearWithRandomB(*config);
  ASSERT_NE(lora, nullptr);
  EXPECT_EQ(ParametersByName(*lora).size(), 2u * 4 * 2);  // A and B of q/k/v/o in 2 layers
  ExpectAdaptedModelMatchesPeftAndItsMerge(*config, *lora, testing::TempDir("gpt_oss_lora"));
}

// DeepSeek-V3: LoRA on the latent attention's modules under PEFT's names (q_a_proj,
// q_b_proj, kv_a_proj_with_mqa, kv_b_proj, o_proj) and on the dense layer's MLP, not
// on the experts; then with q_proj where q_lora_rank is null. The adapted model
// equals PEFT's formula on those files (deepseek_v3_reference.py) and its merge.
TEST(LoraAdapterTest, DeepseekV3AdaptsItsLatentAttention) {
  for (const bool q_lora : {true, false}) {
    SCOPED_TRACE(q_lora ? "q_a_proj / q_b_proj" : "q_proj");
    nlohmann::json json = {{"model_type", "deepseek_v3"}, {"vocab_size", 97}, {"hidden_size", 32}, {"intermediate_size", 24},
                           {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"num_key_value_heads", 4},
                           {"q_lora_rank", 12}, {"kv_lora_rank", 10}, {"qk_nope_head_dim", 6}, {"qk_rope_head_dim", 4},
                           {"v_head_dim", 5}, {"n_routed_experts", 4}, {"num_experts_per_tok", 2}, {"n_group", 2},
                           {"topk_group", 1}, {"moe_intermediate_size", 8}, {"first_k_dense_replace", 1}};
    if (!q_lora) json["q_lora_rank"] = nullptr;
    auto config = ModelConfig::FromJson(json);
    ASSERT_TRUE(config.ok()) << config.status();
    const std::unique_ptr<Adapter> lora = AllLinearWithRandomB(*config);
    ASSERT_NE(lora, nullptr);
    std::map<std::string, at::Tensor> params = ParametersByName(*lora);
    // A and B of (q_a, q_b or q), kv_a, kv_b, o in 2 layers, of gate/up/down in the dense layer 0
    EXPECT_EQ(params.size(), 2u * ((q_lora ? 5 : 4) * 2 + 3));
    const std::string attn = "base_model.model.model.layers.1.self_attn.";
    EXPECT_EQ(params[attn + "kv_a_proj_with_mqa.lora_B.weight"].sizes(), at::IntArrayRef({14, 4}));
    EXPECT_EQ(params[attn + "kv_b_proj.lora_A.weight"].sizes(), at::IntArrayRef({4, 10}));
    EXPECT_EQ(params[attn + "o_proj.lora_A.weight"].sizes(), at::IntArrayRef({4, 20}));
    EXPECT_EQ(params.count(attn + (q_lora ? "q_b_proj.lora_B.weight" : "q_proj.lora_B.weight")), 1u);
    EXPECT_EQ(params.count("base_model.model.model.layers.1.mlp.gate_proj.lora_A.weight"), 0u);
    ExpectAdaptedModelMatchesPeftAndItsMerge(*config, *lora, testing::TempDir(q_lora ? "deepseek_lora" : "deepseek_q_lora"));
  }
}

// FalconMamba: LoRA on the mixer's nn.Linear modules under PEFT's names
// (base_model.model.backbone.layers.<i>.mixer.in_proj, x_proj, dt_proj, out_proj);
// the adapted model equals PEFT's formula on those files (mamba_reference.py) and
// its merge.
TEST(LoraAdapterTest, FalconMambaAdaptsItsMixer) {
  auto config = ModelConfig::FromJson({{"model_type", "falcon_mamba"}, {"vocab_size", 97}, {"hidden_size", 16},
                                       {"state_size", 4}, {"num_hidden_layers", 2}, {"conv_kernel", 3},
                                       {"time_step_rank", 4}});
  ASSERT_TRUE(config.ok()) << config.status();
  const std::unique_ptr<Adapter> lora = AllLinearWithRandomB(*config);
  ASSERT_NE(lora, nullptr);
  std::map<std::string, at::Tensor> params = ParametersByName(*lora);
  EXPECT_EQ(params.size(), 2u * 4 * 2);  // A and B of 4 modules in 2 layers
  EXPECT_EQ(params["base_model.model.backbone.layers.1.mixer.in_proj.lora_B.weight"].sizes(), at::IntArrayRef({64, 4}));
  EXPECT_EQ(params["base_model.model.backbone.layers.0.mixer.x_proj.lora_B.weight"].sizes(), at::IntArrayRef({12, 4}));
  EXPECT_EQ(params["base_model.model.backbone.layers.0.mixer.dt_proj.lora_A.weight"].sizes(), at::IntArrayRef({4, 4}));
  ExpectAdaptedModelMatchesPeftAndItsMerge(*config, *lora, testing::TempDir("falcon_mamba_lora"));
}

// BLOOM: LoRA under PEFT's names (base_model.model.transformer.h.<i>.self_attention.
// query_key_value, whose B rows interleave the heads as the checkpoint's, dense,
// mlp.dense_h_to_4h, mlp.dense_4h_to_h); the adapted model equals PEFT's formula on
// those files (bloom_reference.py) and its merge.
TEST(LoraAdapterTest, BloomAdaptsItsModulesUnderPeftsNames) {
  auto config = ModelConfig::FromJson({{"model_type", "bloom"}, {"vocab_size", 97}, {"hidden_size", 32},
                                       {"n_layer", 2}, {"n_head", 4}});
  ASSERT_TRUE(config.ok()) << config.status();
  const std::unique_ptr<Adapter> lora = AllLinearWithRandomB(*config);
  ASSERT_NE(lora, nullptr);
  std::map<std::string, at::Tensor> params = ParametersByName(*lora);
  EXPECT_EQ(params.size(), 2u * 4 * 2);  // A and B of 4 modules in 2 layers
  EXPECT_EQ(params["base_model.model.transformer.h.1.self_attention.query_key_value.lora_B.weight"].sizes(),
            at::IntArrayRef({96, 4}));
  ExpectAdaptedModelMatchesPeftAndItsMerge(*config, *lora, testing::TempDir("bloom_lora"));
}

// Phi: LoRA under PEFT's names (self_attn.q_proj/k_proj/v_proj/dense, mlp.fc1/fc2);
// the adapted model equals PEFT's formula on those files (phi_reference.py) and its
// merge.
TEST(LoraAdapterTest, PhiAdaptsItsModulesUnderPeftsNames) {
  auto config = ModelConfig::FromJson({{"model_type", "phi"}, {"vocab_size", 97}, {"hidden_size", 32},
                                       {"intermediate_size", 48}, {"num_hidden_layers", 2}, {"num_attention_heads", 4}});
  ASSERT_TRUE(config.ok()) << config.status();
  const std::unique_ptr<Adapter> lora = AllLinearWithRandomB(*config);
  ASSERT_NE(lora, nullptr);
  std::map<std::string, at::Tensor> params = ParametersByName(*lora);
  EXPECT_EQ(params.size(), 2u * 6 * 2);  // A and B of 6 modules in 2 layers
  EXPECT_EQ(params.count("base_model.model.model.layers.1.self_attn.dense.lora_A.weight"), 1u);
  EXPECT_EQ(params["base_model.model.model.layers.0.mlp.fc2.lora_A.weight"].sizes(), at::IntArrayRef({4, 48}));
  ExpectAdaptedModelMatchesPeftAndItsMerge(*config, *lora, testing::TempDir("phi_lora"));
}

// GPT-J: LoRA under PEFT's names (attn.q_proj/k_proj/v_proj/out_proj, mlp.fc_in/fc_out
// in transformer.h.<i>); the adapted model equals PEFT's formula on those files
// (gptj_reference.py) and its merge.
TEST(LoraAdapterTest, GptjAdaptsItsModulesUnderPeftsNames) {
  auto config = ModelConfig::FromJson({{"model_type", "gptj"}, {"vocab_size", 97}, {"n_embd", 32}, {"n_inner", 48},
                                       {"n_layer", 2}, {"n_head", 4}, {"rotary_dim", 4}, {"n_positions", 64}});
  ASSERT_TRUE(config.ok()) << config.status();
  const std::unique_ptr<Adapter> lora = AllLinearWithRandomB(*config);
  ASSERT_NE(lora, nullptr);
  std::map<std::string, at::Tensor> params = ParametersByName(*lora);
  EXPECT_EQ(params.size(), 2u * 6 * 2);  // A and B of 6 modules in 2 layers
  EXPECT_EQ(params.count("base_model.model.transformer.h.1.attn.out_proj.lora_A.weight"), 1u);
  EXPECT_EQ(params["base_model.model.transformer.h.0.mlp.fc_out.lora_A.weight"].sizes(), at::IntArrayRef({4, 48}));
  ExpectAdaptedModelMatchesPeftAndItsMerge(*config, *lora, testing::TempDir("gptj_lora"));
}

// GPT-Neo: LoRA under PEFT's names (attn.attention.q_proj/k_proj/v_proj/out_proj,
// mlp.c_fc/c_proj in transformer.h.<i>, nn.Linear); the adapted model equals PEFT's
// formula on those files (gpt_neo_reference.py) and its merge.
TEST(LoraAdapterTest, GptNeoAdaptsItsModulesUnderPeftsNames) {
  auto config = ModelConfig::FromJson({{"model_type", "gpt_neo"}, {"vocab_size", 97}, {"hidden_size", 32},
                                       {"num_layers", 2}, {"num_heads", 4}, {"intermediate_size", 48}, {"window_size", 4},
                                       {"attention_types", {{{"global", "local"}, 1}}}});
  ASSERT_TRUE(config.ok()) << config.status();
  const std::unique_ptr<Adapter> lora = AllLinearWithRandomB(*config);
  ASSERT_NE(lora, nullptr);
  std::map<std::string, at::Tensor> params = ParametersByName(*lora);
  EXPECT_EQ(params.size(), 2u * 6 * 2);  // A and B of 6 modules in 2 layers
  EXPECT_EQ(params.count("base_model.model.transformer.h.1.attn.attention.out_proj.lora_A.weight"), 1u);
  EXPECT_EQ(params["base_model.model.transformer.h.0.mlp.c_proj.lora_A.weight"].sizes(), at::IntArrayRef({4, 48}));
  ExpectAdaptedModelMatchesPeftAndItsMerge(*config, *lora, testing::TempDir("gpt_neo_lora"));
}

// GPTBigCode: LoRA under PEFT's names (attn.c_attn, whose B rows are the checkpoint's:
// q, k, v one after the other with multi_query, else interleaved by head; attn.c_proj,
// mlp.c_fc, mlp.c_proj); the adapted model equals PEFT's formula on those files
// (gpt_bigcode_reference.py) and its merge.
TEST(LoraAdapterTest, GptBigCodeAdaptsItsModulesUnderPeftsNames) {
  for (const bool multi_query : {true, false}) {
    SCOPED_TRACE(multi_query ? "multi_query" : "one key/value head per head");
    auto config = ModelConfig::FromJson({{"model_type", "gpt_bigcode"}, {"vocab_size", 97}, {"n_embd", 32}, {"n_inner", 48},
                                         {"n_layer", 2}, {"n_head", 4}, {"n_positions", 64}, {"multi_query", multi_query}});
    ASSERT_TRUE(config.ok()) << config.status();
    const std::unique_ptr<Adapter> lora = AllLinearWithRandomB(*config);
    ASSERT_NE(lora, nullptr);
    std::map<std::string, at::Tensor> params = ParametersByName(*lora);
    EXPECT_EQ(params.size(), 2u * 4 * 2);  // A and B of 4 modules in 2 layers
    EXPECT_EQ(params["base_model.model.transformer.h.1.attn.c_attn.lora_B.weight"].sizes(),
              at::IntArrayRef({multi_query ? 48 : 96, 4}));
    ExpectAdaptedModelMatchesPeftAndItsMerge(*config, *lora, testing::TempDir(multi_query ? "bigcode_mq_lora" : "bigcode_lora"));
  }
}

// Falcon: LoRA under PEFT's names (self_attention.query_key_value, whose B rows are
// the checkpoint's: q, k, v one after the other with multi_query, interleaved by head
// without it, grouped by key/value head in the new architecture; self_attention.dense,
// mlp.dense_h_to_4h, mlp.dense_4h_to_h); the adapted
// model equals PEFT's formula on those files (falcon_reference.py) and its merge.
TEST(LoraAdapterTest, FalconAdaptsItsModulesUnderPeftsNames) {
  struct Case {
    const char* name;
    nlohmann::json fields;
    std::int64_t qkv_rows;
  };
  for (const Case& c : {Case{"multi_query", {{"multi_query", true}}, 48},
                        Case{"one key/value head per head", {{"multi_query", false}, {"bias", true}}, 96},
                        Case{"grouped: 2 key/value heads of 4", {{"new_decoder_architecture", true}, {"num_kv_heads", 2}}, 64}}) {
    SCOPED_TRACE(c.name);
    nlohmann::json json = {{"model_type", "falcon"}, {"vocab_size", 97}, {"hidden_size", 32}, {"num_hidden_layers", 2},
                           {"num_attention_heads", 4}};
    json.update(c.fields);
    auto config = ModelConfig::FromJson(json);
    ASSERT_TRUE(config.ok()) << config.status();
    const std::unique_ptr<Adapter> lora = AllLinearWithRandomB(*config);
    ASSERT_NE(lora, nullptr);
    std::map<std::string, at::Tensor> params = ParametersByName(*lora);
    EXPECT_EQ(params.size(), 2u * 4 * 2);  // A and B of 4 modules in 2 layers
    EXPECT_EQ(params["base_model.model.transformer.h.1.self_attention.query_key_value.lora_B.weight"].sizes(),
              at::IntArrayRef({c.qkv_rows, 4}));
    ExpectAdaptedModelMatchesPeftAndItsMerge(*config, *lora, testing::TempDir(absl::StrCat("falcon_lora_", c.qkv_rows)));
  }
}

// DBRX: LoRA under PEFT's names for its attention (transformer.blocks.<i>.
// norm_attn_norm.attn.Wqkv, whose B rows are q's, k's, v's, and out_proj; its experts
// are fused parameters, not Linear modules, as in PEFT); the adapted model, with
// clip_qkv clamping the adapted q/k/v, equals PEFT's formula on those files
// (dbrx_reference.py) and its merge.
TEST(LoraAdapterTest, DbrxAdaptsItsAttentionUnderPeftsNames) {
  auto config = ModelConfig::FromJson({{"model_type", "dbrx"}, {"vocab_size", 97}, {"d_model", 32}, {"n_heads", 4},
                                       {"n_layers", 2}, {"attn_config", {{"kv_n_heads", 2}, {"clip_qkv", 2.0}}},
                                       {"ffn_config", {{"ffn_hidden_size", 12}, {"moe_num_experts", 3}, {"moe_top_k", 2}}}});
  ASSERT_TRUE(config.ok()) << config.status();
  const std::unique_ptr<Adapter> lora = AllLinearWithRandomB(*config);
  ASSERT_NE(lora, nullptr);
  std::map<std::string, at::Tensor> params = ParametersByName(*lora);
  EXPECT_EQ(params.size(), 2u * 2 * 2);  // A and B of 2 modules in 2 layers
  EXPECT_EQ(params["base_model.model.transformer.blocks.1.norm_attn_norm.attn.Wqkv.lora_B.weight"].sizes(),
            at::IntArrayRef({32 + 2 * 16, 4}));
  EXPECT_EQ(params.count("base_model.model.transformer.blocks.0.norm_attn_norm.attn.out_proj.lora_A.weight"), 1u);
  ExpectAdaptedModelMatchesPeftAndItsMerge(*config, *lora, testing::TempDir("dbrx_lora"));
}

// StableLM (parallel, with qk_layernorm): LoRA on Llama's module names; the adapted
// model equals PEFT's formula on those files (stablelm_reference.py) and its merge.
TEST(LoraAdapterTest, StableLmAdaptsItsModulesAsPeftDoes) {
  auto config = ModelConfig::FromJson({{"model_type", "stablelm"}, {"vocab_size", 97}, {"hidden_size", 32},
                                       {"intermediate_size", 48}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                                       {"use_parallel_residual", true}, {"qk_layernorm", true}, {"use_qkv_bias", true}});
  ASSERT_TRUE(config.ok()) << config.status();
  const std::unique_ptr<Adapter> lora = AllLinearWithRandomB(*config);
  ASSERT_NE(lora, nullptr);
  EXPECT_EQ(ParametersByName(*lora).size(), 2u * 7 * 2);  // A and B of 7 modules in 2 layers
  ExpectAdaptedModelMatchesPeftAndItsMerge(*config, *lora, testing::TempDir("stablelm_lora"));
}

// StarCoder2: LoRA under PEFT's names (self_attn.q/k/v/o_proj, mlp.c_fc, mlp.c_proj:
// nn.Linear, not GPT-2's Conv1D); the adapted model equals PEFT's formula on those
// files (starcoder2_reference.py) and its merge.
TEST(LoraAdapterTest, Starcoder2AdaptsItsModulesUnderPeftsNames) {
  auto config = ModelConfig::FromJson({{"model_type", "starcoder2"}, {"vocab_size", 97}, {"hidden_size", 32},
                                       {"intermediate_size", 48}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                                       {"num_key_value_heads", 2}});
  ASSERT_TRUE(config.ok()) << config.status();
  const std::unique_ptr<Adapter> lora = AllLinearWithRandomB(*config);
  ASSERT_NE(lora, nullptr);
  std::map<std::string, at::Tensor> params = ParametersByName(*lora);
  EXPECT_EQ(params.size(), 2u * 6 * 2);  // A and B of 6 modules in 2 layers
  EXPECT_EQ(params["base_model.model.model.layers.0.mlp.c_proj.lora_A.weight"].sizes(), at::IntArrayRef({4, 48}));
  ExpectAdaptedModelMatchesPeftAndItsMerge(*config, *lora, testing::TempDir("starcoder2_lora"));
}

// On a mixture of experts the experts are not linear sites (transformers 5 keeps them
// as fused parameters, which PEFT's all-linear passes over): all-linear adapts the
// attention of every layer and the MLP of the dense layer only (mlp_only_layers);
// the adapted model equals the python transcription of PEFT's formula (padded and
// padding-free) and its merge; "gate_proj" alone adapts the dense layer's.
TEST(LoraAdapterTest, MixtureOfExpertsAdaptsAttentionAndDenseLayersOnly) {
  auto config = ModelConfig::FromJson({{"model_type", "qwen3_moe"}, {"vocab_size", 97}, {"hidden_size", 32},
                                       {"intermediate_size", 48}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                                       {"num_key_value_heads", 2}, {"head_dim", 8}, {"num_experts", 4},
                                       {"num_experts_per_tok", 2}, {"moe_intermediate_size", 16}, {"mlp_only_layers", {1}}});
  ASSERT_TRUE(config.ok()) << config.status();
  const std::unique_ptr<Adapter> lora = AllLinearWithRandomB(*config);
  ASSERT_NE(lora, nullptr);
  std::map<std::string, at::Tensor> params = ParametersByName(*lora);
  EXPECT_EQ(params.size(), 2u * (4 * 2 + 3));  // A and B: 4 attention modules in 2 layers, 3 MLP modules in layer 1
  EXPECT_EQ(params.count("base_model.model.model.layers.1.mlp.down_proj.lora_A.weight"), 1u);
  EXPECT_EQ(params.count("base_model.model.model.layers.0.mlp.down_proj.lora_A.weight"), 0u);

  ExpectAdaptedModelMatchesPeftAndItsMerge(*config, *lora, testing::TempDir("moe_lora"));

  auto gate_only = Lora({{"target_modules", std::vector<std::string>{"gate_proj"}}});
  ASSERT_TRUE(gate_only->Attach(*config, at::TensorOptions().dtype(at::kFloat), 0).ok());
  ASSERT_EQ(gate_only->NamedParameters().size(), 2u);
  EXPECT_THAT(gate_only->NamedParameters()[0].first, HasSubstr("model.layers.1.mlp.gate_proj"));
}

// The model with the adapter = the merged model (padded, padding-free paths);
// saved and loaded back (PEFT's names and config) it gives the same logits.
TEST(LoraAdapterTest, AdapterEqualsMergedAndSurvivesSaveAndLoad) {
  const ModelConfig config = testing::TinyTrainerModelConfig();
  auto lora = Lora({{"r", std::int64_t{4}}, {"lora_alpha", 16.0}, {"target_modules", std::vector<std::string>{"all-linear"}},
                    {"modules_to_save", std::vector<std::string>{"lm_head"}}});
  ASSERT_TRUE(lora->Attach(config, at::TensorOptions().dtype(at::kFloat), 4).ok());
  RandomizeB(*lora, 9);
  auto model = CausalLM::Random(config, at::kFloat, 8);
  ASSERT_TRUE(model.ok());
  (*model)->set_adapter(lora.get());
  const at::Tensor ids = at::randint(config.vocab_size, {2, 7}, at::kLong);
  const at::Tensor pos = at::arange(7, at::kLong).unsqueeze(0).expand({2, 7});
  c10::NoGradGuard no_grad;
  const at::Tensor adapted = (*model)->Forward(ids, pos, at::Tensor(), nullptr);
  std::vector<std::vector<std::int64_t>> seqs;
  for (int b = 0; b < 2; ++b) seqs.emplace_back(ids[b].data_ptr<std::int64_t>(), ids[b].data_ptr<std::int64_t>() + 7);
  const at::Tensor packed = (*model)->Logits((*model)->PackedHidden(PackSequences(seqs)));
  EXPECT_LT((packed.view({2, 7, -1}) - adapted).abs().max().item<double>(), 1e-5);
  // The base view shares the weights and has no adapter.
  const at::Tensor base = (*model)->BaseView()->Forward(ids, pos, at::Tensor(), nullptr);
  EXPECT_GT((base - adapted).abs().max().item<double>(), 1e-3);

  const std::string dir = testing::TempDir("lora_saved");
  ASSERT_TRUE(lora->Save(dir, **model, "tiny").ok());
  nlohmann::json saved_config = nlohmann::json::parse(testing::ReadFile(dir + "/adapter_config.json"));
  EXPECT_EQ(saved_config["peft_type"], "LORA");
  EXPECT_EQ(saved_config["task_type"], "CAUSAL_LM");
  EXPECT_EQ(saved_config["r"], 4);
  EXPECT_EQ(saved_config["target_modules"].size(), 7u);
  auto file = SafetensorsFile::Open(dir + "/adapter_model.safetensors");
  ASSERT_TRUE(file.ok());
  EXPECT_TRUE(file->Get("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight").ok());
  EXPECT_TRUE(file->Get("base_model.model.lm_head.weight").ok());  // modules_to_save

  // Merge into a fresh copy of the base: the same function.
  std::unique_ptr<CausalLM> merged = (*model)->BaseView()->Clone();
  ASSERT_TRUE(lora->MergeInto(*merged).ok());
  EXPECT_LT((merged->Forward(ids, pos, at::Tensor(), nullptr) - adapted).abs().max().item<double>(), 1e-5);

  // Loaded by its own config onto a fresh base.
  auto fresh = CausalLM::Random(config, at::kFloat, 8);
  ASSERT_TRUE(fresh.ok());
  auto loaded = LoadSavedAdapter(testing::BuiltinHost().registry(), dir, **fresh);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  (*fresh)->set_adapter(loaded->get());
  EXPECT_LT(((*fresh)->Forward(ids, pos, at::Tensor(), nullptr) - adapted).abs().max().item<double>(), 1e-6);

  // A config asking for what is not implemented is refused by name.
  saved_config["layers_to_transform"] = {0};
  testing::WriteFile(dir + "/adapter_config.json", saved_config.dump());
  auto partial = LoadSavedAdapter(testing::BuiltinHost().registry(), dir, **fresh);
  ASSERT_FALSE(partial.ok());
  EXPECT_THAT(std::string(partial.status().message()), HasSubstr("layers_to_transform = [0]"));
  saved_config.erase("layers_to_transform");

  // Fuzzing found a config whose lora_dropout (5.0) reached at::dropout and aborted:
  // an adapter_config.json is held to the plugin's option ranges like a recipe.
  testing::WriteFile(dir + "/adapter_config.json",
                     testing::ReadFile(testing::SourceDir() + "/tests/fuzz/regressions/adapter_config_dropout_out_of_range"));
  auto dropout = LoadSavedAdapter(testing::BuiltinHost().registry(), dir, **fresh);
  ASSERT_FALSE(dropout.ok());
  EXPECT_THAT(std::string(dropout.status().message()), HasSubstr("adapter_config.json: \"lora_dropout\" must be in [0, 1), got 5"));
  // ... and one whose r (8.6e17) overflowed libtorch's size computation, an exception
  // out of Attach: a rank past both dimensions of a layer is refused by name.
  testing::WriteFile(dir + "/adapter_config.json",
                     testing::ReadFile(testing::SourceDir() + "/tests/fuzz/regressions/adapter_config_rank_overflow"));
  auto rank = LoadSavedAdapter(testing::BuiltinHost().registry(), dir, **fresh);
  ASSERT_FALSE(rank.ok());
  EXPECT_THAT(std::string(rank.status().message()), HasSubstr("r = 855555555555555558 exceeds both dimensions of model.layers.0."));
  // ... and one whose target_modules std::regex accepted and then backtracked on for
  // minutes: read as Python's re reads it (PCRE2), it is no regular expression at all
  // (".+++"); matching is bounded in any case (regex_test.cc).
  testing::WriteFile(dir + "/adapter_config.json",
                     testing::ReadFile(testing::SourceDir() + "/tests/fuzz/regressions/adapter_config_regex_backtracking"));
  const auto start = std::chrono::steady_clock::now();
  auto regex = LoadSavedAdapter(testing::BuiltinHost().registry(), dir, **fresh);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  ASSERT_FALSE(regex.ok());
  EXPECT_THAT(std::string(regex.status().message()), HasSubstr("[peft] target_modules: '.+++"));
  EXPECT_THAT(std::string(regex.status().message()), HasSubstr("is not a regular expression"));
}

}  // namespace
}  // namespace posttrain

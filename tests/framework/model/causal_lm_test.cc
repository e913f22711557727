#include "posttrain/model/causal_lm.h"

#include <c10/core/GradMode.h>
#include <cstring>
#include <fstream>
#include <tuple>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "posttrain/generation/generate.h"
#include "posttrain/generation/logprobs.h"
#include "posttrain/model/completion_batch.h"
#include "posttrain/model/hf_model.h"
#include "posttrain/model/llama2c.h"
#include "posttrain/model/safetensors.h"
#include "posttrain/model/token_logprobs.h"
#include "posttrain/tokenizer/tokenizer.h"
#include "test_support.h"

namespace posttrain {
namespace {

using ::testing::HasSubstr;

ModelConfig TinyConfig() {
  ModelConfig c;
  c.vocab_size = 97;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.rms_norm_eps = 1e-5;
  c.eos_token_ids = {2};
  return c;
}

at::Tensor Positions(std::int64_t b, std::int64_t t) { return at::arange(t, at::kLong).repeat({b, 1}); }

// The logits of CacheVersusFull's ids from one full forward.
at::Tensor FullLogits(const CausalLM& model) {
  c10::NoGradGuard no_grad;
  at::manual_seed(42);
  const std::int64_t B = 3, T = 12;
  at::Tensor ids = at::randint(model.config().vocab_size, {B, T}, at::kLong);
  return model.Forward(ids, Positions(B, T), at::Tensor(), nullptr);
}

// Teacher-forced logits from one full forward vs. a prefill and then one token at
// a time through the KV cache; returns max |difference| and max |logit|.
std::pair<double, double> CacheVersusFull(const CausalLM& model) {
  c10::NoGradGuard no_grad;
  at::manual_seed(42);
  const std::int64_t B = 3, T = 12;
  at::Tensor ids = at::randint(model.config().vocab_size, {B, T}, at::kLong);
  at::Tensor full = model.Forward(ids, Positions(B, T), at::Tensor(), nullptr);
  KVCache cache = model.NewCache(B, T);
  std::vector<at::Tensor> pieces = {model.Forward(ids.narrow(1, 0, 5), Positions(B, 5), at::ones({B, 5}, at::kLong), &cache)};
  for (std::int64_t t = 5; t < T; ++t) {
    pieces.push_back(model.Forward(ids.narrow(1, t, 1), at::full({B, 1}, t, at::kLong), at::ones({B, t + 1}, at::kLong), &cache));
  }
  at::Tensor incremental = at::cat(pieces, 1);
  return {(full - incremental).abs().max().item<double>(), full.abs().max().item<double>()};
}

// Which decoder layer a tensor belongs to, from HF's and PEFT's names.
TEST(DecoderLayerOfTest, HfAndPeftNames) {
  EXPECT_EQ(DecoderLayerOf("model.layers.0.self_attn.q_proj.weight"), 0);
  EXPECT_EQ(DecoderLayerOf("model.layers.12.mlp.down_proj.weight"), 12);
  EXPECT_EQ(DecoderLayerOf("base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight"), 3);
  EXPECT_EQ(DecoderLayerOf("model.embed_tokens.weight"), -1);
  EXPECT_EQ(DecoderLayerOf("lm_head.weight"), -1);
  EXPECT_EQ(DecoderLayerOf("model.layers.x.mlp.up_proj.weight"), -1);
  EXPECT_EQ(DecoderLayerOf("model.layers.4"), -1);
  EXPECT_EQ(DecoderLayerOf("mymodel.layers.2.mlp.up_proj.weight"), -1);
}

TEST(CausalLMTest, KVCacheLogitsEqualFullRecomputation) {
  // In fp64 the cache path must agree to rounding: any indexing, masking or
  // position error would show as differences of order 1e-2 and more.
  auto random = CausalLM::Random(TinyConfig(), at::kDouble, 1);
  ASSERT_TRUE(random.ok());
  EXPECT_LT(CacheVersusFull(**random).first, 1e-10);
  auto stories64 = LoadCausalLM(testing::Stories260KDir(), at::kDouble);
  ASSERT_TRUE(stories64.ok()) << stories64.status();
  EXPECT_LT(CacheVersusFull(**stories64).first, 1e-10);
  // In fp32 the two paths sum in different orders (a BLAS blocks a product by its row
  // count: a lone Linear differs by ~2e-5 between 36 rows and 3), so the bound is
  // fp32's own: twice the full fp32 forward's distance from the fp64 forward of the
  // same weights (seen: ~1e-5 at max |logit| 16); an indexing error is 1e-2 and more.
  auto stories = LoadCausalLM(testing::Stories260KDir(), at::kFloat);
  ASSERT_TRUE(stories.ok());
  auto [diff, scale] = CacheVersusFull(**stories);
  const double rounding =
      std::max(1e-6, (FullLogits(**stories).to(at::kDouble) - FullLogits(**stories64)).abs().max().item<double>());
  EXPECT_LT(diff, 2 * rounding) << "max |logit| " << scale << ", fp32 vs fp64 " << rounding;
  RecordProperty("fp32_max_abs_diff", std::to_string(diff));
  RecordProperty("fp32_max_abs_logit", std::to_string(scale));
}

// Logits of `ids` [B, T] from tests/framework/model/llama_reference.py, the
// transformers maths written out in python3-torch (no transformers package here),
// on `model`'s weights saved as safetensors.
// With `config_json`, the transcription reads that config.json (the one the model
// was parsed from) instead of the one posttrain writes back.
at::Tensor PythonReferenceLogits(const CausalLM& model, const at::Tensor& ids, const std::string& name,
                                 const nlohmann::json* config_json = nullptr,
                                 const std::string& script = "llama_reference.py") {
  const std::string dir = testing::TempDir(name);
  EXPECT_TRUE(SaveCausalLM(model, dir).ok());
  if (config_json != nullptr) testing::WriteFile(dir + "/config.json", config_json->dump());
  EXPECT_TRUE(SaveSafetensors(dir + "/ids.safetensors", {{"ids", ids}}).ok());
  std::string out;
  EXPECT_EQ(testing::RunCommand(posttrain::testing::Python() + " " + testing::SourceDir() + "/tests/framework/model/" + script + " " + dir, &out), 0) << out;
  auto file = SafetensorsFile::Open(dir + "/reference_logits.safetensors");
  EXPECT_TRUE(file.ok()) << file.status();
  return file.ok() ? *file->Get("logits") : at::Tensor();
}

// A random fp32 model whose projections and embedding have std 0.2 (10 times
// initializer_range) and norms 1: positions, windows and activations show clearly
// in the logits of a model this small.
std::unique_ptr<CausalLM> RandomWithStd02(const ModelConfig& config, std::uint64_t seed) {
  auto model = CausalLM::Random(config, at::kFloat, seed);
  EXPECT_TRUE(model.ok()) << model.status();
  c10::NoGradGuard no_grad;
  for (auto& [name, p] : (*model)->named_parameters()) {
    if (name.find("norm.weight") == std::string::npos) p.mul_(10.0);
  }
  return std::move(*model);
}

// Biases (zero at init) drawn with std `bias_std` and norm weights 1 + N(0, 0.3²), so
// that every bias and norm of a test model shows in its logits.
void RandomizeBiasesAndNorms(CausalLM& model, std::uint64_t seed, double bias_std = 0.2) {
  c10::NoGradGuard no_grad;
  at::manual_seed(seed);
  for (auto& [name, p] : model.named_parameters()) {
    if (absl::EndsWith(name, ".bias")) p.copy_(at::randn(p.sizes()) * bias_std);
    if (absl::StrContains(name, "norm.weight")) p.copy_(1 + at::randn(p.sizes()) * 0.3);
  }
}

// The model saved in `dir` (SaveCausalLM), loaded back: bit-identical logits of ids [B, T].
void ExpectLoadedBackGivesTheSameLogits(const CausalLM& m, const std::string& dir, const at::Tensor& ids) {
  auto loaded = LoadCausalLM(dir, at::kFloat);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  c10::NoGradGuard no_grad;
  const at::Tensor positions = Positions(ids.size(0), ids.size(1));
  EXPECT_TRUE(at::equal((*loaded)->Forward(ids, positions, at::Tensor(), nullptr), m.Forward(ids, positions, at::Tensor(), nullptr)));
}

// RandomWithStd02 for the Gemma family: its norms store offsets from 1 (0 at
// init, where a Gemma norm is a Llama norm at 1), so they get random ones (std
// 0.5) and each norm shows in the logits.
std::unique_ptr<CausalLM> RandomGemmaWithStd02(const ModelConfig& config, std::uint64_t seed) {
  std::unique_ptr<CausalLM> model = RandomWithStd02(config, seed);
  c10::NoGradGuard no_grad;
  at::manual_seed(seed + 1);
  for (auto& [name, p] : model->named_parameters()) {
    if (name.find("norm.weight") != std::string::npos) p.copy_(at::randn(p.sizes()) * 0.5);
  }
  return model;
}

// Every forward path against `expected` [2, T, V] within 1e-4: the padded forward,
// the padding-free stream, a KV cache filled by a prefill of `prefill` tokens and
// then one token at a time, and the fused fp32 decode step from an empty cache.
// decode_step = false: the model is one the fused decode step declines (CanDecodeStep).
void ExpectEveryPathGives(const CausalLM& m, const at::Tensor& ids, const at::Tensor& expected, std::int64_t prefill,
                          bool decode_step = true) {
  c10::NoGradGuard no_grad;
  const std::int64_t B = ids.size(0), T = ids.size(1);
  ASSERT_EQ(B, 2);
  EXPECT_LT((m.Forward(ids, Positions(B, T), at::Tensor(), nullptr) - expected).abs().max().item<double>(), 1e-4) << "padded";
  std::vector<std::vector<std::int64_t>> seqs;
  for (std::int64_t b = 0; b < B; ++b) seqs.emplace_back(ids[b].data_ptr<std::int64_t>(), ids[b].data_ptr<std::int64_t>() + T);
  EXPECT_LT((m.Logits(m.PackedHidden(PackSequences(seqs))).view({B, T, -1}) - expected).abs().max().item<double>(), 1e-4)
      << "packed";
  KVCache cache = m.NewCache(B, T);
  std::vector<at::Tensor> pieces = {
      m.Forward(ids.narrow(1, 0, prefill), Positions(B, prefill), at::ones({B, prefill}, at::kLong), &cache)};
  for (std::int64_t t = prefill; t < T; ++t) {
    pieces.push_back(m.Forward(ids.narrow(1, t, 1), at::full({B, 1}, t, at::kLong), at::ones({B, t + 1}, at::kLong), &cache));
  }
  EXPECT_LT((at::cat(pieces, 1) - expected).abs().max().item<double>(), 1e-4) << "KV cache";
  ASSERT_EQ(m.CanDecodeStep(), decode_step);
  if (!decode_step) return;
  KVCache fused = m.NewCache(B, T);
  for (std::int64_t t = 0; t < T; ++t) {
    const at::Tensor step = m.DecodeStep({ids[0][t].item<std::int64_t>(), ids[1][t].item<std::int64_t>()}, {t, t}, {0, 0}, &fused);
    EXPECT_LT((step - expected.select(1, t)).abs().max().item<double>(), 1e-4) << "decode step, position " << t;
  }
}

TEST(CausalLMTest, MatchesAnIndependentPythonImplementation) {
  ModelConfig config = TinyConfig();
  config.rope_scaling = RopeScaling{"llama3", 4.0, 1.0, 4.0, 16};
  auto model = CausalLM::Random(config, at::kFloat, 3);
  ASSERT_TRUE(model.ok());
  at::Tensor ids = at::randint(config.vocab_size, {2, 9}, at::kLong);
  const at::Tensor expected = PythonReferenceLogits(**model, ids, "py");
  ASSERT_TRUE(expected.defined());
  c10::NoGradGuard no_grad;
  at::Tensor logits = (*model)->Forward(ids, Positions(2, 9), at::Tensor(), nullptr);
  EXPECT_LT((logits - expected).abs().max().item<double>(), 1e-4);
}

// rope_scaling "linear": position p rotates as p / factor. With factor 2, positions
// 0, 2, 4, ... of the scaled model are positions 0, 1, 2, ... of the unscaled one;
// and the scaled model matches the python transcription. Saved and loaded back, the
// config keeps it.
TEST(CausalLMTest, LinearRopeScalingDividesPositions) {
  ModelConfig config = TinyConfig();
  auto plain = CausalLM::Random(config, at::kFloat, 4);
  config.rope_scaling = RopeScaling{"linear", 2.0};
  auto scaled = CausalLM::Random(config, at::kFloat, 4);
  ASSERT_TRUE(plain.ok() && scaled.ok());
  at::Tensor ids = at::randint(config.vocab_size, {2, 7}, at::kLong);
  c10::NoGradGuard no_grad;
  const at::Tensor at_double = (*scaled)->Forward(ids, Positions(2, 7) * 2, at::Tensor(), nullptr);
  const at::Tensor at_single = (*plain)->Forward(ids, Positions(2, 7), at::Tensor(), nullptr);
  EXPECT_LT((at_double - at_single).abs().max().item<double>(), 1e-5);
  const at::Tensor at_positions = (*scaled)->Forward(ids, Positions(2, 7), at::Tensor(), nullptr);
  EXPECT_GT((at_positions - at_single).abs().max().item<double>(), 1e-4) << "the scaling changed nothing";  // same weights: 0 if ignored
  const at::Tensor expected = PythonReferenceLogits(**scaled, ids, "py_linear");
  ASSERT_TRUE(expected.defined());
  EXPECT_LT((at_positions - expected).abs().max().item<double>(), 1e-4);
  auto reparsed = ModelConfig::FromJson(nlohmann::json::parse(config.ToJson().dump()));
  ASSERT_TRUE(reparsed.ok()) << reparsed.status();
  ASSERT_TRUE(reparsed->rope_scaling.has_value());
  EXPECT_EQ(reparsed->rope_scaling->rope_type, "linear");
  EXPECT_EQ(reparsed->rope_scaling->factor, 2.0);
}

// Mistral's sliding window (3 slots here, sequences of 9): the padded forward
// against the python transcription; the packed path, the KV cache one token at a
// time and the fused decode step against the padded forward; and the window does
// change the logits (a mask that ignored it would give the plain causal ones).
TEST(CausalLMTest, MistralSlidingWindowOnEveryPath) {
  ModelConfig config = TinyConfig();
  config.model_type = "mistral";
  config.architecture = "MistralForCausalLM";
  auto plain = CausalLM::Random(config, at::kFloat, 6);
  config.sliding_window = 3;
  auto model = CausalLM::Random(config, at::kFloat, 6);
  ASSERT_TRUE(plain.ok() && model.ok());
  const CausalLM& m = **model;
  const std::int64_t B = 2, T = 9;
  const at::Tensor ids = at::randint(config.vocab_size, {B, T}, at::kLong);
  c10::NoGradGuard no_grad;
  const at::Tensor full = m.Forward(ids, Positions(B, T), at::Tensor(), nullptr);
  EXPECT_GT((full - (*plain)->Forward(ids, Positions(B, T), at::Tensor(), nullptr)).abs().max().item<double>(), 1e-4);
  // The first 3 positions see no more than causal attention does.
  EXPECT_LT((full.narrow(1, 0, 3) - (*plain)->Forward(ids, Positions(B, T), at::Tensor(), nullptr).narrow(1, 0, 3))
                .abs().max().item<double>(), 1e-6);
  const at::Tensor expected = PythonReferenceLogits(m, ids, "py_mistral");
  ASSERT_TRUE(expected.defined());
  EXPECT_LT((full - expected).abs().max().item<double>(), 1e-4);
  // Packed.
  std::vector<std::vector<std::int64_t>> seqs;
  for (std::int64_t b = 0; b < B; ++b) seqs.emplace_back(ids[b].data_ptr<std::int64_t>(), ids[b].data_ptr<std::int64_t>() + T);
  const at::Tensor packed = m.Logits(m.PackedHidden(PackSequences(seqs)));
  EXPECT_LT((packed.view({B, T, -1}) - full).abs().max().item<double>(), 1e-5);
  // KV cache: a prefill of 4, then one token at a time.
  KVCache cache = m.NewCache(B, T);
  std::vector<at::Tensor> pieces = {m.Forward(ids.narrow(1, 0, 4), Positions(B, 4), at::ones({B, 4}, at::kLong), &cache)};
  for (std::int64_t t = 4; t < T; ++t) {
    pieces.push_back(m.Forward(ids.narrow(1, t, 1), at::full({B, 1}, t, at::kLong), at::ones({B, t + 1}, at::kLong), &cache));
  }
  EXPECT_LT((at::cat(pieces, 1) - full).abs().max().item<double>(), 1e-5);
  // The fused decode step.
  ASSERT_TRUE(m.CanDecodeStep());
  KVCache fused = m.NewCache(B, T);
  m.Forward(ids.narrow(1, 0, 4), Positions(B, 4), at::ones({B, 4}, at::kLong), &fused);
  for (std::int64_t t = 4; t < T; ++t) {
    const at::Tensor got = m.DecodeStep({ids[0][t].item<std::int64_t>(), ids[1][t].item<std::int64_t>()}, {t, t}, {0, 0}, &fused);
    EXPECT_LT((got - full.select(1, t)).abs().max().item<double>(), 1e-5) << "position " << t;
  }
  // Written back with its window.
  auto reparsed = ModelConfig::FromJson(nlohmann::json::parse(config.ToJson().dump()));
  ASSERT_TRUE(reparsed.ok()) << reparsed.status();
  EXPECT_EQ(reparsed->sliding_window, std::optional<std::int64_t>(3));
}

// Qwen2/Qwen3's per-layer sliding window: with use_sliding_window, the layers from
// max_window_layers on (or those layer_types marks "sliding_attention") attend
// within the window, the others to their whole past. Two layers, window 3, layer 1
// windowed: against the python transcription of transformers' rule, then the
// packed path, the KV cache and the decode step; and it is neither all-full nor
// all-windowed attention. The saved config reads back the same layers.
TEST(CausalLMTest, Qwen2PerLayerSlidingWindowOnEveryPath) {
  const nlohmann::json json = {{"model_type", "qwen2"}, {"vocab_size", 97}, {"hidden_size", 32},
                               {"intermediate_size", 48}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                               {"num_key_value_heads", 2}, {"rms_norm_eps", 1e-5}, {"max_position_embeddings", 64},
                               {"use_sliding_window", true}, {"sliding_window", 3}, {"max_window_layers", 1}};
  auto config = ModelConfig::FromJson(json);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->window_of(0), 0);
  EXPECT_EQ(config->window_of(1), 3);
  const std::unique_ptr<CausalLM> model = RandomWithStd02(*config, 8);
  const CausalLM& m = *model;
  const std::int64_t B = 2, T = 9;
  const at::Tensor ids = at::randint(config->vocab_size, {B, T}, at::kLong);
  const at::Tensor expected = PythonReferenceLogits(m, ids, "py_qwen2_window");
  ASSERT_TRUE(expected.defined());
  c10::NoGradGuard no_grad;
  ExpectEveryPathGives(m, ids, expected, /*prefill=*/4);
  std::map<std::string, at::Tensor> tensors(m.named_parameters().begin(), m.named_parameters().end());
  for (const bool windowed : {false, true}) {  // every layer full, every layer windowed
    ModelConfig other = *config;
    other.sliding_layers = {windowed, windowed};
    auto variant = CausalLM::FromTensors(other, tensors, at::kFloat);
    ASSERT_TRUE(variant.ok());
    EXPECT_GT(((*variant)->Forward(ids, Positions(B, T), at::Tensor(), nullptr) - expected).abs().max().item<double>(), 1e-3)
        << "all layers " << (windowed ? "windowed" : "full");
  }
  auto reparsed = ModelConfig::FromJson(nlohmann::json::parse(config->ToJson().dump()));
  ASSERT_TRUE(reparsed.ok()) << reparsed.status();
  EXPECT_EQ(reparsed->sliding_layers, (std::vector<bool>{false, true}));
  EXPECT_EQ(reparsed->sliding_window, std::optional<std::int64_t>(3));

  // layer_types, when given, decides; without use_sliding_window nothing is windowed.
  nlohmann::json typed = json;
  typed["model_type"] = "qwen3";
  typed["layer_types"] = {"sliding_attention", "full_attention"};
  EXPECT_EQ(ModelConfig::FromJson(typed)->sliding_layers, (std::vector<bool>{true, false}));
  nlohmann::json off = json;
  off["use_sliding_window"] = false;
  EXPECT_FALSE(ModelConfig::FromJson(off)->sliding_window.has_value());
  EXPECT_EQ(ModelConfig::FromJson(off)->window_of(1), 0);
  typed["use_sliding_window"] = false;
  EXPECT_THAT(std::string(ModelConfig::FromJson(typed).status().message()), HasSubstr("no sliding window is in use"));
  typed["layer_types"] = {"full_attention"};
  EXPECT_THAT(std::string(ModelConfig::FromJson(typed).status().message()), HasSubstr("one type per layer (2)"));
  nlohmann::json llama = json;
  llama["model_type"] = "llama";
  llama["layer_types"] = {"full_attention", "sliding_attention"};
  EXPECT_THAT(std::string(ModelConfig::FromJson(llama).status().message()), HasSubstr("in a llama model"));
}

// SmolLM3: Llama whose NoPE layers (no_rope_layers' 0s; by default every 4th) attend
// without RoPE. Three layers, a NoPE layer every 2nd (layer 1): against the python
// transcription, then the packed path, the KV cache and the decode step; the same
// weights with RoPE everywhere give other logits. Config defaults (tied head, theta
// 2e6) as SmolLM3Config's; written back with no_rope_layers.
TEST(CausalLMTest, SmolLM3NoPELayersOnEveryPath) {
  const nlohmann::json json = {{"model_type", "smollm3"}, {"vocab_size", 97}, {"hidden_size", 32},
                               {"intermediate_size", 48}, {"num_hidden_layers", 3}, {"num_attention_heads", 4},
                               {"num_key_value_heads", 2}, {"rms_norm_eps", 1e-6}, {"no_rope_layer_interval", 2}};
  auto config = ModelConfig::FromJson(json);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->architecture, "SmolLM3ForCausalLM");
  EXPECT_TRUE(config->tie_word_embeddings);
  EXPECT_EQ(config->rope_theta, 2000000.0);
  EXPECT_EQ(config->rope_layers, (std::vector<bool>{true, false, true}));
  const std::unique_ptr<CausalLM> model = RandomWithStd02(*config, 9);
  const CausalLM& m = *model;
  const std::int64_t B = 2, T = 8;
  const at::Tensor ids = at::randint(config->vocab_size, {B, T}, at::kLong);
  const at::Tensor expected = PythonReferenceLogits(m, ids, "py_smollm3");
  ASSERT_TRUE(expected.defined());
  c10::NoGradGuard no_grad;
  ExpectEveryPathGives(m, ids, expected, /*prefill=*/3);
  ModelConfig everywhere = *config;
  everywhere.rope_layers.clear();
  auto with_rope = CausalLM::FromTensors(everywhere, std::map<std::string, at::Tensor>(m.named_parameters().begin(), m.named_parameters().end()), at::kFloat);
  ASSERT_TRUE(with_rope.ok());
  EXPECT_GT(((*with_rope)->Forward(ids, Positions(B, T), at::Tensor(), nullptr) - expected).abs().max().item<double>(), 1e-3);
  auto reparsed = ModelConfig::FromJson(nlohmann::json::parse(config->ToJson().dump()));
  ASSERT_TRUE(reparsed.ok()) << reparsed.status();
  EXPECT_EQ(reparsed->rope_layers, config->rope_layers);
  // An explicit no_rope_layers decides; with use_sliding_window the NoPE layers are
  // the windowed ones unless layer_types says otherwise.
  nlohmann::json explicit_layers = json;
  explicit_layers["no_rope_layers"] = {0, 1, 1, 1};
  explicit_layers["use_sliding_window"] = true;
  explicit_layers["sliding_window"] = 4;
  auto parsed = ModelConfig::FromJson(explicit_layers);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->rope_layers, (std::vector<bool>{false, true, true}));
  EXPECT_EQ(parsed->sliding_layers, (std::vector<bool>{true, false, false}));
  explicit_layers["no_rope_layers"] = {1, 2, 1};
  EXPECT_THAT(std::string(ModelConfig::FromJson(explicit_layers).status().message()), HasSubstr("no_rope_layers[1] must be 0 or 1"));
  explicit_layers["no_rope_layers"] = {1, 1};
  EXPECT_THAT(std::string(ModelConfig::FromJson(explicit_layers).status().message()), HasSubstr("for each of the 3 layers"));
}

// Phi-3: q/k/v in one qkv_proj and gate/up in one gate_up_proj on disk, Mistral's
// window on every layer. Saved in that layout (no q_proj/gate_proj names), the python
// transcription slices the fused outputs as Phi3Attention / Phi3MLP do, and every
// path agrees with it; loaded back, the same logits. A fused tensor missing or of the
// wrong shape is named.
TEST(CausalLMTest, Phi3FusedProjectionsOnEveryPath) {
  const nlohmann::json json = {{"model_type", "phi3"}, {"vocab_size", 97}, {"hidden_size", 32},
                               {"intermediate_size", 48}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                               {"num_key_value_heads", 2}, {"sliding_window", 4}, {"rope_scaling", nullptr}};
  auto config = ModelConfig::FromJson(json);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->architecture, "Phi3ForCausalLM");
  EXPECT_TRUE(config->fused_projections);
  EXPECT_EQ(config->rms_norm_eps, 1e-5);  // Phi3Config's
  EXPECT_EQ(config->window_of(0), 4);
  EXPECT_EQ(config->window_of(1), 4);
  const std::unique_ptr<CausalLM> model = RandomWithStd02(*config, 12);
  const CausalLM& m = *model;
  const std::int64_t B = 2, T = 9;
  const at::Tensor ids = at::randint(config->vocab_size, {B, T}, at::kLong);
  const at::Tensor expected = PythonReferenceLogits(m, ids, "py_phi3");
  ASSERT_TRUE(expected.defined());
  ExpectEveryPathGives(m, ids, expected, /*prefill=*/3);

  const std::string dir = testing::TempDir("phi3_saved");
  ASSERT_TRUE(SaveCausalLM(m, dir).ok());
  auto file = SafetensorsFile::Open(dir + "/model.safetensors");
  ASSERT_TRUE(file.ok());
  EXPECT_EQ(file->Get("model.layers.1.self_attn.qkv_proj.weight")->sizes(), at::IntArrayRef({32 + 16 + 16, 32}));
  EXPECT_EQ(file->Get("model.layers.1.mlp.gate_up_proj.weight")->sizes(), at::IntArrayRef({2 * 48, 32}));
  EXPECT_FALSE(file->Contains("model.layers.1.self_attn.q_proj.weight"));
  EXPECT_FALSE(file->Contains("model.layers.1.mlp.up_proj.weight"));
  nlohmann::json saved = nlohmann::json::parse(testing::ReadFile(dir + "/config.json"));
  EXPECT_EQ(saved["model_type"], "phi3");
  EXPECT_EQ(saved["sliding_window"], 4);
  ExpectLoadedBackGivesTheSameLogits(m, dir, ids);
  c10::NoGradGuard no_grad;

  std::map<std::string, at::Tensor> tensors;
  for (const auto& [name, t] : FuseProjections(*config, m.named_parameters())) tensors[name] = t;
  auto missing = tensors;
  missing.erase("model.layers.0.mlp.gate_up_proj.weight");
  EXPECT_THAT(std::string(CausalLM::FromTensors(*config, missing, at::kFloat).status().message()),
              HasSubstr("lacks tensor 'model.layers.0.mlp.gate_up_proj.weight' of shape [96, 32]"));
  auto wrong = tensors;
  wrong["model.layers.0.self_attn.qkv_proj.weight"] = at::zeros({31, 32});
  EXPECT_THAT(std::string(CausalLM::FromTensors(*config, wrong, at::kFloat).status().message()),
              HasSubstr("tensor 'model.layers.0.self_attn.qkv_proj.weight' has shape [31, 32], config.json implies [64, 32]"));
  nlohmann::json biased = json;
  biased["attention_bias"] = true;
  EXPECT_THAT(std::string(ModelConfig::FromJson(biased).status().message()), HasSubstr("attention_bias = true"));
  nlohmann::json yarn = json;
  yarn["rope_scaling"] = {{"type", "yarn"}, {"factor", 4.0}};
  EXPECT_THAT(std::string(ModelConfig::FromJson(yarn).status().message()), HasSubstr("\"yarn\" is not supported for phi3"));
}

// Phi-3.5's longrope RoPE (rope_scaling type "longrope", or Phi-3's older "su"):
// each frequency divided by its short factor, or by its long one in a forward whose
// largest position + 1 exceeds original_max_position_embeddings (from the config's
// top level, as Phi-3 writes it), cos and sin times sqrt(1 + ln f / ln original)
// with f = max_position_embeddings / original. Within the original context every
// path against the python transcription; past it (original 4, 8 positions) the
// padded and packed paths (the KV cache path rotates early keys by the short
// factors, as transformers' cache does); the two tables give other logits.
TEST(CausalLMTest, Phi3LongRopeShortAndLongFactors) {
  nlohmann::json json = {{"model_type", "phi3"}, {"vocab_size", 97}, {"hidden_size", 32},
                         {"intermediate_size", 48}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                         {"num_key_value_heads", 2}, {"max_position_embeddings", 64},
                         {"original_max_position_embeddings", 16}};
  json["rope_scaling"] = {{"type", "su"}, {"short_factor", {1.0, 1.5, 2.0, 3.0}}, {"long_factor", {1.0, 4.0, 9.0, 20.0}}};
  auto config = ModelConfig::FromJson(json);
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_TRUE(config->rope_scaling.has_value());
  EXPECT_EQ(config->rope_scaling->rope_type, "longrope");
  EXPECT_EQ(config->rope_scaling->factor, 4.0);
  EXPECT_NEAR(config->rope_scaling->attention_factor, std::sqrt(1.0 + std::log(4.0) / std::log(16.0)), 1e-12);
  const std::unique_ptr<CausalLM> model = RandomWithStd02(*config, 14);
  const std::int64_t B = 2, T = 8;
  const at::Tensor ids = at::randint(config->vocab_size, {B, T}, at::kLong);
  const at::Tensor expected = PythonReferenceLogits(*model, ids, "py_longrope_short");
  ASSERT_TRUE(expected.defined());
  ExpectEveryPathGives(*model, ids, expected, /*prefill=*/3);

  nlohmann::json past = json;
  past["original_max_position_embeddings"] = 4;  // 8 positions: the long factors
  auto long_config = ModelConfig::FromJson(past);
  ASSERT_TRUE(long_config.ok()) << long_config.status();
  const std::map<std::string, at::Tensor> tensors(model->named_parameters().begin(), model->named_parameters().end());
  auto long_model = CausalLM::FromTensors(*long_config, tensors, at::kFloat);
  ASSERT_TRUE(long_model.ok());
  const at::Tensor long_expected = PythonReferenceLogits(**long_model, ids, "py_longrope_long");
  ASSERT_TRUE(long_expected.defined());
  c10::NoGradGuard no_grad;
  const at::Tensor padded = (*long_model)->Forward(ids, Positions(B, T), at::Tensor(), nullptr);
  EXPECT_LT((padded - long_expected).abs().max().item<double>(), 1e-4);
  std::vector<std::vector<std::int64_t>> seqs;
  for (std::int64_t b = 0; b < B; ++b) seqs.emplace_back(ids[b].data_ptr<std::int64_t>(), ids[b].data_ptr<std::int64_t>() + T);
  EXPECT_LT(((*long_model)->Logits((*long_model)->PackedHidden(PackSequences(seqs))).view({B, T, -1}) - long_expected)
                .abs().max().item<double>(), 1e-4);
  EXPECT_GT((long_expected - expected).abs().max().item<double>(), 1e-3);
  // Written back and read again: the same maths.
  auto reparsed = ModelConfig::FromJson(nlohmann::json::parse(long_config->ToJson().dump()));
  ASSERT_TRUE(reparsed.ok()) << reparsed.status();
  EXPECT_EQ(reparsed->rope_scaling->long_factor, long_config->rope_scaling->long_factor);
  EXPECT_EQ(reparsed->rope_scaling->original_max_position_embeddings, 4);
  EXPECT_EQ(reparsed->rope_scaling->attention_factor, long_config->rope_scaling->attention_factor);
  past["rope_scaling"]["short_factor"] = {1.0, 2.0};
  EXPECT_THAT(std::string(ModelConfig::FromJson(past).status().message()), HasSubstr("rotary_dim / 2 = 4 short_factor"));
}

// YaRN (rope_scaling "yarn", as Qwen2.5/Qwen3 document for long contexts): with an
// original context of 4096 and head_dim 16, frequencies 0-1 extrapolate, 2-5 ramp
// and 6-7 interpolate; cos and sin carry the attention factor 0.1 ln 4 + 1. Every
// path against the python transcription; the scaling changes the logits; the
// variants (no truncation, DeepSeek's mscale / mscale_all_dim) against the
// transcription too; the config written back keeps the maths.
TEST(CausalLMTest, YarnRopeOnEveryPath) {
  nlohmann::json json = {{"model_type", "qwen2"}, {"vocab_size", 97}, {"hidden_size", 64},
                         {"intermediate_size", 48}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                         {"num_key_value_heads", 2}, {"max_position_embeddings", 16384}, {"rope_theta", 10000.0}};
  json["rope_scaling"] = {{"type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 4096}};
  auto config = ModelConfig::FromJson(json);
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_TRUE(config->rope_scaling.has_value());
  EXPECT_EQ(config->rope_scaling->rope_type, "yarn");
  EXPECT_NEAR(config->rope_scaling->attention_factor, 0.1 * std::log(4.0) + 1.0, 1e-12);
  const std::unique_ptr<CausalLM> model = RandomWithStd02(*config, 21);
  const std::int64_t B = 2, T = 8;
  const at::Tensor ids = at::randint(config->vocab_size, {B, T}, at::kLong);
  const at::Tensor expected = PythonReferenceLogits(*model, ids, "py_yarn");
  ASSERT_TRUE(expected.defined());
  ExpectEveryPathGives(*model, ids, expected, /*prefill=*/3);
  const std::map<std::string, at::Tensor> tensors(model->named_parameters().begin(), model->named_parameters().end());
  nlohmann::json plain = json;
  plain.erase("rope_scaling");
  auto plain_model = CausalLM::FromTensors(*ModelConfig::FromJson(plain), tensors, at::kFloat);
  ASSERT_TRUE(plain_model.ok());
  c10::NoGradGuard no_grad;
  const at::Tensor yarn_logits = model->Forward(ids, Positions(B, T), at::Tensor(), nullptr);
  EXPECT_GT(((*plain_model)->Forward(ids, Positions(B, T), at::Tensor(), nullptr) - yarn_logits).abs().max().item<double>(), 1e-3);
  auto reparsed = ModelConfig::FromJson(nlohmann::json::parse(config->ToJson().dump()));
  ASSERT_TRUE(reparsed.ok()) << reparsed.status();
  auto reloaded = CausalLM::FromTensors(*reparsed, tensors, at::kFloat);
  ASSERT_TRUE(reloaded.ok());
  EXPECT_TRUE(at::equal((*reloaded)->Forward(ids, Positions(B, T), at::Tensor(), nullptr), yarn_logits));
  // The variants: bounds not truncated, attention factor from mscale's ratio.
  nlohmann::json variant = json;
  variant["rope_scaling"]["truncate"] = false;
  variant["rope_scaling"]["mscale"] = 0.707;
  variant["rope_scaling"]["mscale_all_dim"] = 1.5;
  auto variant_config = ModelConfig::FromJson(variant);
  ASSERT_TRUE(variant_config.ok()) << variant_config.status();
  EXPECT_NEAR(variant_config->rope_scaling->attention_factor,
              (0.1 * 0.707 * std::log(4.0) + 1.0) / (0.1 * 1.5 * std::log(4.0) + 1.0), 1e-12);
  auto variant_model = CausalLM::FromTensors(*variant_config, tensors, at::kFloat);
  ASSERT_TRUE(variant_model.ok());
  const at::Tensor variant_expected = PythonReferenceLogits(**variant_model, ids, "py_yarn_variant");
  ASSERT_TRUE(variant_expected.defined());
  const at::Tensor variant_logits = (*variant_model)->Forward(ids, Positions(B, T), at::Tensor(), nullptr);
  EXPECT_LT((variant_logits - variant_expected).abs().max().item<double>(), 1e-4);
  EXPECT_GT((variant_logits - yarn_logits).abs().max().item<double>(), 1e-3);
  variant["rope_scaling"].erase("factor");
  EXPECT_THAT(std::string(ModelConfig::FromJson(variant).status().message()), HasSubstr("rope_scaling (yarn) needs factor"));
}

// Dynamic NTK (rope_scaling "dynamic"): within max_position_embeddings (8 here) the
// model is the plain-RoPE one on every path; a forward of 11 positions rotates with
// the larger base, padded and packed against the python transcription, and differs
// from plain RoPE. The KV cache and the fused decode step, which see one more
// position per step as transformers' generation does, agree with each other.
TEST(CausalLMTest, DynamicNtkRopePastTheContext) {
  nlohmann::json json = {{"model_type", "llama"}, {"vocab_size", 97}, {"hidden_size", 32},
                         {"intermediate_size", 48}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                         {"num_key_value_heads", 2}, {"max_position_embeddings", 8}};
  json["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", 3.0}};
  auto config = ModelConfig::FromJson(json);
  ASSERT_TRUE(config.ok()) << config.status();
  const std::unique_ptr<CausalLM> model = RandomWithStd02(*config, 22);
  const std::map<std::string, at::Tensor> tensors(model->named_parameters().begin(), model->named_parameters().end());
  nlohmann::json plain = json;
  plain.erase("rope_scaling");
  auto plain_model = CausalLM::FromTensors(*ModelConfig::FromJson(plain), tensors, at::kFloat);
  ASSERT_TRUE(plain_model.ok());
  const std::int64_t B = 2;
  const at::Tensor short_ids = at::randint(config->vocab_size, {B, 8}, at::kLong);
  {
    c10::NoGradGuard no_grad;
    ExpectEveryPathGives(*model, short_ids, (*plain_model)->Forward(short_ids, Positions(B, 8), at::Tensor(), nullptr), 3);
  }
  const std::int64_t T = 11;
  const at::Tensor ids = at::randint(config->vocab_size, {B, T}, at::kLong);
  const at::Tensor expected = PythonReferenceLogits(*model, ids, "py_dynamic");
  ASSERT_TRUE(expected.defined());
  c10::NoGradGuard no_grad;
  const at::Tensor padded = model->Forward(ids, Positions(B, T), at::Tensor(), nullptr);
  EXPECT_LT((padded - expected).abs().max().item<double>(), 1e-4);
  std::vector<std::vector<std::int64_t>> seqs;
  for (std::int64_t b = 0; b < B; ++b) seqs.emplace_back(ids[b].data_ptr<std::int64_t>(), ids[b].data_ptr<std::int64_t>() + T);
  EXPECT_LT((model->Logits(model->PackedHidden(PackSequences(seqs))).view({B, T, -1}) - expected).abs().max().item<double>(), 1e-4);
  EXPECT_GT(((*plain_model)->Forward(ids, Positions(B, T), at::Tensor(), nullptr) - expected).abs().max().item<double>(), 1e-3);
  KVCache cache = model->NewCache(B, T), fused = model->NewCache(B, T);
  for (std::int64_t t = 0; t < T; ++t) {
    const at::Tensor cached = model->Forward(ids.narrow(1, t, 1), at::full({B, 1}, t, at::kLong), at::ones({B, t + 1}, at::kLong), &cache);
    const at::Tensor step = model->DecodeStep({ids[0][t].item<std::int64_t>(), ids[1][t].item<std::int64_t>()}, {t, t}, {0, 0}, &fused);
    EXPECT_LT((step - cached.select(1, 0)).abs().max().item<double>(), 1e-4) << "position " << t;
    if (t == T - 1) EXPECT_GT((cached.select(1, 0) - expected.select(1, t)).abs().max().item<double>(), 1e-5) << "keys rotated step by step";
  }
  auto reparsed = ModelConfig::FromJson(nlohmann::json::parse(config->ToJson().dump()));
  ASSERT_TRUE(reparsed.ok()) << reparsed.status();
  EXPECT_EQ(reparsed->rope_scaling->rope_type, "dynamic");
  EXPECT_EQ(reparsed->rope_scaling->factor, 3.0);
}

// Phi-4-mini's partial rotary (partial_rotary_factor 0.75: RoPE on the first 6 of
// each head's 8 dimensions, the last 2 unrotated), with longrope's factors over the
// rotated dimensions only: every path against the python transcription; the same
// weights with RoPE on whole heads give other logits; an odd number of rotated
// dimensions as transformers' Phi-3 rotates them (cos's width), refused for GPT-NeoX.
TEST(CausalLMTest, Phi4MiniPartialRotaryOnEveryPath) {
  nlohmann::json json = {{"model_type", "phi3"}, {"vocab_size", 97}, {"hidden_size", 32},
                         {"intermediate_size", 48}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                         {"num_key_value_heads", 2}, {"max_position_embeddings", 64},
                         {"original_max_position_embeddings", 32}, {"partial_rotary_factor", 0.75},
                         {"tie_word_embeddings", true}};
  json["rope_scaling"] = {{"type", "longrope"}, {"short_factor", {1.0, 2.0, 5.0}}, {"long_factor", {1.0, 3.0, 8.0}}};
  auto config = ModelConfig::FromJson(json);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->rotary_dim(), 6);
  const std::unique_ptr<CausalLM> model = RandomWithStd02(*config, 15);
  const std::int64_t B = 2, T = 8;
  const at::Tensor ids = at::randint(config->vocab_size, {B, T}, at::kLong);
  const at::Tensor expected = PythonReferenceLogits(*model, ids, "py_partial_rotary");
  ASSERT_TRUE(expected.defined());
  ExpectEveryPathGives(*model, ids, expected, /*prefill=*/3);

  nlohmann::json whole = json;
  whole.erase("rope_scaling");
  whole["partial_rotary_factor"] = 1.0;
  nlohmann::json partial = whole;
  partial["partial_rotary_factor"] = 0.75;
  const std::map<std::string, at::Tensor> tensors(model->named_parameters().begin(), model->named_parameters().end());
  auto whole_model = CausalLM::FromTensors(*ModelConfig::FromJson(whole), tensors, at::kFloat);
  auto partial_model = CausalLM::FromTensors(*ModelConfig::FromJson(partial), tensors, at::kFloat);
  ASSERT_TRUE(whole_model.ok() && partial_model.ok());
  c10::NoGradGuard no_grad;
  EXPECT_GT(((*whole_model)->Forward(ids, Positions(B, T), at::Tensor(), nullptr) -
             (*partial_model)->Forward(ids, Positions(B, T), at::Tensor(), nullptr)).abs().max().item<double>(), 1e-3);
  auto reparsed = ModelConfig::FromJson(nlohmann::json::parse(config->ToJson().dump()));
  ASSERT_TRUE(reparsed.ok()) << reparsed.status();
  EXPECT_EQ(reparsed->rotary_dim(), 6);
  // 0.7: d = int(8 · 0.7) = 5, so RoPE has 3 frequencies θ^(-2i/5); transformers'
  // Phi-3 rotates as many dimensions as cos has (6), as the transcription does.
  partial["partial_rotary_factor"] = 0.7;
  auto odd = ModelConfig::FromJson(partial);
  ASSERT_TRUE(odd.ok()) << odd.status();
  EXPECT_EQ(odd->rope_freq_dim(), 5);
  EXPECT_EQ(odd->rotary_dim(), 6);
  auto odd_model = CausalLM::FromTensors(*odd, tensors, at::kFloat);
  ASSERT_TRUE(odd_model.ok()) << odd_model.status();
  const at::Tensor odd_expected = PythonReferenceLogits(**odd_model, ids, "py_partial_rotary_odd");
  ASSERT_TRUE(odd_expected.defined());
  EXPECT_LT(((*odd_model)->Forward(ids, Positions(B, T), at::Tensor(), nullptr) - odd_expected).abs().max().item<double>(), 1e-4);
  // GPT-NeoX slices rotary_ndims = 5 dimensions against 6 of cos: transformers fails; refused.
  const nlohmann::json neox = {{"model_type", "gpt_neox"}, {"vocab_size", 97}, {"hidden_size", 32}, {"intermediate_size", 48},
                               {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"rotary_pct", 0.7}};
  EXPECT_THAT(std::string(ModelConfig::FromJson(neox).status().message()), HasSubstr("leave an even number of rotated"));
  partial["model_type"] = "llama";  // LlamaAttention rotates whole heads
  EXPECT_THAT(std::string(ModelConfig::FromJson(partial).status().message()), HasSubstr("partial_rotary_factor = 0.7"));
}

// Qwen2's q/k/v biases, against the same independent transcription (biases are
// set to random values: a bias that was dropped or misplaced shows at once).
TEST(CausalLMTest, Qwen2BiasesMatchTheIndependentPythonImplementation) {
  ModelConfig config = TinyConfig();
  config.model_type = "qwen2";
  config.architecture = "Qwen2ForCausalLM";
  config.attention_bias = true;
  auto model = CausalLM::Random(config, at::kFloat, 5);
  ASSERT_TRUE(model.ok());
  int biases = 0;
  {
    c10::NoGradGuard no_grad;
    at::manual_seed(11);
    for (auto& [name, p] : (*model)->named_parameters()) {
      if (name.find("_proj.bias") == std::string::npos) continue;
      p.copy_(at::randn(p.sizes()) * 0.5);
      ++biases;
    }
  }
  ASSERT_EQ(biases, 3 * config.num_hidden_layers);
  at::Tensor ids = at::randint(config.vocab_size, {2, 7}, at::kLong);
  const at::Tensor expected = PythonReferenceLogits(**model, ids, "py_qwen2");
  ASSERT_TRUE(expected.defined());
  c10::NoGradGuard no_grad;
  at::Tensor logits = (*model)->Forward(ids, Positions(2, 7), at::Tensor(), nullptr);
  EXPECT_LT((logits - expected).abs().max().item<double>(), 1e-4);
  // The biases matter: the same weights without them give other logits.
  for (auto& [name, p] : (*model)->named_parameters()) {
    if (name.find("_proj.bias") != std::string::npos) p.zero_();
  }
  EXPECT_GT((((*model)->Forward(ids, Positions(2, 7), at::Tensor(), nullptr)) - expected).abs().max().item<double>(), 1e-3);
}

// Qwen3's per-head q/k RMSNorm (q_norm, k_norm), against the same independent
// transcription; the norms' weights are random so that a skipped or misplaced norm
// shows. The padding-free path and the fp32 decode step agree with it too.
TEST(CausalLMTest, Qwen3QkNormMatchesTheIndependentPythonImplementation) {
  ModelConfig config = TinyConfig();
  config.model_type = "qwen3";
  config.architecture = "Qwen3ForCausalLM";
  config.qk_norm = true;
  auto model = CausalLM::Random(config, at::kFloat, 6);
  ASSERT_TRUE(model.ok());
  int norms = 0;
  {
    c10::NoGradGuard no_grad;
    at::manual_seed(12);
    for (auto& [name, p] : (*model)->named_parameters()) {
      if (name.find("self_attn.q_norm") == std::string::npos && name.find("self_attn.k_norm") == std::string::npos) continue;
      p.copy_(at::rand(p.sizes()) * 2.0 + 0.25);
      ++norms;
    }
  }
  ASSERT_EQ(norms, 2 * config.num_hidden_layers);
  at::Tensor ids = at::randint(config.vocab_size, {2, 7}, at::kLong);
  const at::Tensor expected = PythonReferenceLogits(**model, ids, "py_qwen3");
  ASSERT_TRUE(expected.defined());
  c10::NoGradGuard no_grad;
  at::Tensor logits = (*model)->Forward(ids, Positions(2, 7), at::Tensor(), nullptr);
  EXPECT_LT((logits - expected).abs().max().item<double>(), 1e-4);
  // Padding-free: both sequences end to end.
  std::vector<std::vector<std::int64_t>> seqs;
  for (int b = 0; b < 2; ++b) {
    seqs.emplace_back(ids[b].data_ptr<std::int64_t>(), ids[b].data_ptr<std::int64_t>() + 7);
  }
  at::Tensor packed = (*model)->Logits((*model)->PackedHidden(PackSequences(seqs)));
  EXPECT_LT((packed.view({2, 7, -1}) - expected).abs().max().item<double>(), 1e-4);
  // The fp32 decode step, token by token.
  KVCache cache = (*model)->NewCache(2, 7);
  for (int t = 0; t < 7; ++t) {
    at::Tensor step = (*model)->DecodeStep({ids[0][t].item<std::int64_t>(), ids[1][t].item<std::int64_t>()}, {t, t}, {0, 0}, &cache);
    EXPECT_LT((step - expected.select(1, t)).abs().max().item<double>(), 1e-4) << "position " << t;
  }
  // The saved config round-trips as Qwen3.
  const std::string dir = testing::TempDir("qwen3_save");
  ASSERT_TRUE(SaveCausalLM(**model, dir).ok());
  auto loaded = LoadCausalLM(dir, at::kFloat);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->config().architecture, "Qwen3ForCausalLM");
  EXPECT_TRUE((*loaded)->config().qk_norm);
}

// Gemma (GemmaForCausalLM): RMSNorm by (1 + weight) in fp32, embeddings times
// sqrt(hidden_size), GELU-tanh on the gate, tied head. Read from a config.json that
// leaves GemmaConfig's defaults unsaid (tie_word_embeddings, hidden_act), with
// random norm weights (at 0 every norm would be Llama's at 1): against the
// independent transcription, then the packed path, the KV cache and the decode step
// against it; saved and loaded back as Gemma.
TEST(CausalLMTest, GemmaMatchesTheIndependentPythonImplementationOnEveryPath) {
  const nlohmann::json json = {{"model_type", "gemma"}, {"vocab_size", 97}, {"hidden_size", 32},
                               {"intermediate_size", 48}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                               {"num_key_value_heads", 1}, {"head_dim", 16}, {"rms_norm_eps", 1e-6}};
  auto config = ModelConfig::FromJson(json);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->architecture, "GemmaForCausalLM");
  EXPECT_TRUE(config->tie_word_embeddings);
  EXPECT_EQ(config->activation(), Activation::kGeluTanh);
  EXPECT_TRUE(config->norm_weight_offset && config->scale_embeddings);
  nlohmann::json no_head_dim = json;
  no_head_dim.erase("head_dim");
  EXPECT_EQ(ModelConfig::FromJson(no_head_dim)->head_dim, 256);  // GemmaConfig's default, not hidden / heads
  auto model = CausalLM::Random(*config, at::kFloat, 7);
  ASSERT_TRUE(model.ok());
  {
    c10::NoGradGuard no_grad;
    at::manual_seed(13);
    for (auto& [name, p] : (*model)->named_parameters()) {
      if (name.find("norm.weight") == std::string::npos) {
        p.mul_(10.0);  // std 0.2: the MLP's activation shows in the logits
        continue;
      }
      EXPECT_EQ(p.abs().max().item<double>(), 0.0) << name << ": Gemma's norms start at 0 (a scale of 1)";
      p.copy_(at::randn(p.sizes()) * 0.5);
    }
  }
  const CausalLM& m = **model;
  const std::int64_t B = 2, T = 7;
  const at::Tensor ids = at::randint(config->vocab_size, {B, T}, at::kLong);
  const at::Tensor expected = PythonReferenceLogits(m, ids, "py_gemma");
  ASSERT_TRUE(expected.defined());
  c10::NoGradGuard no_grad;
  ExpectEveryPathGives(m, ids, expected, /*prefill=*/3);
  const at::Tensor full = m.Forward(ids, Positions(B, T), at::Tensor(), nullptr);
  // Each of Gemma's three differences matters: the same weights read as Llama-style
  // in any one of them give other logits.
  for (int change = 0; change < 3; ++change) {
    ModelConfig other = *config;
    if (change == 0) other.norm_weight_offset = false;
    if (change == 1) other.scale_embeddings = false;
    if (change == 2) other.hidden_act = "silu";
    std::map<std::string, at::Tensor> tensors(m.named_parameters().begin(), m.named_parameters().end());
    auto variant = CausalLM::FromTensors(other, tensors, at::kFloat);
    ASSERT_TRUE(variant.ok()) << variant.status();
    EXPECT_GT(((*variant)->Forward(ids, Positions(B, T), at::Tensor(), nullptr) - expected).abs().max().item<double>(), 1e-3)
        << "change " << change << ", max |logit| " << expected.abs().max().item<double>();
  }
  // hidden_act "gelu" (exact, erf: what transformers 5 reads from the first Gemma
  // configs) on every path.
  ModelConfig exact = *config;
  exact.hidden_act = "gelu";
  auto erf_model = CausalLM::FromTensors(exact, std::map<std::string, at::Tensor>(m.named_parameters().begin(), m.named_parameters().end()), at::kFloat);
  ASSERT_TRUE(erf_model.ok());
  const at::Tensor erf_expected = PythonReferenceLogits(**erf_model, ids, "py_gemma_erf");
  ASSERT_TRUE(erf_expected.defined());
  ExpectEveryPathGives(**erf_model, ids, erf_expected, /*prefill=*/3);
  const std::string dir = testing::TempDir("gemma_save");
  ASSERT_TRUE(SaveCausalLM(m, dir).ok());
  const nlohmann::json saved = nlohmann::json::parse(testing::ReadFile(dir + "/config.json"));
  EXPECT_EQ(saved["model_type"], "gemma");
  EXPECT_EQ(saved["hidden_act"], "gelu_pytorch_tanh");
  auto loaded = LoadCausalLM(dir, at::kFloat);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_LT(((*loaded)->Forward(ids, Positions(B, T), at::Tensor(), nullptr) - full).abs().max().item<double>(), 1e-6);
}

// Gemma 2 (Gemma2ForCausalLM): Gemma's norms, embedding scale and GELU, plus
// sandwich norms (post_attention_layernorm on the attention's output,
// pre_/post_feedforward_layernorm around the MLP), scores scaled by
// query_pre_attn_scalar^-1/2 (16 here, head_dim 8) and soft-capped, soft-capped
// logits, and windows on the even layers. Every path against the python
// transcription; each of the four Gemma 2 differences matters; Gemma2Config's
// defaults where config.json is silent; saved and loaded back the same.
TEST(CausalLMTest, Gemma2MatchesTheIndependentPythonImplementationOnEveryPath) {
  const nlohmann::json json = {{"model_type", "gemma2"}, {"vocab_size", 97}, {"hidden_size", 32},
                               {"intermediate_size", 48}, {"num_hidden_layers", 3}, {"num_attention_heads", 4},
                               {"num_key_value_heads", 2}, {"head_dim", 8}, {"rms_norm_eps", 1e-6},
                               {"query_pre_attn_scalar", 16}, {"attn_logit_softcapping", 1.5},
                               {"final_logit_softcapping", 4.0}, {"sliding_window", 3}};
  auto config = ModelConfig::FromJson(json);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->architecture, "Gemma2ForCausalLM");
  EXPECT_TRUE(config->sandwich_norms && config->norm_weight_offset && config->scale_embeddings && config->tie_word_embeddings);
  EXPECT_EQ(config->sliding_layers, (std::vector<bool>{true, false, true}));
  nlohmann::json silent = {{"model_type", "gemma2"}, {"vocab_size", 97}, {"hidden_size", 32}, {"intermediate_size", 48},
                           {"num_hidden_layers", 2}, {"num_attention_heads", 4}};
  auto defaults = ModelConfig::FromJson(silent);
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  EXPECT_EQ(defaults->head_dim, 256);
  EXPECT_EQ(defaults->query_pre_attn_scalar, std::optional<double>(256.0));
  EXPECT_EQ(defaults->attn_logit_softcapping, 50.0);
  EXPECT_EQ(defaults->final_logit_softcapping, 30.0);
  EXPECT_EQ(defaults->window_of(0), 4096);
  EXPECT_EQ(defaults->window_of(1), 0);
  silent["final_logit_softcapping"] = nullptr;  // null: no cap
  EXPECT_EQ(ModelConfig::FromJson(silent)->final_logit_softcapping, 0.0);
  silent["attn_logit_softcapping"] = -1.0;
  EXPECT_THAT(std::string(ModelConfig::FromJson(silent).status().message()), HasSubstr("attn_logit_softcapping must be positive"));

  const std::unique_ptr<CausalLM> model = RandomGemmaWithStd02(*config, 21);
  const CausalLM& m = *model;
  const std::int64_t B = 2, T = 8;
  const at::Tensor ids = at::randint(config->vocab_size, {B, T}, at::kLong);
  const at::Tensor expected = PythonReferenceLogits(m, ids, "py_gemma2");
  ASSERT_TRUE(expected.defined());
  ExpectEveryPathGives(m, ids, expected, /*prefill=*/3);
  c10::NoGradGuard no_grad;
  EXPECT_LE(expected.abs().max().item<double>(), 4.0);  // the final cap
  const std::map<std::string, at::Tensor> tensors(m.named_parameters().begin(), m.named_parameters().end());
  for (int change = 0; change < 4; ++change) {
    ModelConfig other = *config;
    if (change == 0) other.attn_logit_softcapping = 0;
    if (change == 1) other.final_logit_softcapping = 0;
    if (change == 2) other.query_pre_attn_scalar.reset();
    if (change == 3) other.sliding_window.reset();
    auto variant = CausalLM::FromTensors(other, tensors, at::kFloat);
    ASSERT_TRUE(variant.ok()) << variant.status();
    EXPECT_GT(((*variant)->Forward(ids, Positions(B, T), at::Tensor(), nullptr) - expected).abs().max().item<double>(), 1e-3)
        << "change " << change;
  }
  const std::string dir = testing::TempDir("gemma2_save");
  ASSERT_TRUE(SaveCausalLM(m, dir).ok());
  const nlohmann::json saved = nlohmann::json::parse(testing::ReadFile(dir + "/config.json"));
  EXPECT_EQ(saved["model_type"], "gemma2");
  EXPECT_EQ(saved["query_pre_attn_scalar"], 16.0);
  EXPECT_EQ(saved["final_logit_softcapping"], 4.0);
  EXPECT_EQ(saved["layer_types"], nlohmann::json({"sliding_attention", "full_attention", "sliding_attention"}));
  ExpectLoadedBackGivesTheSameLogits(m, dir, ids);
}

// Gemma 3 (model_type gemma3_text, Gemma3ForCausalLM): Gemma 2's layer plus q/k
// norms (by 1 + w), no soft caps unless set, windows on all but every
// sliding_window_pattern-th layer, and those windowed layers rotate with their own
// base (rope_local_base_freq), unscaled. Three layers with pattern 3 (layers 0 and 1
// windowed), local base 10 against global 1e6 so the two tables differ at these
// positions: every path against the python transcription; one table for all layers
// gives other logits; transformers 5's per-layer-type rope_parameters read the same.
TEST(CausalLMTest, Gemma3MatchesTheIndependentPythonImplementationOnEveryPath) {
  const nlohmann::json json = {{"model_type", "gemma3_text"}, {"vocab_size", 97}, {"hidden_size", 32},
                               {"intermediate_size", 48}, {"num_hidden_layers", 3}, {"num_attention_heads", 4},
                               {"num_key_value_heads", 2}, {"head_dim", 8}, {"rms_norm_eps", 1e-6},
                               {"query_pre_attn_scalar", 8}, {"sliding_window", 4}, {"sliding_window_pattern", 3},
                               {"rope_local_base_freq", 10.0}};
  auto config = ModelConfig::FromJson(json);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->architecture, "Gemma3ForCausalLM");
  EXPECT_TRUE(config->qk_norm && config->sandwich_norms && config->norm_weight_offset && config->tie_word_embeddings);
  EXPECT_EQ(config->rope_theta, 1000000.0);
  EXPECT_EQ(config->attn_logit_softcapping, 0.0);
  EXPECT_EQ(config->final_logit_softcapping, 0.0);
  EXPECT_EQ(config->sliding_layers, (std::vector<bool>{true, true, false}));
  EXPECT_TRUE(config->uses_local_rope(1) && !config->uses_local_rope(2));

  const std::unique_ptr<CausalLM> model = RandomGemmaWithStd02(*config, 31);
  const CausalLM& m = *model;
  const std::int64_t B = 2, T = 8;
  const at::Tensor ids = at::randint(config->vocab_size, {B, T}, at::kLong);
  const at::Tensor expected = PythonReferenceLogits(m, ids, "py_gemma3");
  ASSERT_TRUE(expected.defined());
  ExpectEveryPathGives(m, ids, expected, /*prefill=*/3);
  c10::NoGradGuard no_grad;
  const std::map<std::string, at::Tensor> tensors(m.named_parameters().begin(), m.named_parameters().end());
  ModelConfig one_table = *config;
  one_table.local_rope_theta.reset();
  auto global_everywhere = CausalLM::FromTensors(one_table, tensors, at::kFloat);
  ASSERT_TRUE(global_everywhere.ok());
  EXPECT_GT(((*global_everywhere)->Forward(ids, Positions(B, T), at::Tensor(), nullptr) - expected).abs().max().item<double>(), 1e-3);

  // transformers 5: rope_parameters by layer type.
  nlohmann::json v5 = json;
  v5.erase("rope_local_base_freq");
  v5["rope_parameters"] = {{"full_attention", {{"rope_type", "default"}, {"rope_theta", 1000000.0}}},
                           {"sliding_attention", {{"rope_type", "default"}, {"rope_theta", 10.0}}}};
  auto v5_config = ModelConfig::FromJson(v5);
  ASSERT_TRUE(v5_config.ok()) << v5_config.status();
  EXPECT_EQ(v5_config->local_rope_theta, std::optional<double>(10.0));
  EXPECT_EQ(v5_config->rope_theta, 1000000.0);
  v5["rope_parameters"]["sliding_attention"] = {{"rope_type", "linear"}, {"factor", 2.0}};
  EXPECT_THAT(std::string(ModelConfig::FromJson(v5).status().message()), HasSubstr("a scaled RoPE on the sliding_attention layers"));

  const std::string dir = testing::TempDir("gemma3_save");
  ASSERT_TRUE(SaveCausalLM(m, dir).ok());
  const nlohmann::json saved = nlohmann::json::parse(testing::ReadFile(dir + "/config.json"));
  EXPECT_EQ(saved["rope_local_base_freq"], 10.0);
  EXPECT_EQ(saved["sliding_window_pattern"], 3);
  ExpectLoadedBackGivesTheSameLogits(m, dir, ids);
}

// OLMo 2 (Olmo2ForCausalLM): no norm before the attention or the MLP;
// post_attention_layernorm and post_feedforward_layernorm normalise their outputs
// before the residual adds; q_norm / k_norm over the whole q [H·D] and k [KV·D]
// projections. Random norms (1 + 0.5 N(0, 1)) so that each shows. Every path
// against the python transcription; saved with OLMo 2's names (no
// input_layernorm) and loaded back; OLMo's clip_qkv is refused by name.
TEST(CausalLMTest, Olmo2MatchesTheIndependentPythonImplementationOnEveryPath) {
  const nlohmann::json json = {{"model_type", "olmo2"}, {"vocab_size", 97}, {"hidden_size", 32},
                               {"intermediate_size", 48}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                               {"num_key_value_heads", 2}, {"rope_theta", 500000.0}};
  auto config = ModelConfig::FromJson(json);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->architecture, "Olmo2ForCausalLM");
  EXPECT_EQ(config->rms_norm_eps, 1e-5);
  EXPECT_TRUE(config->qk_norm && config->qk_norm_over_heads && config->sandwich_norms && !config->pre_norms);
  std::unique_ptr<CausalLM> model = RandomWithStd02(*config, 41);
  {
    c10::NoGradGuard no_grad;
    at::manual_seed(42);
    for (auto& [name, p] : model->named_parameters()) {
      if (name.find("norm.weight") != std::string::npos) p.copy_(1 + at::randn(p.sizes()) * 0.5);
    }
  }
  const std::map<std::string, at::Tensor> tensors(model->named_parameters().begin(), model->named_parameters().end());
  EXPECT_EQ(tensors.count("model.layers.0.input_layernorm.weight"), 0u);
  EXPECT_EQ(tensors.at("model.layers.0.self_attn.q_norm.weight").sizes(), at::IntArrayRef({32}));
  EXPECT_EQ(tensors.at("model.layers.0.self_attn.k_norm.weight").sizes(), at::IntArrayRef({16}));
  const std::int64_t B = 2, T = 8;
  const at::Tensor ids = at::randint(config->vocab_size, {B, T}, at::kLong);
  const at::Tensor expected = PythonReferenceLogits(*model, ids, "py_olmo2");
  ASSERT_TRUE(expected.defined());
  ExpectEveryPathGives(*model, ids, expected, /*prefill=*/3);
  const std::string dir = testing::TempDir("olmo2_save");
  ASSERT_TRUE(SaveCausalLM(*model, dir).ok());
  const nlohmann::json saved = nlohmann::json::parse(testing::ReadFile(dir + "/config.json"));
  EXPECT_EQ(saved["model_type"], "olmo2");
  EXPECT_EQ(saved["architectures"][0], "Olmo2ForCausalLM");
  ExpectLoadedBackGivesTheSameLogits(*model, dir, ids);
  nlohmann::json clipped = json;
  clipped["clip_qkv"] = 8.0;
  EXPECT_THAT(std::string(ModelConfig::FromJson(clipped).status().message()), HasSubstr("clip_qkv = 8.0"));
}

// OLMo (OlmoForCausalLM, OLMo-1B/7B-hf): Llama's layer whose three norms are
// LayerNorms without parameters in fp32 with eps 1e-5 (an rms_norm_eps in the config
// is an extra OlmoConfig never reads), q/k/v/o biases with attention_bias, and q, k,
// v clamped to ±clip_qkv (0.4 here, so that it bites). Every path against the python
// transcription; no norm tensor in the model or its checkpoint; saved with clip_qkv
// and loaded back; without the clamp, other logits.
TEST(CausalLMTest, OlmoMatchesTheIndependentPythonImplementationOnEveryPath) {
  const nlohmann::json json = {{"model_type", "olmo"}, {"vocab_size", 97}, {"hidden_size", 32},
                               {"intermediate_size", 48}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                               {"num_key_value_heads", 2}, {"attention_bias", true}, {"clip_qkv", 0.4},
                               {"rms_norm_eps", 0.01}, {"tie_word_embeddings", false}};
  auto config = ModelConfig::FromJson(json);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->architecture, "OlmoForCausalLM");
  EXPECT_EQ(config->rms_norm_eps, 1e-5);
  EXPECT_EQ(config->clip_qkv, 0.4);
  EXPECT_TRUE(config->norm_without_parameters && config->output_bias);
  std::unique_ptr<CausalLM> model = RandomWithStd02(*config, 43);
  RandomizeBiasesAndNorms(*model, 44);
  const std::map<std::string, at::Tensor> tensors(model->named_parameters().begin(), model->named_parameters().end());
  for (const auto& [name, t] : tensors) EXPECT_FALSE(absl::StrContains(name, "norm")) << name;
  EXPECT_EQ(tensors.count("model.layers.1.self_attn.o_proj.bias"), 1u);
  const std::int64_t B = 2, T = 8;
  const at::Tensor ids = at::randint(config->vocab_size, {B, T}, at::kLong);
  const at::Tensor expected = PythonReferenceLogits(*model, ids, "py_olmo");
  ASSERT_TRUE(expected.defined());
  ExpectEveryPathGives(*model, ids, expected, /*prefill=*/3, /*decode_step=*/false);
  const std::string dir = testing::TempDir("olmo_save");
  ASSERT_TRUE(SaveCausalLM(*model, dir).ok());
  const nlohmann::json saved = nlohmann::json::parse(testing::ReadFile(dir + "/config.json"));
  EXPECT_EQ(saved["model_type"], "olmo");
  EXPECT_EQ(saved["clip_qkv"], 0.4);
  ExpectLoadedBackGivesTheSameLogits(*model, dir, ids);
  ModelConfig unclipped = *config;
  unclipped.clip_qkv = 0;
  auto other = CausalLM::FromTensors(unclipped, tensors, at::kFloat);
  ASSERT_TRUE(other.ok()) << other.status();
  c10::NoGradGuard no_grad;
  EXPECT_GT(((*other)->Forward(ids, Positions(B, T), at::Tensor(), nullptr) - expected).abs().max().item<double>(), 1e-3);
}

// Granite (GraniteForCausalLM) with Granite 3.0's multipliers: embeddings × 12,
// scores × 1/64 (attention_multiplier instead of 1/sqrt(head_dim)), sublayer
// outputs × 0.22 before the residual adds, logits / 8. Every path against the
// python transcription; each multiplier left at 1 gives other logits; the chunked
// log-prob kernel on HeadInput gives the transcription's log-softmax (the losses'
// path); saved and loaded back with the multipliers; elsewhere they stay refused.
TEST(CausalLMTest, GraniteMultipliersOnEveryPath) {
  nlohmann::json json = {{"model_type", "granite"}, {"vocab_size", 97}, {"hidden_size", 32},
                         {"intermediate_size", 48}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                         {"num_key_value_heads", 2}, {"tie_word_embeddings", true}, {"embedding_multiplier", 12.0},
                         {"attention_multiplier", 0.015625}, {"residual_multiplier", 0.22}, {"logits_scaling", 8.0}};
  auto config = ModelConfig::FromJson(json);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->architecture, "GraniteForCausalLM");
  EXPECT_EQ(config->attention_scale(), 0.015625);
  const std::unique_ptr<CausalLM> model = RandomWithStd02(*config, 51);
  const std::int64_t B = 2, T = 8;
  const at::Tensor ids = at::randint(config->vocab_size, {B, T}, at::kLong);
  const at::Tensor expected = PythonReferenceLogits(*model, ids, "py_granite");
  ASSERT_TRUE(expected.defined());
  ExpectEveryPathGives(*model, ids, expected, /*prefill=*/3);
  const std::map<std::string, at::Tensor> tensors(model->named_parameters().begin(), model->named_parameters().end());
  c10::NoGradGuard no_grad;
  for (const char* key : {"embedding_multiplier", "attention_multiplier", "residual_multiplier", "logits_scaling"}) {
    nlohmann::json one = json;
    one[key] = 1.0;
    auto other = CausalLM::FromTensors(*ModelConfig::FromJson(one), tensors, at::kFloat);
    ASSERT_TRUE(other.ok());
    EXPECT_GT(((*other)->Forward(ids, Positions(B, T), at::Tensor(), nullptr) - expected).abs().max().item<double>(), 1e-3) << key;
  }
  const at::Tensor hidden = model->Hidden(ids, Positions(B, T), at::Tensor(), nullptr).reshape({B * T, -1});
  const at::Tensor targets = at::randint(config->vocab_size, {B * T}, at::kLong);
  const at::Tensor kernel = TokenLogprobs(model->HeadInput(hidden), model->lm_head_weight(), targets, 1.0).logprobs;
  const at::Tensor reference = at::log_softmax(expected.reshape({B * T, -1}), -1).gather(1, targets.unsqueeze(1)).squeeze(1);
  EXPECT_LT((kernel - reference).abs().max().item<double>(), 1e-4);
  const std::string dir = testing::TempDir("granite_save");
  ASSERT_TRUE(SaveCausalLM(*model, dir).ok());
  const nlohmann::json saved = nlohmann::json::parse(testing::ReadFile(dir + "/config.json"));
  EXPECT_EQ(saved["logits_scaling"], 8.0);
  EXPECT_EQ(saved["attention_multiplier"], 0.015625);
  ExpectLoadedBackGivesTheSameLogits(*model, dir, ids);
  nlohmann::json llama = json;
  llama["model_type"] = "llama";
  EXPECT_THAT(std::string(ModelConfig::FromJson(llama).status().message()), HasSubstr("logits_scaling = 8.0"));
  json["logits_scaling"] = 0;
  EXPECT_THAT(std::string(ModelConfig::FromJson(json).status().message()), HasSubstr("logits_scaling must be a finite, nonzero number"));
}

// Mixtures of experts, each checked against the python transcription (which loops
// over the experts with one-hot masks and index_add_, as transformers does) on every
// path, the transcription reading the config.json given here: Mixtral (top 2 of 4,
// always renormalised; Mistral's window on every layer), Qwen2-MoE (top 2 of 4 not
// renormalised, a shared expert gated by a sigmoid, q/k/v biases, layer 1 dense
// through mlp_only_layers) and Qwen3-MoE (top 3 of 6 renormalised, q/k norms,
// decoder_sparse_step 2: layer 0 dense). Saved and loaded back; flipping
// norm_topk_prob moves the logits.
TEST(CausalLMTest, MixturesOfExpertsMatchThePythonTranscriptionOnEveryPath) {
  const nlohmann::json base = {{"vocab_size", 97}, {"hidden_size", 32}, {"intermediate_size", 40},
                               {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
                               {"head_dim", 8}, {"rms_norm_eps", 1e-6}, {"rope_theta", 10000.0},
                               {"tie_word_embeddings", false}};
  nlohmann::json mixtral = base, qwen2 = base, qwen3 = base;
  mixtral.update({{"model_type", "mixtral"}, {"num_local_experts", 4}, {"num_experts_per_tok", 2}, {"sliding_window", 5}});
  qwen2.update({{"model_type", "qwen2_moe"}, {"num_experts", 4}, {"num_experts_per_tok", 2}, {"moe_intermediate_size", 24},
                {"shared_expert_intermediate_size", 36}, {"mlp_only_layers", {1}}, {"norm_topk_prob", false}});
  qwen3.update({{"model_type", "qwen3_moe"}, {"num_experts", 6}, {"num_experts_per_tok", 3}, {"moe_intermediate_size", 16},
                {"decoder_sparse_step", 2}, {"norm_topk_prob", true}});
  for (const auto& [json, architecture, router, dense_layer] :
       {std::tuple{mixtral, "MixtralForCausalLM", "model.layers.1.block_sparse_moe.gate.weight", -1},
        std::tuple{qwen2, "Qwen2MoeForCausalLM", "model.layers.0.mlp.gate.weight", 1},
        std::tuple{qwen3, "Qwen3MoeForCausalLM", "model.layers.1.mlp.gate.weight", 0}}) {
    SCOPED_TRACE(architecture);
    auto config = ModelConfig::FromJson(json);
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_EQ(config->architecture, architecture);
    const std::unique_ptr<CausalLM> model = RandomWithStd02(*config, 61);
    std::map<std::string, at::Tensor> tensors(model->named_parameters().begin(), model->named_parameters().end());
    EXPECT_EQ(tensors.count(router), 1u);
    for (std::int64_t layer = 0; layer < 2; ++layer) {
      EXPECT_EQ(tensors.count(absl::StrCat("model.layers.", layer, ".mlp.gate_proj.weight")), layer == dense_layer ? 1u : 0u);
    }
    const at::Tensor ids = at::randint(config->vocab_size, {2, 9}, at::kLong);
    const at::Tensor expected = PythonReferenceLogits(*model, ids, absl::StrCat("py_", config->model_type), &json);
    ASSERT_TRUE(expected.defined());
    ExpectEveryPathGives(*model, ids, expected, /*prefill=*/3, /*decode_step=*/false);
    const std::string dir = testing::TempDir(absl::StrCat(config->model_type, "_save"));
    ASSERT_TRUE(SaveCausalLM(*model, dir).ok());
    ExpectLoadedBackGivesTheSameLogits(*model, dir, ids);
    if (config->model_type == "mixtral") continue;
    nlohmann::json flipped = json;
    flipped["norm_topk_prob"] = !json["norm_topk_prob"].get<bool>();
    auto other = CausalLM::FromTensors(*ModelConfig::FromJson(flipped), tensors, at::kFloat);
    ASSERT_TRUE(other.ok()) << other.status();
    c10::NoGradGuard no_grad;
    EXPECT_GT(((*other)->Forward(ids, Positions(2, 9), at::Tensor(), nullptr) - expected).abs().max().item<double>(), 1e-3);
  }
}

// GLM-4.5 (glm4_moe) against llama_reference.py given the config.json here: its
// sigmoid router in fp32 with a random e_score_correction_bias that moves the choice
// but not the weights, groups (n_group 4, topk_group 2), routed_scaling_factor 2.5,
// an ungated shared expert, layer 0 dense (first_k_dense_replace), partial rotary
// 0.5 by default, q/k/v biases (o_proj none) and q/k norms; then TRL's tiny model's
// shape (hidden 8 over 4 heads: head_dim 2, whose half is 1 rotary dimension that
// rotates 2, as cos.shape[-1] does in transformers). Every path; saved and loaded
// back; a zeroed correction bias gives other logits; the checkpoint's
// multi-token-prediction layer past the last loads and is dropped.
TEST(CausalLMTest, Glm4MoeMatchesThePythonTranscriptionOnEveryPath) {
  for (const bool tiny : {false, true}) {
    SCOPED_TRACE(tiny ? "TRL's tiny shape" : "groups, shared expert, q/k norms, biases");
    nlohmann::json json = {{"model_type", "glm4_moe"}, {"architectures", {"Glm4MoeForCausalLM"}}, {"vocab_size", 97},
                           {"hidden_size", 32}, {"intermediate_size", 40}, {"num_hidden_layers", 3},
                           {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"head_dim", 8}, {"rms_norm_eps", 1e-5},
                           {"rope_theta", 500.0}, {"n_routed_experts", 8}, {"num_experts_per_tok", 3},
                           {"moe_intermediate_size", 16}, {"n_shared_experts", 1}, {"n_group", 4}, {"topk_group", 2},
                           {"routed_scaling_factor", 2.5}, {"attention_bias", true}, {"use_qk_norm", true}};
    if (tiny) {
      json = {{"model_type", "glm4_moe"}, {"vocab_size", 97}, {"hidden_size", 8}, {"intermediate_size", 32},
              {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"head_dim", 2},
              {"rms_norm_eps", 1e-5}, {"num_experts_per_tok", 2}, {"n_routed_experts", 4}};
    }
    auto config = ModelConfig::FromJson(json);
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_EQ(config->architecture, "Glm4MoeForCausalLM");
    EXPECT_TRUE(config->router_sigmoid);
    EXPECT_EQ(config->rotary_dim(), tiny ? 2 : 4);
    EXPECT_EQ(config->shared_expert_intermediate_size, tiny ? 1408 : 16);
    EXPECT_FALSE(config->is_moe_layer(0));
    EXPECT_TRUE(config->is_moe_layer(1));
    const std::unique_ptr<CausalLM> model = RandomWithStd02(*config, tiny ? 141 : 142);
    RandomizeBiasesAndNorms(*model, 143);
    std::map<std::string, at::Tensor> tensors(model->named_parameters().begin(), model->named_parameters().end());
    {
      c10::NoGradGuard no_grad;
      at::manual_seed(144);
      for (auto& [name, p] : tensors) {
        if (absl::EndsWith(name, "e_score_correction_bias")) p.copy_(at::randn(p.sizes()) * 0.3);
      }
    }
    EXPECT_EQ(tensors.count("model.layers.1.mlp.gate.e_score_correction_bias"), 1u);
    EXPECT_EQ(tensors.count("model.layers.1.mlp.shared_experts.up_proj.weight"), 1u);
    EXPECT_EQ(tensors.count("model.layers.1.mlp.shared_expert_gate.weight"), 0u);
    EXPECT_EQ(tensors.count("model.layers.0.mlp.gate_proj.weight"), 1u);
    EXPECT_EQ(tensors.count("model.layers.1.self_attn.o_proj.bias"), 0u);
    EXPECT_EQ(tensors.count("model.layers.1.self_attn.q_proj.bias"), tiny ? 0u : 1u);
    EXPECT_EQ(tensors.count("model.layers.1.self_attn.q_norm.weight"), tiny ? 0u : 1u);
    const at::Tensor ids = at::randint(config->vocab_size, {2, 9}, at::kLong);
    const at::Tensor expected = PythonReferenceLogits(*model, ids, tiny ? "py_glm4_moe_tiny" : "py_glm4_moe", &json);
    ASSERT_TRUE(expected.defined());
    ExpectEveryPathGives(*model, ids, expected, /*prefill=*/3, /*decode_step=*/false);
    const std::string dir = testing::TempDir(tiny ? "glm4_moe_tiny_save" : "glm4_moe_save");
    ASSERT_TRUE(SaveCausalLM(*model, dir).ok());
    ExpectLoadedBackGivesTheSameLogits(*model, dir, ids);
    const nlohmann::json written = nlohmann::json::parse(testing::ReadFile(dir + "/config.json"));
    EXPECT_EQ(written["first_k_dense_replace"], 1);
    EXPECT_EQ(written["n_shared_experts"], 1);
    EXPECT_EQ(written["routed_scaling_factor"], tiny ? 1.0 : 2.5);
    c10::NoGradGuard no_grad;
    std::map<std::string, at::Tensor> unbiased = tensors;
    for (auto& [name, t] : unbiased) {
      if (absl::EndsWith(name, "e_score_correction_bias")) t = at::zeros_like(t);
    }
    auto other = CausalLM::FromTensors(*config, unbiased, at::kFloat);
    ASSERT_TRUE(other.ok()) << other.status();
    EXPECT_GT(((*other)->Forward(ids, Positions(2, 9), at::Tensor(), nullptr) - expected).abs().max().item<double>(), 1e-3);
    std::map<std::string, at::Tensor> with_mtp = tensors;
    with_mtp[absl::StrCat("model.layers.", config->num_hidden_layers, ".eh_proj.weight")] = at::zeros({8, 16});
    EXPECT_TRUE(CausalLM::FromTensors(*config, with_mtp, at::kFloat).ok());
    with_mtp["model.layers.0.mlp.stray.weight"] = at::zeros({2});
    EXPECT_THAT(std::string(CausalLM::FromTensors(*config, with_mtp, at::kFloat).status().message()),
                HasSubstr("does not use: model.layers.0.mlp.stray.weight"));
  }
}

// GLM-4.5-Air's config.json read as Glm4MoeConfig defines it, written back under its
// names and read back the same; groups that do not divide the experts, or too few
// experts reachable in the kept groups, are named.
TEST(CausalLMTest, Glm4MoeConfigReadsGlm45AirFields) {
  const nlohmann::json air = {{"architectures", {"Glm4MoeForCausalLM"}}, {"attention_bias", true}, {"attention_dropout", 0.0},
                              {"pad_token_id", 151329}, {"eos_token_id", {151329, 151336, 151338}}, {"head_dim", 128},
                              {"hidden_act", "silu"}, {"hidden_size", 4096}, {"partial_rotary_factor", 0.5},
                              {"initializer_range", 0.02}, {"intermediate_size", 10944}, {"max_position_embeddings", 131072},
                              {"model_type", "glm4_moe"}, {"moe_intermediate_size", 1408}, {"norm_topk_prob", true},
                              {"num_attention_heads", 96}, {"n_group", 1}, {"topk_group", 1}, {"n_routed_experts", 128},
                              {"n_shared_experts", 1}, {"routed_scaling_factor", 1.0}, {"num_experts_per_tok", 8},
                              {"first_k_dense_replace", 1}, {"num_hidden_layers", 46}, {"num_key_value_heads", 8},
                              {"num_nextn_predict_layers", 1}, {"rms_norm_eps", 1e-05}, {"rope_scaling", nullptr},
                              {"rope_theta", 1000000}, {"tie_word_embeddings", false}, {"torch_dtype", "bfloat16"},
                              {"use_cache", true}, {"use_qk_norm", false}, {"vocab_size", 151552}};
  auto c = ModelConfig::FromJson(air);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rotary_dim(), 64);
  EXPECT_EQ(c->num_experts, 128);
  EXPECT_EQ(c->shared_expert_intermediate_size, 1408);
  EXPECT_TRUE(c->attention_bias);
  EXPECT_FALSE(c->output_bias || c->qk_norm || c->shared_expert_gate);
  EXPECT_FALSE(c->is_moe_layer(0));
  EXPECT_TRUE(c->is_moe_layer(45));
  auto back = ModelConfig::FromJson(nlohmann::json::parse(c->ToJson().dump()));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->ToJson().dump(), c->ToJson().dump());
  nlohmann::json groups = air;
  groups["n_group"] = 3;
  EXPECT_THAT(std::string(ModelConfig::FromJson(groups).status().message()), HasSubstr("n_group must divide the 128"));
  nlohmann::json few = air;
  few.update({{"n_group", 8}, {"topk_group", 1}, {"num_experts_per_tok", 17}});
  EXPECT_THAT(std::string(ModelConfig::FromJson(few).status().message()), HasSubstr("between 1 and the 16 experts"));
  nlohmann::json llama = air;
  llama["model_type"] = "llama";
  EXPECT_THAT(std::string(ModelConfig::FromJson(llama).status().message()), HasSubstr("n_routed_experts = 128"));
}

// DeepSeek-V3 (deepseek_v3) against deepseek_v3_reference.py (fp64, the config.json
// given here). Three shapes: (1) latent attention with q_lora_rank, biases on
// q_a_proj/kv_a_proj_with_mqa/o_proj, interleaved RoPE under YaRN whose mscale_all_dim
// also scales the scores, num_key_value_heads 2 (unused: every head has its own key),
// then the router of GLM-4.5 (groups, correction bias, scaling) with two shared
// experts from layer 1 on; (2) q_proj (q_lora_rank null), rotate-half RoPE
// (rope_interleave false), no scaling; (3) TRL's tiny model (hidden 8, 4 heads, 2
// layers, DeepseekV3Config's defaults otherwise: latent widths 1536/512, heads of
// 128 + 64 and 128, both layers dense). Every path; saved and loaded back under
// DeepSeek's names; the other RoPE layout or no mscale_all_dim give other logits;
// a multi-token-prediction layer past the last loads and is dropped.
TEST(CausalLMTest, DeepseekV3MatchesThePythonTranscriptionOnEveryPath) {
  for (const int shape : {1, 2, 3}) {
    SCOPED_TRACE(absl::StrCat("shape ", shape));
    nlohmann::json json = {{"model_type", "deepseek_v3"}, {"architectures", {"DeepseekV3ForCausalLM"}}, {"vocab_size", 97},
                           {"hidden_size", 32}, {"intermediate_size", 40}, {"num_hidden_layers", 3},
                           {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"q_lora_rank", 12}, {"kv_lora_rank", 10},
                           {"qk_nope_head_dim", 6}, {"qk_rope_head_dim", 4}, {"v_head_dim", 5}, {"rope_theta", 500.0},
                           {"max_position_embeddings", 64}, {"attention_bias", true},
                           {"rope_scaling", {{"type", "yarn"}, {"factor", 4}, {"mscale", 1.0}, {"mscale_all_dim", 0.8},
                                             {"original_max_position_embeddings", 16}, {"beta_fast", 32}, {"beta_slow", 1}}},
                           {"n_routed_experts", 8}, {"num_experts_per_tok", 3}, {"moe_intermediate_size", 16},
                           {"n_shared_experts", 2}, {"n_group", 4}, {"topk_group", 2}, {"routed_scaling_factor", 2.5},
                           {"first_k_dense_replace", 1}};
    if (shape == 2) {
      json["q_lora_rank"] = nullptr;
      json["rope_interleave"] = false;
      json.erase("rope_scaling");
      json["attention_bias"] = false;
    }
    if (shape == 3) {
      json = {{"model_type", "deepseek_v3"}, {"vocab_size", 97}, {"hidden_size", 8}, {"num_attention_heads", 4},
              {"num_key_value_heads", 2}, {"num_hidden_layers", 2}, {"intermediate_size", 32}};
    }
    auto config = ModelConfig::FromJson(json);
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_EQ(config->architecture, "DeepseekV3ForCausalLM");
    EXPECT_TRUE(config->mla());
    EXPECT_EQ(config->attention_kv_heads(), 4);
    EXPECT_EQ(config->head_dim, shape == 3 ? 64 : 4);
    EXPECT_EQ(config->qk_head_dim(), shape == 3 ? 192 : 10);
    EXPECT_EQ(config->rope_interleaved, shape != 2);
    EXPECT_EQ(config->is_moe_layer(1), shape != 3);
    if (shape == 1) {  // (0.1 · 0.8 · ln 4 + 1)² / sqrt(10)
      EXPECT_NEAR(config->attention_scale(), std::pow(0.08 * std::log(4.0) + 1, 2) / std::sqrt(10.0), 1e-12);
    }
    // TRL's tiny shape at std 0.02 (its 1536- and 512-wide latents would saturate at 0.2).
    std::unique_ptr<CausalLM> model;
    if (shape == 3) {
      auto random = CausalLM::Random(*config, at::kFloat, 151);
      ASSERT_TRUE(random.ok()) << random.status();
      model = std::move(*random);
    } else {
      model = RandomWithStd02(*config, 150 + shape);
    }
    RandomizeBiasesAndNorms(*model, 153);
    std::map<std::string, at::Tensor> tensors(model->named_parameters().begin(), model->named_parameters().end());
    {
      c10::NoGradGuard no_grad;
      at::manual_seed(154);
      for (auto& [name, p] : tensors) {
        if (absl::EndsWith(name, "e_score_correction_bias")) p.copy_(at::randn(p.sizes()) * 0.3);
      }
    }
    const std::string attn = "model.layers.1.self_attn.";
    EXPECT_EQ(tensors.count(attn + "q_a_proj.weight"), shape == 2 ? 0u : 1u);
    EXPECT_EQ(tensors.count(attn + "q_a_layernorm.weight"), shape == 2 ? 0u : 1u);
    EXPECT_EQ(tensors.count(attn + "q_proj.weight"), shape == 2 ? 1u : 0u);
    EXPECT_EQ(tensors.count(attn + "kv_a_proj_with_mqa.bias"), shape == 1 ? 1u : 0u);
    EXPECT_EQ(tensors.count(attn + "o_proj.bias"), shape == 1 ? 1u : 0u);
    EXPECT_EQ(tensors.count(attn + "k_proj.weight"), 0u);
    EXPECT_EQ(tensors.at(attn + "kv_b_proj.weight").sizes(), shape == 3 ? at::IntArrayRef({1024, 512}) : at::IntArrayRef({44, 10}));
    EXPECT_EQ(tensors.at(attn + "o_proj.weight").sizes(), shape == 3 ? at::IntArrayRef({8, 512}) : at::IntArrayRef({32, 20}));
    EXPECT_EQ(tensors.count("model.layers.1.mlp.shared_experts.up_proj.weight"), shape == 3 ? 0u : 1u);
    const at::Tensor ids = at::randint(config->vocab_size, {2, 9}, at::kLong);
    const std::string name = absl::StrCat("py_deepseek_v3_", shape);
    const at::Tensor expected = PythonReferenceLogits(*model, ids, name, &json, "deepseek_v3_reference.py");
    ASSERT_TRUE(expected.defined());
    ExpectEveryPathGives(*model, ids, expected, /*prefill=*/3, /*decode_step=*/false);
    const std::string dir = testing::TempDir(name + "_save");
    ASSERT_TRUE(SaveCausalLM(*model, dir).ok());
    ExpectLoadedBackGivesTheSameLogits(*model, dir, ids);
    const nlohmann::json written = nlohmann::json::parse(testing::ReadFile(dir + "/config.json"));
    EXPECT_EQ(written["q_lora_rank"], shape == 2 ? nlohmann::json(nullptr) : nlohmann::json(shape == 3 ? 1536 : 12));
    EXPECT_EQ(written["rope_interleave"], shape != 2);
    EXPECT_EQ(written["first_k_dense_replace"], shape == 3 ? 2 : 1);
    c10::NoGradGuard no_grad;
    auto differs = [&](nlohmann::json changed) {
      auto other = CausalLM::FromTensors(*ModelConfig::FromJson(changed), tensors, at::kFloat);
      EXPECT_TRUE(other.ok()) << other.status();
      return other.ok() ? ((*other)->Forward(ids, Positions(2, 9), at::Tensor(), nullptr) - expected).abs().max().item<double>() : 0.0;
    };
    nlohmann::json layout = json;
    layout["rope_interleave"] = shape == 2;
    EXPECT_GT(differs(layout), 1e-3) << "the RoPE layout";
    if (shape == 1) {
      nlohmann::json unscaled = json;
      unscaled["rope_scaling"].erase("mscale_all_dim");
      // The same cos and sin: only the scores' scale differs.
      unscaled["rope_scaling"]["attention_factor"] = config->rope_scaling->attention_factor;
      EXPECT_GT(differs(unscaled), 1e-3) << "mscale_all_dim";
    }
    std::map<std::string, at::Tensor> with_mtp = tensors;
    with_mtp[absl::StrCat("model.layers.", config->num_hidden_layers, ".eh_proj.weight")] = at::zeros({8, 16});
    EXPECT_TRUE(CausalLM::FromTensors(*config, with_mtp, at::kFloat).ok());
  }
}

// DeepSeek-V3's own config.json (the hub's, its fp8 quantization_config removed:
// with it, refused by name) read as DeepseekV3Config defines it, and written back and
// read again the same; latent widths that cannot work are named.
TEST(CausalLMTest, DeepseekV3ConfigReadsTheHubsFields) {
  nlohmann::json hub = {{"architectures", {"DeepseekV3ForCausalLM"}}, {"attention_bias", false}, {"attention_dropout", 0.0},
                        {"aux_loss_alpha", 0.001}, {"bos_token_id", 0}, {"eos_token_id", 1}, {"ep_size", 1},
                        {"first_k_dense_replace", 3}, {"hidden_act", "silu"}, {"hidden_size", 7168},
                        {"initializer_range", 0.02}, {"intermediate_size", 18432}, {"kv_lora_rank", 512},
                        {"max_position_embeddings", 163840}, {"model_type", "deepseek_v3"}, {"moe_intermediate_size", 2048},
                        {"moe_layer_freq", 1}, {"n_group", 8}, {"n_routed_experts", 256}, {"n_shared_experts", 1},
                        {"norm_topk_prob", true}, {"num_attention_heads", 128}, {"num_experts_per_tok", 8},
                        {"num_hidden_layers", 61}, {"num_key_value_heads", 128}, {"num_nextn_predict_layers", 1},
                        {"q_lora_rank", 1536}, {"qk_nope_head_dim", 128}, {"qk_rope_head_dim", 64},
                        {"rms_norm_eps", 1e-06},
                        {"rope_scaling", {{"beta_fast", 32}, {"beta_slow", 1}, {"factor", 40}, {"mscale", 1.0},
                                          {"mscale_all_dim", 1.0}, {"original_max_position_embeddings", 4096}, {"type", "yarn"}}},
                        {"rope_theta", 10000}, {"routed_scaling_factor", 2.5}, {"scoring_func", "sigmoid"}, {"seq_aux", true},
                        {"tie_word_embeddings", false}, {"topk_group", 4}, {"topk_method", "noaux_tc"},
                        {"torch_dtype", "bfloat16"}, {"use_cache", true}, {"v_head_dim", 128}, {"vocab_size", 129280}};
  auto c = ModelConfig::FromJson(hub);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->qk_head_dim(), 192);
  EXPECT_EQ(c->value_head_dim(), 128);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->rotary_dim(), 64);
  EXPECT_EQ(c->num_experts, 256);
  EXPECT_EQ(c->shared_expert_intermediate_size, 2048);
  EXPECT_FALSE(c->is_moe_layer(2));
  EXPECT_TRUE(c->is_moe_layer(3));
  EXPECT_DOUBLE_EQ(c->rope_scaling->attention_factor, 1.0);  // mscale / mscale_all_dim
  EXPECT_NEAR(c->attention_scale(), std::pow(0.1 * std::log(40.0) + 1, 2) / std::sqrt(192.0), 1e-12);
  auto back = ModelConfig::FromJson(nlohmann::json::parse(c->ToJson().dump()));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->ToJson().dump(), c->ToJson().dump());
  EXPECT_DOUBLE_EQ(back->attention_scale(), c->attention_scale());
  nlohmann::json quantized = hub;
  quantized["quantization_config"] = {{"activation_scheme", "dynamic"}, {"fmt", "e4m3"}, {"quant_method", "fp8"},
                                      {"weight_block_size", {128, 128}}};
  EXPECT_THAT(std::string(ModelConfig::FromJson(quantized).status().message()), HasSubstr("\"fp8\": quantized weights"));
  for (auto [key, value] : {std::pair{"kv_lora_rank", 0}, {"qk_rope_head_dim", 63}, {"v_head_dim", 0}}) {
    nlohmann::json bad = hub;
    bad[key] = value;
    EXPECT_THAT(std::string(ModelConfig::FromJson(bad).status().message()), HasSubstr("latent attention needs")) << key;
  }
  nlohmann::json zero_q = hub;
  zero_q["q_lora_rank"] = 0;
  EXPECT_THAT(std::string(ModelConfig::FromJson(zero_q).status().message()), HasSubstr("q_lora_rank must be positive, or null"));
  nlohmann::json head_dim = hub;
  head_dim["head_dim"] = 128;
  EXPECT_THAT(std::string(ModelConfig::FromJson(head_dim).status().message()), HasSubstr("must equal qk_rope_head_dim"));
}

// Mamba and FalconMamba against mamba_reference.py (fp64, MambaMixer.slow_forward's
// loop): biases on in_proj/out_proj (use_bias), dt_proj's bias and the norms random,
// FalconMamba's weightless RMS norms of B, C and dt; then TRL's tiny FalconMamba
// (hidden 8, 2 layers, intermediate_size 32 given, state 16, tied). Every path (the
// cache holds the conv's last inputs and the SSM state); a left-padded row, masked
// before and after the conv as the mixer does, equals the reference and the row
// alone; a continuation packed after its prompt (prefix) starts from the prompt's
// states; saved under backbone.* and loaded back; FalconMamba's weights read as
// plain Mamba give other logits.
TEST(CausalLMTest, MambaMatchesThePythonTranscriptionOnEveryPath) {
  for (const int shape : {1, 2, 3}) {
    SCOPED_TRACE(absl::StrCat("shape ", shape));
    const std::string type = shape == 1 ? "mamba" : "falcon_mamba";
    nlohmann::json json = {{"model_type", type}, {"vocab_size", 97}, {"hidden_size", 16}, {"state_size", 4},
                           {"num_hidden_layers", 2}, {"expand", 2}, {"conv_kernel", 3}, {"time_step_rank", "auto"},
                           {"use_bias", true}, {"tie_word_embeddings", shape == 1}, {"layer_norm_epsilon", 1e-5}};
    if (shape == 3) {
      json = {{"model_type", "falcon_mamba"}, {"architectures", {"FalconMambaForCausalLM"}}, {"vocab_size", 97},
              {"hidden_size", 8}, {"num_hidden_layers", 2}, {"intermediate_size", 32}};
    }
    auto config = ModelConfig::FromJson(json);
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_EQ(config->architecture, shape == 1 ? "MambaForCausalLM" : "FalconMambaForCausalLM");
    EXPECT_TRUE(config->mamba);
    EXPECT_EQ(config->mamba_bc_norm, shape != 1);
    EXPECT_EQ(config->intermediate_size, 32);
    EXPECT_EQ(config->time_step_rank, 1);
    EXPECT_FALSE(config->has_rope());
    auto random = CausalLM::Random(*config, at::kFloat, 160 + shape);
    ASSERT_TRUE(random.ok()) << random.status();
    const std::unique_ptr<CausalLM> model = std::move(*random);
    RandomizeBiasesAndNorms(*model, 164);
    std::map<std::string, at::Tensor> tensors(model->named_parameters().begin(), model->named_parameters().end());
    const std::string mixer = "model.layers.1.mixer.";
    EXPECT_EQ(tensors.at(mixer + "A_log").sizes(), at::IntArrayRef({32, shape == 3 ? 16 : 4}));
    EXPECT_EQ(tensors.at(mixer + "conv1d.weight").sizes(), at::IntArrayRef({32, 1, shape == 3 ? 4 : 3}));
    EXPECT_EQ(tensors.count(mixer + "in_proj.bias"), shape == 3 ? 0u : 1u);
    EXPECT_NEAR(tensors.at(mixer + "A_log")[3][1].item<double>(), std::log(2.0), 1e-6);  // S4D-real: A = -(1, 2, ...)
    const std::int64_t B = 2, T = 9;
    const at::Tensor ids = at::randint(config->vocab_size, {B, T}, at::kLong);
    const std::string name = absl::StrCat("py_mamba_", shape);
    const at::Tensor expected = PythonReferenceLogits(*model, ids, name, &json, "mamba_reference.py");
    ASSERT_TRUE(expected.defined());
    ExpectEveryPathGives(*model, ids, expected, /*prefill=*/3, /*decode_step=*/false);

    // Row 1 left-padded by 3 slots.
    const std::string padded_dir = testing::TempDir(name + "_padded");
    ASSERT_TRUE(SaveCausalLM(*model, padded_dir).ok());
    testing::WriteFile(padded_dir + "/config.json", json.dump());
    at::Tensor mask = at::ones({B, T}, at::kLong);
    mask[1].narrow(0, 0, 3).zero_();
    ASSERT_TRUE(SaveSafetensors(padded_dir + "/ids.safetensors", {{"ids", ids}}).ok());
    ASSERT_TRUE(SaveSafetensors(padded_dir + "/mask.safetensors", {{"mask", mask}}).ok());
    std::string out;
    ASSERT_EQ(testing::RunCommand(testing::Python() + " " + testing::SourceDir() + "/tests/framework/model/mamba_reference.py " +
                                      padded_dir, &out), 0) << out;
    auto file = SafetensorsFile::Open(padded_dir + "/reference_logits.safetensors");
    ASSERT_TRUE(file.ok()) << file.status();
    const at::Tensor padded_expected = *file->Get("logits");
    c10::NoGradGuard no_grad;
    const at::Tensor positions = (mask.cumsum(-1) - 1).clamp_min(0);
    const at::Tensor logits = model->Forward(ids, positions, mask, nullptr);
    EXPECT_LT((logits[1].narrow(0, 3, T - 3) - padded_expected[1].narrow(0, 3, T - 3)).abs().max().item<double>(), 1e-4);
    const at::Tensor alone = model->Forward(ids[1].narrow(0, 3, T - 3).unsqueeze(0), Positions(1, T - 3), at::Tensor(), nullptr);
    EXPECT_LT((alone[0] - padded_expected[1].narrow(0, 3, T - 3)).abs().max().item<double>(), 1e-4);
    EXPECT_GT((padded_expected[1].narrow(0, 3, T - 3) - expected[1].narrow(0, 3, T - 3)).abs().max().item<double>(), 1e-3);

    // Prompt ids[0][0, 4) and two continuations of it packed after it.
    const std::vector<std::int64_t> row(ids[0].data_ptr<std::int64_t>(), ids[0].data_ptr<std::int64_t>() + T);
    PackedSequences packed = PackSequences({std::vector<std::int64_t>(row.begin(), row.begin() + 4),
                                            std::vector<std::int64_t>(row.begin() + 4, row.end()),
                                            std::vector<std::int64_t>(row.begin() + 4, row.begin() + 6)});
    packed.prefix = {-1, 0, 0};
    const at::Tensor continued = model->Logits(model->PackedHidden(packed));
    EXPECT_LT((continued.narrow(0, 0, T) - expected[0]).abs().max().item<double>(), 1e-4);
    EXPECT_LT((continued.narrow(0, T, 2) - expected[0].narrow(0, 4, 2)).abs().max().item<double>(), 1e-4);

    const std::string dir = testing::TempDir(name + "_save");
    ASSERT_TRUE(SaveCausalLM(*model, dir).ok());
    ExpectLoadedBackGivesTheSameLogits(*model, dir, ids);
    auto saved = LoadSafetensorsDir(dir);
    ASSERT_TRUE(saved.ok()) << saved.status();
    for (const auto& [tensor, t] : *saved) {
      EXPECT_TRUE(absl::StartsWith(tensor, "backbone.") || tensor == "lm_head.weight") << tensor;
    }
    EXPECT_EQ(saved->count("backbone.layers.1.norm.weight"), 1u);
    EXPECT_EQ(saved->count("backbone.norm_f.weight"), 1u);
    const nlohmann::json written = nlohmann::json::parse(testing::ReadFile(dir + "/config.json"));
    EXPECT_EQ(written["model_type"], type);
    EXPECT_EQ(written["intermediate_size"], 32);
    EXPECT_EQ(written["conv_kernel"], shape == 3 ? 4 : 3);
    if (shape == 2) {
      nlohmann::json plain = json;
      plain["model_type"] = "mamba";
      auto other = CausalLM::FromTensors(*ModelConfig::FromJson(plain), tensors, at::kFloat);
      ASSERT_TRUE(other.ok()) << other.status();
      EXPECT_GT(((*other)->Forward(ids, Positions(B, T), at::Tensor(), nullptr) - expected).abs().max().item<double>(), 1e-3);
    }
  }
}

// A FalconMamba config.json as tiiuae/falcon-mamba-7b's is laid out (intermediate_size
// given beside expand wins, as the config's kwargs do; time_step_rank an integer),
// written back and read again the same; fields that cannot work are named.
TEST(CausalLMTest, MambaConfigReadsFalconMambaFields) {
  const nlohmann::json hub = {{"architectures", {"FalconMambaForCausalLM"}}, {"bos_token_id", 0}, {"conv_kernel", 4},
                              {"eos_token_id", 11}, {"expand", 16}, {"hidden_act", "silu"}, {"hidden_size", 4096},
                              {"initializer_range", 0.1}, {"intermediate_size", 8192}, {"layer_norm_epsilon", 1e-05},
                              {"model_type", "falcon_mamba"}, {"num_hidden_layers", 64}, {"pad_token_id", 11},
                              {"rescale_prenorm_residual", false}, {"residual_in_fp32", true}, {"state_size", 16},
                              {"tie_word_embeddings", false}, {"time_step_floor", 0.0001}, {"time_step_init_scheme", "random"},
                              {"time_step_max", 0.1}, {"time_step_min", 0.001}, {"time_step_rank", 256},
                              {"time_step_scale", 1.0}, {"torch_dtype", "bfloat16"}, {"use_bias", false}, {"use_cache", true},
                              {"use_conv_bias", true}, {"vocab_size", 65024}};
  auto c = ModelConfig::FromJson(hub);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->intermediate_size, 8192);
  EXPECT_EQ(c->time_step_rank, 256);
  EXPECT_EQ(c->eos_token_ids, std::vector<std::int64_t>{11});
  EXPECT_EQ(c->pad_token_id, std::optional<std::int64_t>(11));
  EXPECT_FALSE(c->tie_word_embeddings);
  auto back = ModelConfig::FromJson(nlohmann::json::parse(c->ToJson().dump()));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->ToJson().dump(), c->ToJson().dump());
  nlohmann::json auto_rank = hub;
  auto_rank.erase("intermediate_size");
  auto_rank["time_step_rank"] = "auto";
  auto derived = ModelConfig::FromJson(auto_rank);
  ASSERT_TRUE(derived.ok()) << derived.status();
  EXPECT_EQ(derived->intermediate_size, 65536);  // expand · hidden_size
  EXPECT_EQ(derived->time_step_rank, 256);       // ceil(4096 / 16)
  for (auto [key, value] : {std::pair{"state_size", nlohmann::json(0)}, {"conv_kernel", nlohmann::json(-1)},
                            {"time_step_rank", nlohmann::json("big")}, {"expand", nlohmann::json(0)}}) {
    nlohmann::json bad = hub;
    bad[key] = value;
    EXPECT_FALSE(ModelConfig::FromJson(bad).ok()) << key;
    EXPECT_THAT(std::string(ModelConfig::FromJson(bad).status().message()), HasSubstr(key));
  }
}

// GPT-OSS (gpt_oss) against gpt_oss_reference.py (fp64, the config.json given here):
// attention sinks, biases on q/k/v/o, the window on layer 0 (layer_types' default:
// the even layers), the router's bias and its softmax over the top k logits, the
// fused experts with their biases, interleaved gate/up columns and the swiglu_limit
// clamp (0.5 here, so that it bites); then TRL's tiny shape with GPT-OSS's YaRN (head_dim
// 64 by default). Every path; saved and loaded back under GPT-OSS's names; zeroed sinks
// or a loose clamp give other logits.
TEST(CausalLMTest, GptOssMatchesThePythonTranscriptionOnEveryPath) {
  for (const bool tiny : {false, true}) {
    SCOPED_TRACE(tiny ? "TRL's tiny shape, YaRN" : "sinks, window, clamp");
    nlohmann::json json = {{"model_type", "gpt_oss"}, {"architectures", {"GptOssForCausalLM"}}, {"vocab_size", 97},
                           {"hidden_size", 32}, {"intermediate_size", 12}, {"num_hidden_layers", 2},
                           {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"head_dim", 8}, {"rms_norm_eps", 1e-5},
                           {"rope_theta", 500.0}, {"sliding_window", 3}, {"num_local_experts", 4},
                           {"num_experts_per_tok", 2}, {"swiglu_limit", 0.5}};
    if (tiny) {
      json = {{"model_type", "gpt_oss"}, {"vocab_size", 97}, {"hidden_size", 8}, {"intermediate_size", 32},
              {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"num_experts_per_tok", 2},
              {"num_local_experts", 4},
              {"rope_scaling", {{"rope_type", "yarn"}, {"factor", 32.0}, {"beta_fast", 32.0}, {"beta_slow", 1.0},
                                {"truncate", false}, {"original_max_position_embeddings", 4096}}}};
    }
    auto config = ModelConfig::FromJson(json);
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_EQ(config->architecture, "GptOssForCausalLM");
    EXPECT_EQ(config->head_dim, tiny ? 64 : 8);
    EXPECT_TRUE(config->output_bias && config->attention_bias && config->gpt_oss);
    EXPECT_EQ(config->window_of(0), tiny ? 128 : 3);
    EXPECT_EQ(config->window_of(1), 0);
    const std::unique_ptr<CausalLM> model = RandomWithStd02(*config, tiny ? 151 : 152);
    RandomizeBiasesAndNorms(*model, 153);
    std::map<std::string, at::Tensor> tensors(model->named_parameters().begin(), model->named_parameters().end());
    {
      c10::NoGradGuard no_grad;
      at::manual_seed(154);
      for (auto& [name, p] : tensors) {
        if (absl::EndsWith(name, "_bias")) p.copy_(at::randn(p.sizes()) * 0.2);
        if (absl::EndsWith(name, "sinks")) p.copy_(at::randn(p.sizes()) * 2.0);
      }
    }
    for (const char* name : {"model.layers.1.self_attn.sinks", "model.layers.1.self_attn.o_proj.bias", "model.layers.0.mlp.router.bias",
                             "model.layers.0.mlp.experts.gate_up_proj", "model.layers.0.mlp.experts.down_proj_bias"}) {
      EXPECT_EQ(tensors.count(name), 1u) << name;
    }
    EXPECT_EQ(tensors.at("model.layers.0.mlp.experts.gate_up_proj").sizes(),
              at::IntArrayRef({4, config->hidden_size, 2 * config->intermediate_size}));
    const at::Tensor ids = at::randint(config->vocab_size, {2, 9}, at::kLong);
    const at::Tensor expected =
        PythonReferenceLogits(*model, ids, tiny ? "py_gpt_oss_tiny" : "py_gpt_oss", &json, "gpt_oss_reference.py");
    ASSERT_TRUE(expected.defined());
    ExpectEveryPathGives(*model, ids, expected, /*prefill=*/3, /*decode_step=*/false);
    const std::string dir = testing::TempDir(tiny ? "gpt_oss_tiny_save" : "gpt_oss_save");
    ASSERT_TRUE(SaveCausalLM(*model, dir).ok());
    ExpectLoadedBackGivesTheSameLogits(*model, dir, ids);
    const nlohmann::json written = nlohmann::json::parse(testing::ReadFile(dir + "/config.json"));
    EXPECT_EQ(written["num_local_experts"], 4);
    EXPECT_EQ(written["layer_types"][0], "sliding_attention");
    c10::NoGradGuard no_grad;
    std::map<std::string, at::Tensor> sinkless = tensors;
    for (auto& [name, t] : sinkless) {
      if (absl::EndsWith(name, "sinks")) t = at::full_like(t, -1e4);
    }
    auto other = CausalLM::FromTensors(*config, sinkless, at::kFloat);
    ASSERT_TRUE(other.ok()) << other.status();
    EXPECT_GT(((*other)->Forward(ids, Positions(2, 9), at::Tensor(), nullptr) - expected).abs().max().item<double>(), 1e-3);
    if (!tiny) {
      ModelConfig loose = *config;
      loose.swiglu_limit = 1e3;
      auto unclamped = CausalLM::FromTensors(loose, tensors, at::kFloat);
      ASSERT_TRUE(unclamped.ok()) << unclamped.status();
      EXPECT_GT(((*unclamped)->Forward(ids, Positions(2, 9), at::Tensor(), nullptr) - expected).abs().max().item<double>(), 1e-3);
    }
  }
}

// DBRX (dbrx) against dbrx_reference.py (fp64, the config.json given here): bias-free
// LayerNorms, Wqkv clamped by clip_qkv (0.3 here, so that it bites), GQA from
// attn_config.kv_n_heads, the router's top 2 divided by their 2-norm
// (moe_normalize_expert_weights 2), the fused experts w1/v1/w2; the top-level
// num_key_value_heads and intermediate_size TRL's tiny models carry are extras
// DbrxForCausalLM never reads. Then TRL's tiny shape (DbrxConfig's defaults: one KV
// head, experts 3584 wide, the top 1, no clamp). Every path; saved under DBRX's names
// and config, loaded back the same; without the clamp, or with p = 1, other logits.
TEST(CausalLMTest, DbrxMatchesThePythonTranscriptionOnEveryPath) {
  for (const bool tiny : {false, true}) {
    SCOPED_TRACE(tiny ? "TRL's tiny shape" : "clamp, GQA, 2-norm");
    nlohmann::json json = {{"model_type", "dbrx"}, {"architectures", {"DbrxForCausalLM"}}, {"vocab_size", 97},
                           {"d_model", 32}, {"n_heads", 4}, {"n_layers", 2}, {"max_seq_len", 64},
                           {"num_key_value_heads", 4}, {"intermediate_size", 99},
                           {"attn_config", {{"kv_n_heads", 2}, {"rope_theta", 500.0}, {"clip_qkv", 0.3}}},
                           {"ffn_config", {{"ffn_hidden_size", 12}, {"moe_num_experts", 4}, {"moe_top_k", 2},
                                           {"moe_normalize_expert_weights", 2.0}, {"ffn_act_fn", {{"name", "silu"}}}}}};
    if (tiny) {
      json = {{"model_type", "dbrx"}, {"vocab_size", 97}, {"d_model", 8}, {"n_heads", 4}, {"n_layers", 2},
              {"num_key_value_heads", 2}, {"intermediate_size", 32}, {"attn_config", {{"kv_n_heads", 1}}},
              {"ffn_config", {{"moe_num_experts", 4}}}};
    }
    auto config = ModelConfig::FromJson(json);
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_EQ(config->architecture, "DbrxForCausalLM");
    EXPECT_EQ(config->num_key_value_heads, tiny ? 1 : 2);
    EXPECT_EQ(config->moe_intermediate_size, tiny ? 3584 : 12);
    EXPECT_EQ(config->num_experts_per_tok, tiny ? 1 : 2);
    EXPECT_EQ(config->clip_qkv, tiny ? 0.0 : 0.3);
    EXPECT_TRUE(config->layer_norm && !config->layer_norm_bias && !config->tie_word_embeddings);
    const std::unique_ptr<CausalLM> model = RandomWithStd02(*config, tiny ? 161 : 162);
    RandomizeBiasesAndNorms(*model, 163);
    const at::Tensor ids = at::randint(config->vocab_size, {2, 9}, at::kLong);
    const at::Tensor expected = PythonReferenceLogits(*model, ids, tiny ? "py_dbrx_tiny" : "py_dbrx", &json, "dbrx_reference.py");
    ASSERT_TRUE(expected.defined());
    ExpectEveryPathGives(*model, ids, expected, /*prefill=*/3, /*decode_step=*/false);
    const std::string dir = testing::TempDir(tiny ? "dbrx_tiny_save" : "dbrx_save");
    ASSERT_TRUE(SaveCausalLM(*model, dir).ok());
    ExpectLoadedBackGivesTheSameLogits(*model, dir, ids);
    auto saved = SafetensorsFile::Open(dir + "/model.safetensors");
    ASSERT_TRUE(saved.ok()) << saved.status();
    const std::int64_t E = 4, I = config->moe_intermediate_size, H = config->hidden_size;
    EXPECT_EQ(saved->Get("transformer.blocks.1.ffn.experts.mlp.w2")->sizes(), at::IntArrayRef({E * I, H}));
    EXPECT_EQ(saved->Get("transformer.blocks.0.norm_attn_norm.attn.Wqkv.weight")->sizes(),
              at::IntArrayRef({H + 2 * config->num_key_value_heads * config->head_dim, H}));
    for (const char* name : {"transformer.wte.weight", "transformer.norm_f.weight", "lm_head.weight",
                             "transformer.blocks.1.ffn.router.layer.weight", "transformer.blocks.0.norm_attn_norm.norm_2.weight"}) {
      EXPECT_TRUE(saved->Get(name).ok()) << name;
    }
    const nlohmann::json written = nlohmann::json::parse(testing::ReadFile(dir + "/config.json"));
    EXPECT_EQ(written["d_model"], H);
    EXPECT_EQ(written["attn_config"]["kv_n_heads"], config->num_key_value_heads);
    EXPECT_EQ(written["ffn_config"]["ffn_hidden_size"], I);
    EXPECT_EQ(written["ffn_config"]["moe_normalize_expert_weights"], tiny ? 1.0 : 2.0);
    if (tiny) {
      EXPECT_TRUE(written["attn_config"]["clip_qkv"].is_null());
      continue;
    }
    EXPECT_EQ(written["attn_config"]["clip_qkv"], 0.3);
    std::map<std::string, at::Tensor> tensors(model->named_parameters().begin(), model->named_parameters().end());
    c10::NoGradGuard no_grad;
    for (auto change : {+[](ModelConfig* c) { c->clip_qkv = 0; }, +[](ModelConfig* c) { c->topk_norm_p = 1.0; }}) {
      ModelConfig other_config = *config;
      change(&other_config);
      auto other = CausalLM::FromTensors(other_config, tensors, at::kFloat);
      ASSERT_TRUE(other.ok()) << other.status();
      EXPECT_GT(((*other)->Forward(ids, Positions(2, 9), at::Tensor(), nullptr) - expected).abs().max().item<double>(), 1e-3);
    }
  }
}

// DBRX's load-balancing loss (output_router_logits) against dbrx_reference.py's
// transcription of DbrxForCausalLM.forward: load_balancing_loss_func over what its
// blocks return as router logits, the probabilities, softmaxed once more; its
// coefficient is ffn_config.moe_loss_weight.
TEST(CausalLMTest, DbrxLoadBalancingLossSoftmaxesTheRoutersProbabilities) {
  const nlohmann::json json = {{"model_type", "dbrx"}, {"vocab_size", 97}, {"d_model", 32}, {"n_heads", 4}, {"n_layers", 2},
                               {"output_router_logits", true},
                               {"ffn_config", {{"ffn_hidden_size", 12}, {"moe_num_experts", 4}, {"moe_top_k", 2},
                                               {"moe_loss_weight", 0.05}}}};
  auto config = ModelConfig::FromJson(json);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->output_router_logits);
  EXPECT_EQ(config->router_aux_loss_coef, 0.05);
  const std::unique_ptr<CausalLM> model = RandomWithStd02(*config, 181);
  const at::Tensor ids = at::randint(config->vocab_size, {2, 9}, at::kLong);
  const std::string dir = testing::TempDir("aux_dbrx");
  ASSERT_TRUE(SaveCausalLM(*model, dir).ok());
  testing::WriteFile(dir + "/config.json", json.dump());
  ASSERT_TRUE(SaveSafetensors(dir + "/ids.safetensors", {{"ids", ids}}).ok());
  std::string out;
  ASSERT_EQ(testing::RunCommand(posttrain::testing::Python() + " " + testing::SourceDir() +
                                    "/tests/framework/model/dbrx_reference.py " + dir, &out), 0) << out;
  auto file = SafetensorsFile::Open(dir + "/reference_logits.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  const double expected = (*file->Get("aux_loss")).item<double>();
  model->set_record_router(true, /*without_grad=*/true);
  c10::NoGradGuard no_grad;
  model->Hidden(ids, Positions(2, 9), at::Tensor(), nullptr);
  const at::Tensor aux = model->TakeRouterAuxLoss();
  ASSERT_TRUE(aux.defined());
  EXPECT_NEAR(aux.item<double>(), expected, 1e-5);
}

// DBRX's moe_jitter_eps: in training (set_dropout, grad on) the MoE input is scaled
// by noise in [1 - eps, 1 + eps], so the logits move, by little; in evaluation, or
// without it, the model is deterministic.
TEST(CausalLMTest, DbrxJitterScalesTheExpertsInputInTrainingOnly) {
  auto config = ModelConfig::FromJson({{"model_type", "dbrx"}, {"vocab_size", 97}, {"d_model", 32}, {"n_heads", 4},
                                       {"n_layers", 2}, {"ffn_config", {{"ffn_hidden_size", 12}, {"moe_jitter_eps", 0.05}}}});
  ASSERT_TRUE(config.ok()) << config.status();
  const std::unique_ptr<CausalLM> model = RandomWithStd02(*config, 171);
  const at::Tensor ids = at::randint(config->vocab_size, {2, 7}, at::kLong);
  const at::Tensor pos = Positions(2, 7);
  at::Tensor eval;
  {
    c10::NoGradGuard no_grad;
    eval = model->Forward(ids, pos, at::Tensor(), nullptr);
  }
  model->set_dropout(true);
  const at::Tensor train = model->Forward(ids, pos, at::Tensor(), nullptr).detach();
  const double moved = (train - eval).abs().max().item<double>();
  EXPECT_GT(moved, 1e-4);
  EXPECT_LT(moved, 0.5 * eval.abs().max().item<double>());
  ModelConfig still = *config;
  still.router_jitter_eps = 0;
  std::map<std::string, at::Tensor> tensors(model->named_parameters().begin(), model->named_parameters().end());
  auto plain = CausalLM::FromTensors(still, tensors, at::kFloat);
  ASSERT_TRUE(plain.ok());
  (*plain)->set_dropout(true);
  EXPECT_TRUE(at::allclose((*plain)->Forward(ids, pos, at::Tensor(), nullptr).detach(), eval, 1e-5, 1e-6));
}

// DBRX's config errors name the nested field: a non-object attn_config, a clamp that
// is not positive, a top k beyond the experts, tied embeddings, an activation with
// arguments.
TEST(CausalLMTest, DbrxConfigErrorsNameTheNestedField) {
  const nlohmann::json base = {{"model_type", "dbrx"}, {"vocab_size", 97}, {"d_model", 32}, {"n_heads", 4}, {"n_layers", 2}};
  for (const auto& [patch, words] : std::vector<std::pair<nlohmann::json, std::string>>{
           {{{"attn_config", 3}}, "\"attn_config\" must be an object"},
           {{{"attn_config", {{"clip_qkv", -1}}}}, "attn_config.clip_qkv must be a positive number"},
           {{{"ffn_config", {{"moe_top_k", 5}}}}, "ffn_config.moe_top_k must be between 1 and the 4 experts"},
           {{{"ffn_config", {{"moe_normalize_expert_weights", 0}}}}, "moe_normalize_expert_weights must be a positive number"},
           {{{"ffn_config", {{"ffn_act_fn", {{"name", "silu"}, {"approximate", "tanh"}}}}}}, "ffn_config.ffn_act_fn.approximate"},
           {{{"tie_word_embeddings", true}}, "tie_word_embeddings = true is not supported for DBRX"}}) {
    nlohmann::json json = base;
    json.update(patch);
    auto config = ModelConfig::FromJson(json);
    ASSERT_FALSE(config.ok()) << patch.dump();
    EXPECT_THAT(std::string(config.status().message()), HasSubstr(words)) << patch.dump();
  }
  nlohmann::json unnormalised = base;
  unnormalised["ffn_config"] = {{"moe_normalize_expert_weights", nullptr}, {"moe_jitter_eps", 0.01}};
  auto config = ModelConfig::FromJson(unnormalised);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_FALSE(config->norm_topk_prob);
  EXPECT_EQ(config->router_jitter_eps, 0.01);
  EXPECT_EQ(config->router_aux_loss_coef, 0.01);  // moe_loss_weight's default
  const nlohmann::json written(config->ToJson());
  EXPECT_TRUE(written["ffn_config"]["moe_normalize_expert_weights"].is_null());
  EXPECT_EQ(written["ffn_config"]["moe_jitter_eps"], 0.01);
}

// openai/gpt-oss-20b's config.json: its MXFP4 quantization_config is refused by name
// (dequantized, the same config reads: 32 experts, the window of 128 on the even
// layers, YaRN of factor 32 untruncated, biases on o_proj), written back and read
// back the same.
TEST(CausalLMTest, GptOssConfigReadsGptOss20bFields) {
  nlohmann::json types = nlohmann::json::array();
  for (int i = 0; i < 24; ++i) types.push_back(i % 2 == 0 ? "sliding_attention" : "full_attention");
  nlohmann::json oss = {{"architectures", {"GptOssForCausalLM"}}, {"attention_bias", true}, {"attention_dropout", 0.0},
                        {"eos_token_id", 200002}, {"experts_per_token", 4}, {"head_dim", 64}, {"hidden_act", "silu"},
                        {"hidden_size", 2880}, {"initial_context_length", 4096}, {"initializer_range", 0.02},
                        {"intermediate_size", 2880}, {"layer_types", types}, {"max_position_embeddings", 131072},
                        {"model_type", "gpt_oss"}, {"num_attention_heads", 64}, {"num_experts_per_tok", 4},
                        {"num_hidden_layers", 24}, {"num_key_value_heads", 8}, {"num_local_experts", 32},
                        {"output_router_logits", false}, {"pad_token_id", 199999},
                        {"quantization_config", {{"modules_to_not_convert", {"model.layers.*.self_attn"}}, {"quant_method", "mxfp4"}}},
                        {"rms_norm_eps", 1e-05},
                        {"rope_scaling", {{"beta_fast", 32.0}, {"beta_slow", 1.0}, {"factor", 32.0},
                                          {"original_max_position_embeddings", 4096}, {"rope_type", "yarn"}, {"truncate", false}}},
                        {"rope_theta", 150000}, {"router_aux_loss_coef", 0.9}, {"sliding_window", 128}, {"swiglu_limit", 7.0},
                        {"tie_word_embeddings", false}, {"use_cache", true}, {"vocab_size", 201088}};
  EXPECT_THAT(std::string(ModelConfig::FromJson(oss).status().message()), HasSubstr("quantization_config (\"mxfp4\""));
  oss.erase("quantization_config");
  auto c = ModelConfig::FromJson(oss);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_experts, 32);
  EXPECT_EQ(c->moe_intermediate_size, 2880);
  EXPECT_TRUE(c->is_moe_layer(0) && c->is_moe_layer(23));
  EXPECT_EQ(c->window_of(22), 128);
  EXPECT_EQ(c->window_of(23), 0);
  ASSERT_TRUE(c->rope_scaling.has_value());
  EXPECT_EQ(c->rope_scaling->rope_type, "yarn");
  EXPECT_FALSE(c->rope_scaling->truncate);
  EXPECT_TRUE(c->output_bias);
  auto back = ModelConfig::FromJson(nlohmann::json::parse(c->ToJson().dump()));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->ToJson().dump(), c->ToJson().dump());
}

// GPT-NeoX (Pythia) against tests/framework/model/gpt_neox_reference.py, which
// reads the checkpoint we write under GPT-NeoX's own names (one query_key_value
// interleaved by head, dense, dense_h_to_4h, ...) and does GPTNeoXLayer's maths in
// fp64: LayerNorms with random weights and biases, random biases on every
// projection, partial rotary, parallel and sequential residuals. Every path, saved
// and loaded back bit-identical; the checkpoint holds only GPT-NeoX's names; old
// checkpoints' buffers load; a query_key_value of the wrong shape is named.
TEST(CausalLMTest, GptNeoxMatchesThePythonTranscriptionOnEveryPath) {
  for (const bool parallel : {true, false}) {
    SCOPED_TRACE(parallel ? "use_parallel_residual" : "sequential residual");
    const nlohmann::json json = {{"model_type", "gpt_neox"}, {"architectures", {"GPTNeoXForCausalLM"}}, {"vocab_size", 97},
                                 {"hidden_size", 32}, {"intermediate_size", 56}, {"num_hidden_layers", 2},
                                 {"num_attention_heads", 4}, {"rotary_pct", 0.5}, {"rotary_emb_base", 500},
                                 {"layer_norm_eps", 1e-5}, {"hidden_act", "gelu"}, {"use_parallel_residual", parallel},
                                 {"max_position_embeddings", 64}, {"tie_word_embeddings", false}};
    auto config = ModelConfig::FromJson(json);
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_EQ(config->architecture, "GPTNeoXForCausalLM");
    EXPECT_EQ(config->rotary_dim(), 4);
    const std::unique_ptr<CausalLM> model = RandomWithStd02(*config, parallel ? 81 : 82);
    RandomizeBiasesAndNorms(*model, parallel ? 83 : 84);
    const at::Tensor ids = at::randint(config->vocab_size, {2, 9}, at::kLong);
    const at::Tensor expected = PythonReferenceLogits(*model, ids, parallel ? "py_neox_parallel" : "py_neox", nullptr,
                                                      "gpt_neox_reference.py");
    ASSERT_TRUE(expected.defined());
    ExpectEveryPathGives(*model, ids, expected, /*prefill=*/4, /*decode_step=*/false);

    const std::string dir = testing::TempDir(parallel ? "neox_save_parallel" : "neox_save");
    ASSERT_TRUE(SaveCausalLM(*model, dir).ok());
    ExpectLoadedBackGivesTheSameLogits(*model, dir, ids);
    auto saved = LoadSafetensorsDir(dir);
    ASSERT_TRUE(saved.ok()) << saved.status();
    for (const auto& [name, t] : *saved) EXPECT_FALSE(absl::StartsWith(name, "model.")) << name;
    ASSERT_EQ(saved->count("gpt_neox.layers.1.attention.query_key_value.weight"), 1u);
    EXPECT_EQ(saved->at("gpt_neox.layers.1.attention.query_key_value.weight").sizes(), at::IntArrayRef({96, 32}));
    EXPECT_EQ(saved->count("embed_out.weight"), 1u);
    EXPECT_EQ(saved->count("gpt_neox.final_layer_norm.bias"), 1u);
    auto reread = ModelConfig::FromJsonFile(dir + "/config.json");
    ASSERT_TRUE(reread.ok()) << reread.status();
    EXPECT_EQ(reread->parallel_residual, parallel);
    EXPECT_EQ(reread->rotary_dim(), 4);
    EXPECT_EQ(reread->rope_theta, 500.0);

    std::map<std::string, at::Tensor> old = *saved;  // what transformers < 4.3x saved beside the weights
    old["gpt_neox.layers.0.attention.bias"] = at::ones({1, 1, 64, 64}, at::kBool).tril();
    old["gpt_neox.layers.0.attention.masked_bias"] = at::full({}, -1e9);
    old["gpt_neox.layers.0.attention.rotary_emb.inv_freq"] = at::ones({2});
    auto loaded = CausalLM::FromTensors(*config, old, at::kFloat);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    c10::NoGradGuard no_grad;
    EXPECT_TRUE(at::equal((*loaded)->Forward(ids, Positions(2, 9), at::Tensor(), nullptr),
                          model->Forward(ids, Positions(2, 9), at::Tensor(), nullptr)));
    old["gpt_neox.layers.1.attention.query_key_value.weight"] = old["gpt_neox.layers.1.attention.query_key_value.weight"].narrow(0, 0, 64);
    EXPECT_THAT(std::string(CausalLM::FromTensors(*config, old, at::kFloat).status().message()),
                HasSubstr("tensor 'gpt_neox.layers.1.attention.query_key_value.weight' has shape [64, 32]"));
    old.erase("gpt_neox.layers.1.attention.query_key_value.weight");
    EXPECT_THAT(std::string(CausalLM::FromTensors(*config, old, at::kFloat).status().message()),
                HasSubstr("lacks tensor 'gpt_neox.layers.1.attention.query_key_value.weight' of shape [96, 32]"));
    std::map<std::string, at::Tensor> no_bias = *saved;
    no_bias.erase("gpt_neox.layers.1.mlp.dense_4h_to_h.bias");
    EXPECT_THAT(std::string(CausalLM::FromTensors(*config, no_bias, at::kFloat).status().message()),
                HasSubstr("lacks tensor 'gpt_neox.layers.1.mlp.dense_4h_to_h.bias' of shape [32]"));
  }
}

// A Pythia config.json as transformers 4.24 wrote it (EleutherAI/pythia-70m's
// fields) reads as GPTNeoXConfig defines it; newer names (partial_rotary_factor,
// rope_theta) win where both are present; writing and reading back keeps the maths.
TEST(CausalLMTest, GptNeoxConfigReadsPythiaFields) {
  const nlohmann::json pythia = {{"architectures", {"GPTNeoXForCausalLM"}}, {"bos_token_id", 0}, {"eos_token_id", 0},
                                 {"hidden_act", "gelu"}, {"hidden_size", 512}, {"initializer_range", 0.02},
                                 {"intermediate_size", 2048}, {"layer_norm_eps", 1e-05}, {"max_position_embeddings", 2048},
                                 {"model_type", "gpt_neox"}, {"num_attention_heads", 8}, {"num_hidden_layers", 6},
                                 {"rotary_emb_base", 10000}, {"rotary_pct", 0.25}, {"tie_word_embeddings", false},
                                 {"torch_dtype", "float16"}, {"use_cache", true}, {"use_parallel_residual", true},
                                 {"vocab_size", 50304}};
  auto c = ModelConfig::FromJson(pythia);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->num_key_value_heads, 8);
  EXPECT_EQ(c->rotary_dim(), 16);
  EXPECT_EQ(c->rms_norm_eps, 1e-5);
  EXPECT_TRUE(c->layer_norm && c->parallel_residual && c->mlp_bias && c->output_bias && c->attention_bias);
  EXPECT_FALSE(c->gated_mlp);
  EXPECT_EQ(c->activation(), Activation::kGelu);
  nlohmann::json newer = pythia;
  newer.update({{"partial_rotary_factor", 0.5}, {"rope_theta", 20000.0}, {"attention_bias", false}});
  auto n = ModelConfig::FromJson(newer);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(n->rotary_dim(), 32);
  EXPECT_EQ(n->rope_theta, 20000.0);
  EXPECT_FALSE(n->attention_bias || n->output_bias);
  auto back = ModelConfig::FromJson(nlohmann::json::parse(n->ToJson().dump()));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->rotary_dim(), 32);
  EXPECT_EQ(back->rope_theta, 20000.0);
  EXPECT_FALSE(back->attention_bias);
  EXPECT_EQ(back->ToJson().dump(), n->ToJson().dump());
  nlohmann::json dropout = pythia;  // GPTNeoXLayer's post-attention and post-MLP dropout
  dropout.update({{"hidden_dropout", 0.1}, {"attention_dropout", 0.2}});
  auto d = ModelConfig::FromJson(dropout);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->residual_dropout, 0.1);
  EXPECT_EQ(d->attention_dropout, 0.2);
  EXPECT_EQ(d->ToJson()["hidden_dropout"], 0.1);
  EXPECT_EQ(d->ToJson()["attention_dropout"], 0.2);
}

// Cohere (Command R) against tests/framework/model/cohere_reference.py, which does
// CohereDecoderLayer's maths in fp64 from the checkpoint we write: bias-free
// LayerNorms with random weights, one norm per layer read by both parallel branches,
// RoPE on adjacent pairs, logits times logit_scale; then with use_qk_norm (per-head
// LayerNorm weights [heads, head_dim], random), attention_bias on q/k/v/o (random),
// an untied head and another logit_scale. Every path, the chunked log-probs, saved
// and loaded back bit-identical under Cohere's names and config fields; the same
// weights rotated by halves (Llama's RoPE) give other logits.
TEST(CausalLMTest, CohereMatchesThePythonTranscriptionOnEveryPath) {
  for (const bool variant : {false, true}) {
    SCOPED_TRACE(variant ? "use_qk_norm, attention_bias, untied, logit_scale 0.3" : "CohereConfig's defaults");
    nlohmann::json json = {{"model_type", "cohere"}, {"architectures", {"CohereForCausalLM"}}, {"vocab_size", 97},
                           {"hidden_size", 32}, {"intermediate_size", 48}, {"num_hidden_layers", 2},
                           {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"layer_norm_eps", 1e-5},
                           {"rope_theta", 500.0}, {"max_position_embeddings", 64}};
    if (variant) json.update({{"use_qk_norm", true}, {"attention_bias", true}, {"tie_word_embeddings", false}, {"logit_scale", 0.3}});
    auto config = ModelConfig::FromJson(json);
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_EQ(config->architecture, "CohereForCausalLM");
    EXPECT_EQ(config->tie_word_embeddings, !variant);
    EXPECT_EQ(config->logit_scale, variant ? 0.3 : 0.0625);
    const std::unique_ptr<CausalLM> model = RandomWithStd02(*config, variant ? 101 : 102);
    RandomizeBiasesAndNorms(*model, variant ? 103 : 104);
    const std::int64_t B = 2, T = 9;
    const at::Tensor ids = at::randint(config->vocab_size, {B, T}, at::kLong);
    const at::Tensor expected = PythonReferenceLogits(*model, ids, variant ? "py_cohere_qk" : "py_cohere", nullptr,
                                                      "cohere_reference.py");
    ASSERT_TRUE(expected.defined());
    ExpectEveryPathGives(*model, ids, expected, /*prefill=*/4, /*decode_step=*/false);
    {
      c10::NoGradGuard no_grad;
      const at::Tensor hidden = model->Hidden(ids, Positions(B, T), at::Tensor(), nullptr).reshape({B * T, -1});
      const at::Tensor targets = at::randint(config->vocab_size, {B * T}, at::kLong);
      const at::Tensor kernel = TokenLogprobs(model->HeadInput(hidden), model->lm_head_weight(), targets, 1.0).logprobs;
      const at::Tensor reference = at::log_softmax(expected.reshape({B * T, -1}), -1).gather(1, targets.unsqueeze(1)).squeeze(1);
      EXPECT_LT((kernel - reference).abs().max().item<double>(), 1e-4);
    }
    const std::string dir = testing::TempDir(variant ? "cohere_save_qk" : "cohere_save");
    ASSERT_TRUE(SaveCausalLM(*model, dir).ok());
    ExpectLoadedBackGivesTheSameLogits(*model, dir, ids);
    auto saved = LoadSafetensorsDir(dir);
    ASSERT_TRUE(saved.ok()) << saved.status();
    for (const auto& [name, t] : *saved) {
      EXPECT_FALSE(absl::StrContains(name, "post_attention_layernorm") || absl::StrContains(name, "norm.bias")) << name;
    }
    EXPECT_EQ(saved->count("lm_head.weight"), variant ? 1u : 0u);
    EXPECT_EQ(saved->count("model.layers.1.self_attn.o_proj.bias"), variant ? 1u : 0u);
    if (variant) {
      EXPECT_EQ(saved->at("model.layers.1.self_attn.q_norm.weight").sizes(), at::IntArrayRef({4, 8}));
      EXPECT_EQ(saved->at("model.layers.1.self_attn.k_norm.weight").sizes(), at::IntArrayRef({2, 8}));
    }
    const nlohmann::json written = nlohmann::json::parse(testing::ReadFile(dir + "/config.json"));
    EXPECT_EQ(written["logit_scale"], variant ? 0.3 : 0.0625);
    EXPECT_EQ(written["use_qk_norm"], variant);
    EXPECT_EQ(written["layer_norm_eps"], 1e-5);
    EXPECT_FALSE(written.contains("rms_norm_eps"));
    ModelConfig halves = *config;
    halves.rope_interleaved = false;
    const std::map<std::string, at::Tensor> tensors(model->named_parameters().begin(), model->named_parameters().end());
    auto other = CausalLM::FromTensors(halves, tensors, at::kFloat);
    ASSERT_TRUE(other.ok()) << other.status();
    c10::NoGradGuard no_grad;
    EXPECT_GT(((*other)->Forward(ids, Positions(B, T), at::Tensor(), nullptr) - expected).abs().max().item<double>(), 1e-3);
  }
}

// CohereForAI/c4ai-command-r-v01's config.json fields read as CohereConfig defines
// them (a tied head, LayerNorm eps from layer_norm_eps, no head_dim: hidden / heads);
// written back under its names; logit_scale null and other families' use of
// Cohere's fields are refused by name.
TEST(CausalLMTest, CohereConfigReadsCommandRFields) {
  const nlohmann::json command_r = {{"architectures", {"CohereForCausalLM"}}, {"attention_bias", false}, {"bos_token_id", 5},
                                    {"eos_token_id", 255001}, {"hidden_act", "silu"}, {"hidden_size", 8192},
                                    {"initializer_range", 0.02}, {"intermediate_size", 22528}, {"layer_norm_eps", 1e-05},
                                    {"logit_scale", 0.0625}, {"max_position_embeddings", 8192}, {"model_type", "cohere"},
                                    {"num_attention_heads", 64}, {"num_hidden_layers", 40}, {"num_key_value_heads", 64},
                                    {"pad_token_id", 0}, {"rope_theta", 8000000.0}, {"torch_dtype", "float16"},
                                    {"use_cache", true}, {"use_qk_norm", false}, {"vocab_size", 256000}};
  auto c = ModelConfig::FromJson(command_r);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_EQ(c->rms_norm_eps, 1e-5);
  EXPECT_EQ(c->rope_theta, 8000000.0);
  EXPECT_TRUE(c->tie_word_embeddings && c->layer_norm && c->parallel_residual && c->one_norm_per_layer && c->rope_interleaved);
  EXPECT_FALSE(c->layer_norm_bias || c->qk_norm || c->attention_bias || c->output_bias);
  EXPECT_EQ(c->activation(), Activation::kSilu);
  auto back = ModelConfig::FromJson(nlohmann::json::parse(c->ToJson().dump()));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->ToJson().dump(), c->ToJson().dump());
  EXPECT_EQ(back->logit_scale, 0.0625);
  nlohmann::json null_scale = command_r;
  null_scale["logit_scale"] = nullptr;
  EXPECT_THAT(std::string(ModelConfig::FromJson(null_scale).status().message()), HasSubstr("\"logit_scale\" must be a number"));
  nlohmann::json partial = command_r;
  partial["partial_rotary_factor"] = 0.5;
  EXPECT_THAT(std::string(ModelConfig::FromJson(partial).status().message()), HasSubstr("partial_rotary_factor = 0.5"));
  nlohmann::json llama = command_r;
  llama["model_type"] = "llama";
  llama["use_qk_norm"] = true;
  const std::string message(ModelConfig::FromJson(llama).status().message());
  EXPECT_THAT(message, HasSubstr("logit_scale = 0.0625"));
  EXPECT_THAT(message, HasSubstr("use_qk_norm = true"));
}

// Cohere 2 (Command R7B, Aya Expanse) against cohere_reference.py, given the config.json
// as written here (so that the layer types come from Cohere2Config's rule, not from
// what posttrain wrote): Cohere's layer without q/k norms; windowed layers that rotate
// q and k, full-attention layers without positions (NoPE). First by
// sliding_window_pattern 2 over 4 layers (windowed, NoPE, windowed, NoPE; window 3),
// then by layer_types (NoPE, windowed, windowed; window 4) with biases, an untied head
// and logit_scale 0.3; then sliding_window null: no layer rotates or windows. Every
// path, saved and loaded back bit-identical under Cohere2's names and fields.
TEST(CausalLMTest, Cohere2MatchesThePythonTranscriptionOnEveryPath) {
  for (const int variant : {0, 1, 2}) {
    SCOPED_TRACE(variant);
    nlohmann::json json = {{"model_type", "cohere2"}, {"architectures", {"Cohere2ForCausalLM"}}, {"vocab_size", 97},
                           {"hidden_size", 32}, {"intermediate_size", 48}, {"num_hidden_layers", 4},
                           {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"layer_norm_eps", 1e-5},
                           {"rope_theta", 500.0}, {"max_position_embeddings", 64}, {"sliding_window", 3},
                           {"sliding_window_pattern", 2}};
    if (variant == 1) {
      json.erase("sliding_window_pattern");
      json.update({{"num_hidden_layers", 3}, {"sliding_window", 4},
                   {"layer_types", {"full_attention", "sliding_attention", "sliding_attention"}},
                   {"attention_bias", true}, {"tie_word_embeddings", false}, {"logit_scale", 0.3}});
    }
    if (variant == 2) json["sliding_window"] = nullptr;
    auto config = ModelConfig::FromJson(json);
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_EQ(config->architecture, "Cohere2ForCausalLM");
    EXPECT_FALSE(config->qk_norm);
    const std::vector<bool> windowed = variant == 0 ? std::vector<bool>{true, false, true, false}
                                       : variant == 1 ? std::vector<bool>{false, true, true}
                                                      : std::vector<bool>{false, false, false, false};
    for (std::size_t i = 0; i < windowed.size(); ++i) {
      EXPECT_EQ(config->window_of(static_cast<std::int64_t>(i)) > 0, windowed[i]) << i;
      EXPECT_EQ(config->uses_rope(static_cast<std::int64_t>(i)), windowed[i]) << i;
    }
    const std::unique_ptr<CausalLM> model = RandomWithStd02(*config, 111 + variant);
    RandomizeBiasesAndNorms(*model, 121 + variant);
    const std::int64_t B = 2, T = 9;
    const at::Tensor ids = at::randint(config->vocab_size, {B, T}, at::kLong);
    const at::Tensor expected = PythonReferenceLogits(*model, ids, absl::StrCat("py_cohere2_", variant), &json,
                                                      "cohere_reference.py");
    ASSERT_TRUE(expected.defined());
    ExpectEveryPathGives(*model, ids, expected, /*prefill=*/4, /*decode_step=*/false);
    const std::string dir = testing::TempDir(absl::StrCat("cohere2_save_", variant));
    ASSERT_TRUE(SaveCausalLM(*model, dir).ok());
    ExpectLoadedBackGivesTheSameLogits(*model, dir, ids);
    const nlohmann::json written = nlohmann::json::parse(testing::ReadFile(dir + "/config.json"));
    EXPECT_EQ(written["model_type"], "cohere2");
    EXPECT_FALSE(written.contains("use_qk_norm") || written.contains("use_sliding_window"));
    EXPECT_EQ(written["logit_scale"], variant == 1 ? 0.3 : 0.0625);
    EXPECT_EQ(written["layer_types"].size(), windowed.size());
    if (variant == 2) EXPECT_TRUE(written["sliding_window"].is_null());
    auto saved = LoadSafetensorsDir(dir);
    ASSERT_TRUE(saved.ok()) << saved.status();
    EXPECT_EQ(saved->count("lm_head.weight"), variant == 1 ? 1u : 0u);
    EXPECT_EQ(saved->count("model.layers.1.self_attn.o_proj.bias"), variant == 1 ? 1u : 0u);
  }
}

// CohereForAI/c4ai-command-r7b-12-2024's config.json read as Cohere2Config defines it:
// every 4th layer full attention without RoPE, the others windowed (4096); its fields
// of Cohere's own training code (position_embedding_type, rotary_pct 1, ...) change
// nothing; written back with layer_types and the period older transformers read.
// use_qk_norm, which Cohere2Attention lacks, is refused.
TEST(CausalLMTest, Cohere2ConfigReadsCommandR7BFields) {
  const nlohmann::json r7b = {{"architectures", {"Cohere2ForCausalLM"}}, {"attention_bias", false}, {"attention_dropout", 0.0},
                              {"bos_token_id", 5}, {"eos_token_id", 255001}, {"head_dim", 128}, {"hidden_act", "silu"},
                              {"hidden_size", 4096}, {"initializer_range", 0.02}, {"intermediate_size", 14336},
                              {"layer_norm_eps", 1e-05}, {"logit_scale", 0.25}, {"max_position_embeddings", 132096},
                              {"model_type", "cohere2"}, {"num_attention_heads", 32}, {"num_hidden_layers", 32},
                              {"num_key_value_heads", 8}, {"order_of_interleaved_layers", "local_attn_first"},
                              {"pad_token_id", 0}, {"position_embedding_type", "rope_gptj"}, {"rope_scaling", nullptr},
                              {"rope_theta", 50000}, {"rotary_pct", 1.0}, {"sliding_window", 4096},
                              {"sliding_window_pattern", 4}, {"torch_dtype", "bfloat16"}, {"use_cache", true},
                              {"use_embedding_sharing", true}, {"use_gated_activation", true}, {"vocab_size", 256000}};
  auto c = ModelConfig::FromJson(r7b);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_EQ(c->logit_scale, 0.25);
  EXPECT_TRUE(c->tie_word_embeddings && c->layer_norm && c->one_norm_per_layer && c->rope_interleaved);
  for (std::int64_t i = 0; i < 32; ++i) {
    const bool full = (i + 1) % 4 == 0;
    EXPECT_EQ(c->window_of(i), full ? 0 : 4096) << i;
    EXPECT_EQ(c->uses_rope(i), !full) << i;
  }
  const nlohmann::ordered_json written = c->ToJson();
  EXPECT_EQ(written["sliding_window_pattern"], 4);
  EXPECT_EQ(written["layer_types"][3], "full_attention");
  EXPECT_EQ(written["layer_types"][4], "sliding_attention");
  auto back = ModelConfig::FromJson(nlohmann::json::parse(written.dump()));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->ToJson().dump(), written.dump());
  nlohmann::json qk = r7b;
  qk["use_qk_norm"] = true;
  EXPECT_THAT(std::string(ModelConfig::FromJson(qk).status().message()), HasSubstr("Cohere2Attention has no q/k norm"));
}

// BLOOM against tests/framework/model/bloom_reference.py, which reads the checkpoint
// we write under BLOOM's names (transformer.*, one self_attention.query_key_value
// interleaved by head) and does BloomBlock's maths in fp64: ALiBi with 6 heads (4
// slopes of one base, 2 of the next), the embedding LayerNorm, LayerNorms and biases
// everywhere random, BloomGelu. Every path; a left-padded batch, whose ALiBi counts
// only unpadded keys; saved and loaded back bit-identical; a checkpoint without the
// transformer. prefix (the hub's bloom-560m) loads.
TEST(CausalLMTest, BloomMatchesThePythonTranscriptionOnEveryPath) {
  const nlohmann::json json = {{"model_type", "bloom"}, {"architectures", {"BloomForCausalLM"}}, {"vocab_size", 97},
                               {"hidden_size", 48}, {"n_layer", 2}, {"n_head", 6}, {"layer_norm_epsilon", 1e-5},
                               {"hidden_dropout", 0.0}, {"attention_dropout", 0.0}};
  auto config = ModelConfig::FromJson(json);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->architecture, "BloomForCausalLM");
  EXPECT_EQ(config->intermediate_size, 192);
  EXPECT_EQ(config->head_dim, 8);
  const std::unique_ptr<CausalLM> model = RandomWithStd02(*config, 111);
  RandomizeBiasesAndNorms(*model, 112);
  const std::int64_t B = 2, T = 9;
  const at::Tensor ids = at::randint(config->vocab_size, {B, T}, at::kLong);
  const at::Tensor expected = PythonReferenceLogits(*model, ids, "py_bloom", nullptr, "bloom_reference.py");
  ASSERT_TRUE(expected.defined());
  ExpectEveryPathGives(*model, ids, expected, /*prefill=*/4, /*decode_step=*/false);

  // Left padding: row 1's first 3 slots are padding; its keys count from its first token.
  const std::string padded_dir = testing::TempDir("py_bloom_padded");
  ASSERT_TRUE(SaveCausalLM(*model, padded_dir).ok());
  at::Tensor mask = at::ones({B, T}, at::kLong);
  mask[1].narrow(0, 0, 3).zero_();
  ASSERT_TRUE(SaveSafetensors(padded_dir + "/ids.safetensors", {{"ids", ids}}).ok());
  ASSERT_TRUE(SaveSafetensors(padded_dir + "/mask.safetensors", {{"mask", mask}}).ok());
  std::string out;
  ASSERT_EQ(testing::RunCommand(testing::Python() + " " + testing::SourceDir() + "/tests/framework/model/bloom_reference.py " +
                                    padded_dir, &out), 0) << out;
  auto file = SafetensorsFile::Open(padded_dir + "/reference_logits.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  const at::Tensor padded_expected = *file->Get("logits");
  const at::Tensor positions = (mask.cumsum(-1) - 1).clamp_min(0);
  {
    c10::NoGradGuard no_grad;
    const at::Tensor logits = model->Forward(ids, positions, mask, nullptr);
    EXPECT_LT((logits[0] - padded_expected[0]).abs().max().item<double>(), 1e-4);
    EXPECT_LT((logits[1].narrow(0, 3, T - 3) - padded_expected[1].narrow(0, 3, T - 3)).abs().max().item<double>(), 1e-4);
    // Row 1's tokens alone, unpadded, give the same logits.
    const at::Tensor alone = model->Forward(ids[1].narrow(0, 3, T - 3).unsqueeze(0), Positions(1, T - 3), at::Tensor(), nullptr);
    EXPECT_LT((alone[0] - padded_expected[1].narrow(0, 3, T - 3)).abs().max().item<double>(), 1e-4);
  }

  const std::string dir = testing::TempDir("bloom_save");
  ASSERT_TRUE(SaveCausalLM(*model, dir).ok());
  ExpectLoadedBackGivesTheSameLogits(*model, dir, ids);
  auto saved = LoadSafetensorsDir(dir);
  ASSERT_TRUE(saved.ok()) << saved.status();
  for (const auto& [name, t] : *saved) EXPECT_TRUE(absl::StartsWith(name, "transformer.")) << name;
  ASSERT_EQ(saved->count("transformer.h.1.self_attention.query_key_value.weight"), 1u);
  EXPECT_EQ(saved->at("transformer.h.1.self_attention.query_key_value.weight").sizes(), at::IntArrayRef({144, 48}));
  EXPECT_EQ(saved->count("transformer.word_embeddings_layernorm.bias"), 1u);
  const nlohmann::json written = nlohmann::json::parse(testing::ReadFile(dir + "/config.json"));
  EXPECT_EQ(written["n_layer"], 2);
  EXPECT_EQ(written["n_head"], 6);
  std::map<std::string, at::Tensor> bare;  // BloomModel's own files
  for (const auto& [name, t] : *saved) bare[name.substr(std::strlen("transformer."))] = t;
  auto loaded = CausalLM::FromTensors(*config, bare, at::kFloat);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  c10::NoGradGuard no_grad;
  EXPECT_TRUE(at::equal((*loaded)->Forward(ids, Positions(B, T), at::Tensor(), nullptr),
                        model->Forward(ids, Positions(B, T), at::Tensor(), nullptr)));
  bare.erase("h.1.self_attention.dense.bias");
  EXPECT_THAT(std::string(CausalLM::FromTensors(*config, bare, at::kFloat).status().message()),
              HasSubstr("lacks tensor 'transformer.h.1.self_attention.dense.bias' of shape [48]"));
}

// bigscience/bloom-560m's config.json fields read as BloomConfig defines them (the
// MLP 4 hidden_size wide whatever n_inner says; one key/value head per head); written
// back under its names; the post-norm residual variant is refused by name.
TEST(CausalLMTest, BloomConfigReadsBloom560mFields) {
  const nlohmann::json bloom = {{"apply_residual_connection_post_layernorm", false}, {"architectures", {"BloomForCausalLM"}},
                                {"attention_dropout", 0.0}, {"attention_softmax_in_fp32", true}, {"bias_dropout_fusion", true},
                                {"bos_token_id", 1}, {"eos_token_id", 2}, {"hidden_dropout", 0.0}, {"hidden_size", 1024},
                                {"initializer_range", 0.02}, {"layer_norm_epsilon", 1e-05}, {"masked_softmax_fusion", true},
                                {"model_type", "bloom"}, {"n_head", 16}, {"n_inner", nullptr}, {"n_layer", 24},
                                {"offset_alibi", 100}, {"pad_token_id", 3}, {"pretraining_tp", 1}, {"skip_bias_add", true},
                                {"skip_bias_add_qkv", false}, {"slow_but_exact", false}, {"unk_token_id", 0},
                                {"use_cache", true}, {"vocab_size", 250880}};
  auto c = ModelConfig::FromJson(bloom);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_hidden_layers, 24);
  EXPECT_EQ(c->num_attention_heads, 16);
  EXPECT_EQ(c->num_key_value_heads, 16);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->intermediate_size, 4096);
  EXPECT_EQ(c->rms_norm_eps, 1e-5);
  EXPECT_TRUE(c->alibi && c->embedding_layer_norm && c->layer_norm && c->tie_word_embeddings && c->mlp_bias &&
              c->attention_bias && c->output_bias);
  EXPECT_FALSE(c->gated_mlp || c->has_rope());
  EXPECT_EQ(c->activation(), Activation::kGeluTanh);
  EXPECT_EQ(*c->pad_token_id, 3);
  auto back = ModelConfig::FromJson(nlohmann::json::parse(c->ToJson().dump()));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->ToJson().dump(), c->ToJson().dump());
  nlohmann::json old = bloom;  // the earliest BLOOM configs: n_embed
  old.erase("hidden_size");
  old["n_embed"] = 1024;
  auto o = ModelConfig::FromJson(old);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->hidden_size, 1024);
  nlohmann::json post = bloom;
  post["apply_residual_connection_post_layernorm"] = true;
  EXPECT_THAT(std::string(ModelConfig::FromJson(post).status().message()),
              HasSubstr("apply_residual_connection_post_layernorm = true"));
  nlohmann::json dropout = bloom;
  dropout["hidden_dropout"] = 0.1;
  auto d = ModelConfig::FromJson(dropout);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->residual_dropout, 0.1);
  nlohmann::json no_heads = bloom;
  no_heads.erase("n_head");
  EXPECT_THAT(std::string(ModelConfig::FromJson(no_heads).status().message()), HasSubstr("n_head"));
}

// Phi (Phi-2) against tests/framework/model/phi_reference.py, which does
// PhiDecoderLayer's maths in fp64 from the checkpoint we write under Phi's names
// (self_attn.dense, mlp.fc1/fc2, final_layernorm): one LayerNorm per layer with random
// weights and biases read by both parallel branches, random biases on every
// projection and on the LM head, partial rotary (0.5 of each head), grouped queries.
// Every path; the chunked log-probs (the head's bias meeting HeadInput's column of
// ones); saved and loaded back bit-identical; the bias saved as lm_head.bias and
// required on load.
TEST(CausalLMTest, PhiMatchesThePythonTranscriptionOnEveryPath) {
  const nlohmann::json json = {{"model_type", "phi"}, {"architectures", {"PhiForCausalLM"}}, {"vocab_size", 97},
                               {"hidden_size", 32}, {"intermediate_size", 56}, {"num_hidden_layers", 2},
                               {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"partial_rotary_factor", 0.5},
                               {"layer_norm_eps", 1e-5}, {"rope_theta", 500.0}, {"hidden_act", "gelu_new"},
                               {"max_position_embeddings", 64}, {"resid_pdrop", 0.1}, {"embd_pdrop", 0.0},
                               {"tie_word_embeddings", false}};
  auto config = ModelConfig::FromJson(json);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->architecture, "PhiForCausalLM");
  EXPECT_EQ(config->rotary_dim(), 4);
  EXPECT_EQ(config->residual_dropout, 0.1);
  const std::unique_ptr<CausalLM> model = RandomWithStd02(*config, 121);
  RandomizeBiasesAndNorms(*model, 122, 0.5);
  const std::int64_t B = 2, T = 9;
  const at::Tensor ids = at::randint(config->vocab_size, {B, T}, at::kLong);
  const at::Tensor expected = PythonReferenceLogits(*model, ids, "py_phi", nullptr, "phi_reference.py");
  ASSERT_TRUE(expected.defined());
  ExpectEveryPathGives(*model, ids, expected, /*prefill=*/4, /*decode_step=*/false);
  {
    c10::NoGradGuard no_grad;
    const at::Tensor hidden = model->Hidden(ids, Positions(B, T), at::Tensor(), nullptr).reshape({B * T, -1});
    const at::Tensor targets = at::randint(config->vocab_size, {B * T}, at::kLong);
    const at::Tensor kernel = TokenLogprobs(model->HeadInput(hidden), model->lm_head_weight(), targets, 1.0).logprobs;
    const at::Tensor reference = at::log_softmax(expected.reshape({B * T, -1}), -1).gather(1, targets.unsqueeze(1)).squeeze(1);
    EXPECT_LT((kernel - reference).abs().max().item<double>(), 1e-4);
  }
  const std::string dir = testing::TempDir("phi_save");
  ASSERT_TRUE(SaveCausalLM(*model, dir).ok());
  ExpectLoadedBackGivesTheSameLogits(*model, dir, ids);
  auto saved = LoadSafetensorsDir(dir);
  ASSERT_TRUE(saved.ok()) << saved.status();
  for (const char* name : {"lm_head.bias", "model.final_layernorm.bias", "model.layers.1.self_attn.dense.bias",
                           "model.layers.1.mlp.fc1.weight", "model.layers.0.input_layernorm.bias"}) {
    EXPECT_EQ(saved->count(name), 1u) << name;
  }
  for (const auto& [name, t] : *saved) {
    EXPECT_FALSE(absl::StrContains(name, "post_attention_layernorm") || absl::StrContains(name, "o_proj")) << name;
  }
  const nlohmann::json written = nlohmann::json::parse(testing::ReadFile(dir + "/config.json"));
  EXPECT_EQ(written["partial_rotary_factor"], 0.5);
  EXPECT_EQ(written["resid_pdrop"], 0.1);
  std::map<std::string, at::Tensor> no_bias = *saved;
  no_bias.erase("lm_head.bias");
  EXPECT_THAT(std::string(CausalLM::FromTensors(*config, no_bias, at::kFloat).status().message()),
              HasSubstr("lacks tensor 'lm_head.bias' of shape [97]"));
}

// Phi with qk_layernorm against phi_reference.py: PhiAttention's q_layernorm and
// k_layernorm, one nn.LayerNorm(head_dim) each with a random weight and bias shared by
// every head, on q and k before the partial RoPE. Every path; saved under Phi's
// names (self_attn.q_layernorm.weight / .bias [head_dim]) and loaded back
// bit-identical; the config written back keeps qk_layernorm.
TEST(CausalLMTest, PhiQkLayerNormMatchesThePythonTranscription) {
  const nlohmann::json json = {{"model_type", "phi"}, {"vocab_size", 97}, {"hidden_size", 32}, {"intermediate_size", 56},
                               {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
                               {"partial_rotary_factor", 0.5}, {"qk_layernorm", true}, {"max_position_embeddings", 64},
                               {"tie_word_embeddings", false}};
  auto config = ModelConfig::FromJson(json);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->qk_layer_norm && config->qk_layer_norm_shared);
  const std::unique_ptr<CausalLM> model = RandomWithStd02(*config, 131);
  RandomizeBiasesAndNorms(*model, 132, 0.5);
  const std::int64_t B = 2, T = 9;
  const at::Tensor ids = at::randint(config->vocab_size, {B, T}, at::kLong);
  const at::Tensor expected = PythonReferenceLogits(*model, ids, "py_phi_qk", nullptr, "phi_reference.py");
  ASSERT_TRUE(expected.defined());
  ExpectEveryPathGives(*model, ids, expected, /*prefill=*/4, /*decode_step=*/false);
  const std::string dir = testing::TempDir("phi_qk_save");
  ASSERT_TRUE(SaveCausalLM(*model, dir).ok());
  ExpectLoadedBackGivesTheSameLogits(*model, dir, ids);
  auto saved = LoadSafetensorsDir(dir);
  ASSERT_TRUE(saved.ok()) << saved.status();
  for (const char* name : {"model.layers.0.self_attn.q_layernorm.weight", "model.layers.1.self_attn.k_layernorm.bias"}) {
    ASSERT_EQ(saved->count(name), 1u) << name;
    EXPECT_EQ(saved->at(name).sizes(), at::IntArrayRef({8})) << name;
  }
  EXPECT_EQ(nlohmann::json::parse(testing::ReadFile(dir + "/config.json"))["qk_layernorm"], true);
}

// microsoft/phi-2's config.json fields read as PhiConfig defines them; written back
// under its names.
TEST(CausalLMTest, PhiConfigReadsPhi2Fields) {
  const nlohmann::json phi2 = {{"architectures", {"PhiForCausalLM"}}, {"attention_dropout", 0.0}, {"bos_token_id", 50256},
                               {"embd_pdrop", 0.0}, {"eos_token_id", 50256}, {"hidden_act", "gelu_new"}, {"hidden_size", 2560},
                               {"initializer_range", 0.02}, {"intermediate_size", 10240}, {"layer_norm_eps", 1e-05},
                               {"max_position_embeddings", 2048}, {"model_type", "phi"}, {"num_attention_heads", 32},
                               {"num_hidden_layers", 32}, {"num_key_value_heads", 32}, {"partial_rotary_factor", 0.4},
                               {"qk_layernorm", false}, {"resid_pdrop", 0.1}, {"rope_scaling", nullptr},
                               {"rope_theta", 10000.0}, {"tie_word_embeddings", false}, {"torch_dtype", "float16"},
                               {"use_cache", true}, {"vocab_size", 51200}};
  auto c = ModelConfig::FromJson(phi2);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 80);
  EXPECT_EQ(c->rotary_dim(), 32);
  EXPECT_EQ(c->residual_dropout, 0.1);
  EXPECT_TRUE(c->layer_norm && c->layer_norm_bias && c->parallel_residual && c->one_norm_per_layer && c->mlp_bias &&
              c->attention_bias && c->output_bias && c->lm_head_bias);
  EXPECT_FALSE(c->gated_mlp || c->tie_word_embeddings);
  EXPECT_EQ(c->activation(), Activation::kGeluTanh);
  auto back = ModelConfig::FromJson(nlohmann::json::parse(c->ToJson().dump()));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->ToJson().dump(), c->ToJson().dump());
  EXPECT_FALSE(c->qk_layer_norm);
}

// GPT-J against tests/framework/model/gptj_reference.py (GPTJForCausalLM's maths in
// fp64 from the checkpoint we write under GPT-J's names): ln_1 with random weights and
// biases read by both parallel branches, q/k/v/out_proj without biases, RoPE on
// adjacent pairs of each head's first rotary_dim dimensions (and, second, of all of
// them: rotary_dim null), fc_in/fc_out and the LM head with random biases. Every
// path; saved and loaded back bit-identical; the old checkpoints' attn.bias /
// attn.masked_bias buffers are dropped on load.
TEST(CausalLMTest, GptjMatchesThePythonTranscriptionOnEveryPath) {
  for (const bool partial : {true, false}) {
    SCOPED_TRACE(partial ? "rotary_dim 4 of 8" : "rotary_dim null");
    nlohmann::json json = {{"model_type", "gptj"}, {"architectures", {"GPTJForCausalLM"}}, {"vocab_size", 97},
                           {"n_embd", 32}, {"n_inner", 56}, {"n_layer", 2}, {"n_head", 4}, {"n_positions", 64},
                           {"layer_norm_epsilon", 1e-5}, {"activation_function", "gelu_new"}, {"resid_pdrop", 0.0},
                           {"embd_pdrop", 0.0}, {"attn_pdrop", 0.0}, {"tie_word_embeddings", false}};
    json["rotary_dim"] = partial ? nlohmann::json(4) : nlohmann::json(nullptr);
    auto config = ModelConfig::FromJson(json);
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_EQ(config->rotary_dim(), partial ? 4 : 8);
    const std::unique_ptr<CausalLM> model = RandomWithStd02(*config, 141);
    RandomizeBiasesAndNorms(*model, 142, 0.5);
    const std::int64_t B = 2, T = 9;
    const at::Tensor ids = at::randint(config->vocab_size, {B, T}, at::kLong);
    const at::Tensor expected = PythonReferenceLogits(*model, ids, "py_gptj", nullptr, "gptj_reference.py");
    ASSERT_TRUE(expected.defined());
    ExpectEveryPathGives(*model, ids, expected, /*prefill=*/4, /*decode_step=*/false);
    const std::string dir = testing::TempDir("gptj_save");
    ASSERT_TRUE(SaveCausalLM(*model, dir).ok());
    ExpectLoadedBackGivesTheSameLogits(*model, dir, ids);
    auto saved = LoadSafetensorsDir(dir);
    ASSERT_TRUE(saved.ok()) << saved.status();
    for (const char* name : {"transformer.wte.weight", "transformer.h.1.ln_1.bias", "transformer.h.0.attn.q_proj.weight",
                             "transformer.h.1.attn.out_proj.weight", "transformer.h.0.mlp.fc_in.bias",
                             "transformer.h.1.mlp.fc_out.weight", "transformer.ln_f.weight", "lm_head.bias"}) {
      EXPECT_EQ(saved->count(name), 1u) << name;
    }
    EXPECT_EQ(saved->count("transformer.h.0.attn.q_proj.bias"), 0u);
    std::map<std::string, at::Tensor> with_buffers = *saved;
    with_buffers["transformer.h.0.attn.bias"] = at::ones({1, 1, 64, 64}, at::kBool).tril();
    with_buffers["transformer.h.1.attn.masked_bias"] = at::full({}, -1e9);
    auto loaded = CausalLM::FromTensors(*config, with_buffers, at::kFloat);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    const nlohmann::json written = nlohmann::json::parse(testing::ReadFile(dir + "/config.json"));
    EXPECT_EQ(written["model_type"], "gptj");
    EXPECT_EQ(written["rotary_dim"], partial ? 4 : 8);
    EXPECT_EQ(written["n_embd"], 32);
  }
}

// GPT-Neo (gpt_neo) against gpt_neo_reference.py (fp64, the config.json given here):
// learned positions, LayerNorms with biases, q/k/v without biases and out_proj with
// one, scores not divided by sqrt(head_dim), and attention_types' "local" layers
// attending to the last window_size keys (3 here, so that the window bites; layer 1
// of [global, local, global]); intermediate_size null (4 hidden), an extra
// num_key_value_heads ignored. Every path; saved under GPT-Neo's names and config
// (old mask buffers dropped at load); the window or the scale changed: other logits.
TEST(CausalLMTest, GptNeoMatchesThePythonTranscriptionOnEveryPath) {
  nlohmann::json json = {{"model_type", "gpt_neo"}, {"architectures", {"GPTNeoForCausalLM"}}, {"vocab_size", 97},
                         {"hidden_size", 32}, {"num_layers", 3}, {"num_heads", 4}, {"intermediate_size", nullptr},
                         {"max_position_embeddings", 64}, {"window_size", 3}, {"num_key_value_heads", 2},
                         {"attention_types", {{{"global", "local"}, 1}, {{"global"}, 1}}},
                         {"activation_function", "gelu_new"}, {"layer_norm_epsilon", 1e-5}};
  auto config = ModelConfig::FromJson(json);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->architecture, "GPTNeoForCausalLM");
  EXPECT_EQ(config->intermediate_size, 128);
  EXPECT_EQ(config->num_key_value_heads, 4);
  EXPECT_EQ(config->window_of(0), 0);
  EXPECT_EQ(config->window_of(1), 3);
  EXPECT_EQ(config->window_of(2), 0);
  EXPECT_TRUE(config->tie_word_embeddings && config->learned_positions && config->output_bias && !config->attention_bias);
  const std::unique_ptr<CausalLM> model = RandomWithStd02(*config, 191);
  RandomizeBiasesAndNorms(*model, 192, 0.5);
  const std::int64_t B = 2, T = 9;
  const at::Tensor ids = at::randint(config->vocab_size, {B, T}, at::kLong);
  const at::Tensor expected = PythonReferenceLogits(*model, ids, "py_gpt_neo", &json, "gpt_neo_reference.py");
  ASSERT_TRUE(expected.defined());
  ExpectEveryPathGives(*model, ids, expected, /*prefill=*/4, /*decode_step=*/false);
  const std::string dir = testing::TempDir("gpt_neo_save");
  ASSERT_TRUE(SaveCausalLM(*model, dir).ok());
  ExpectLoadedBackGivesTheSameLogits(*model, dir, ids);
  auto saved = LoadSafetensorsDir(dir);
  ASSERT_TRUE(saved.ok()) << saved.status();
  for (const char* name : {"transformer.wte.weight", "transformer.wpe.weight", "transformer.h.1.ln_1.bias",
                           "transformer.h.0.attn.attention.q_proj.weight", "transformer.h.2.attn.attention.out_proj.bias",
                           "transformer.h.0.mlp.c_fc.bias", "transformer.h.1.mlp.c_proj.weight", "transformer.ln_f.weight"}) {
    EXPECT_EQ(saved->count(name), 1u) << name;
  }
  EXPECT_EQ(saved->count("transformer.h.0.attn.attention.q_proj.bias"), 0u);
  EXPECT_EQ(saved->at("transformer.h.0.mlp.c_fc.weight").sizes(), at::IntArrayRef({128, 32}));  // nn.Linear [out, in]
  std::map<std::string, at::Tensor> with_buffers = *saved;
  with_buffers["transformer.h.0.attn.attention.bias"] = at::ones({1, 1, 64, 64}, at::kBool).tril();
  with_buffers["transformer.h.1.attn.attention.masked_bias"] = at::full({}, -1e9);
  EXPECT_TRUE(CausalLM::FromTensors(*config, with_buffers, at::kFloat).ok());
  const nlohmann::json written = nlohmann::json::parse(testing::ReadFile(dir + "/config.json"));
  EXPECT_EQ(written["model_type"], "gpt_neo");
  EXPECT_EQ(written["num_layers"], 3);
  EXPECT_EQ(written["window_size"], 3);
  EXPECT_EQ(written["attention_layers"], nlohmann::json({"global", "local", "global"}));
  const std::map<std::string, at::Tensor> tensors(model->named_parameters().begin(), model->named_parameters().end());
  c10::NoGradGuard no_grad;
  for (auto change : {+[](ModelConfig* c) { c->sliding_window.reset(); c->sliding_layers.clear(); },
                      +[](ModelConfig* c) { c->attention_multiplier.reset(); }}) {
    ModelConfig other_config = *config;
    change(&other_config);
    auto other = CausalLM::FromTensors(other_config, tensors, at::kFloat);
    ASSERT_TRUE(other.ok()) << other.status();
    EXPECT_GT(((*other)->Forward(ids, Positions(B, T), at::Tensor(), nullptr) - expected).abs().max().item<double>(), 1e-3);
  }
  nlohmann::json bad = json;
  bad["attention_types"] = {{{"global", "local"}, 2}};
  EXPECT_THAT(std::string(ModelConfig::FromJson(bad).status().message()), HasSubstr("attention_types give 4 layers, num_layers is 3"));
  bad["attention_types"] = {{{"global", "dilated"}, 1}, {{"global"}, 1}};
  EXPECT_THAT(std::string(ModelConfig::FromJson(bad).status().message()), HasSubstr("\"global\" and \"local\", got dilated"));
}

// GPTBigCode (gpt_bigcode: StarCoder, SantaCoder) against gpt_bigcode_reference.py
// (fp64, the config.json given here), with multi_query (one key/value head read by
// every head, c_attn's rows q, then k, then v) and without (c_attn interleaved by
// head), an extra num_key_value_heads ignored: GPT-2's block with nn.Linear
// projections and biases, learned positions. Every path; saved under its names
// (c_attn [q + 2 kv, n_embd], nn.Linear's [out, in]) and config, loaded back.
TEST(CausalLMTest, GptBigCodeMatchesThePythonTranscriptionOnEveryPath) {
  for (const bool multi_query : {true, false}) {
    SCOPED_TRACE(multi_query ? "multi_query" : "one key/value head per head");
    const nlohmann::json json = {{"model_type", "gpt_bigcode"}, {"architectures", {"GPTBigCodeForCausalLM"}},
                                 {"vocab_size", 97}, {"n_embd", 32}, {"n_inner", 56}, {"n_layer", 2}, {"n_head", 4},
                                 {"n_positions", 64}, {"multi_query", multi_query}, {"num_key_value_heads", 2},
                                 {"activation_function", "gelu_pytorch_tanh"}, {"resid_pdrop", 0.0}, {"embd_pdrop", 0.0},
                                 {"attn_pdrop", 0.0}};
    auto config = ModelConfig::FromJson(json);
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_EQ(config->architecture, "GPTBigCodeForCausalLM");
    EXPECT_EQ(config->num_key_value_heads, multi_query ? 1 : 4);
    EXPECT_TRUE(config->tie_word_embeddings && config->learned_positions && config->attention_bias && config->output_bias);
    const std::unique_ptr<CausalLM> model = RandomWithStd02(*config, multi_query ? 201 : 202);
    RandomizeBiasesAndNorms(*model, 203, 0.5);
    const std::int64_t B = 2, T = 9;
    const at::Tensor ids = at::randint(config->vocab_size, {B, T}, at::kLong);
    const at::Tensor expected = PythonReferenceLogits(*model, ids, multi_query ? "py_bigcode_mq" : "py_bigcode",
                                                      &json, "gpt_bigcode_reference.py");
    ASSERT_TRUE(expected.defined());
    ExpectEveryPathGives(*model, ids, expected, /*prefill=*/4, /*decode_step=*/false);
    const std::string dir = testing::TempDir(multi_query ? "bigcode_mq_save" : "bigcode_save");
    ASSERT_TRUE(SaveCausalLM(*model, dir).ok());
    ExpectLoadedBackGivesTheSameLogits(*model, dir, ids);
    auto saved = LoadSafetensorsDir(dir);
    ASSERT_TRUE(saved.ok()) << saved.status();
    EXPECT_EQ(saved->at("transformer.h.1.attn.c_attn.weight").sizes(), at::IntArrayRef({multi_query ? 48 : 96, 32}));
    EXPECT_EQ(saved->at("transformer.h.0.attn.c_attn.bias").sizes(), at::IntArrayRef({multi_query ? 48 : 96}));
    EXPECT_EQ(saved->at("transformer.h.0.mlp.c_fc.weight").sizes(), at::IntArrayRef({56, 32}));  // nn.Linear [out, in]
    for (const char* name : {"transformer.wte.weight", "transformer.wpe.weight", "transformer.h.1.ln_2.bias",
                             "transformer.h.0.attn.c_proj.bias", "transformer.ln_f.weight"}) {
      EXPECT_EQ(saved->count(name), 1u) << name;
    }
    const nlohmann::json written = nlohmann::json::parse(testing::ReadFile(dir + "/config.json"));
    EXPECT_EQ(written["model_type"], "gpt_bigcode");
    EXPECT_EQ(written["multi_query"], multi_query);
    EXPECT_EQ(written["n_inner"], 56);
    std::map<std::string, at::Tensor> bad = *saved;
    bad["transformer.h.0.attn.c_attn.weight"] = at::zeros({96 + 1, 32});
    EXPECT_THAT(std::string(CausalLM::FromTensors(*config, bad, at::kFloat).status().message()),
                HasSubstr("transformer.h.0.attn.c_attn.weight"));
  }
}

// Falcon (falcon) against falcon_reference.py (fp64, the config.json given here), in
// its layouts: falcon-7b's (old architecture, multi_query, one norm both parallel
// branches read, no biases); falcon-40b's (new_decoder_architecture, 2 key/value
// heads of 4 in groups, ln_attn and ln_mlp, biases); an old sequential layer with a
// key/value per head (interleaved); the new architecture with one norm. Every path;
// saved under its names and config (an extra num_key_value_heads ignored), loaded
// back; ALiBi and hidden_dropout (one mask on the layer's summed output) refused by name.
TEST(CausalLMTest, FalconMatchesThePythonTranscriptionOnEveryLayout) {
  const nlohmann::json base = {{"model_type", "falcon"}, {"architectures", {"FalconForCausalLM"}}, {"vocab_size", 97},
                               {"hidden_size", 32}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                               {"num_key_value_heads", 3}, {"rope_theta", 500.0}, {"max_position_embeddings", 64}};
  struct Case {
    const char* name;
    nlohmann::json fields;
    std::int64_t kv;
    bool one_norm, parallel;
    const char* norm;  // a norm tensor the checkpoint must hold
  };
  const std::vector<Case> cases = {
      {"falcon-7b", {{"multi_query", true}, {"parallel_attn", true}, {"bias", false}}, 1, true, true, "input_layernorm"},
      {"falcon-40b", {{"new_decoder_architecture", true}, {"num_kv_heads", 2}, {"bias", true}, {"ffn_hidden_size", 40}}, 2, false, true, "ln_mlp"},
      {"sequential", {{"multi_query", false}, {"parallel_attn", false}, {"bias", true}}, 4, false, false, "post_attention_layernorm"},
      {"new, one norm", {{"new_decoder_architecture", true}, {"num_ln_in_parallel_attn", 1}, {"num_kv_heads", 4}}, 4, true, true, "input_layernorm"}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    nlohmann::json json = base;
    json.update(c.fields);
    auto config = ModelConfig::FromJson(json);
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_EQ(config->architecture, "FalconForCausalLM");
    EXPECT_EQ(config->num_key_value_heads, c.kv);
    EXPECT_EQ(config->one_norm_per_layer, c.one_norm);
    EXPECT_EQ(config->parallel_residual, c.parallel);
    const std::unique_ptr<CausalLM> model = RandomWithStd02(*config, 211);
    RandomizeBiasesAndNorms(*model, 212, 0.5);
    const std::int64_t B = 2, T = 9;
    const at::Tensor ids = at::randint(config->vocab_size, {B, T}, at::kLong);
    const at::Tensor expected = PythonReferenceLogits(*model, ids, "py_falcon", &json, "falcon_reference.py");
    ASSERT_TRUE(expected.defined());
    ExpectEveryPathGives(*model, ids, expected, /*prefill=*/4, /*decode_step=*/false);
    const std::string dir = testing::TempDir("falcon_save");
    ASSERT_TRUE(SaveCausalLM(*model, dir).ok());
    ExpectLoadedBackGivesTheSameLogits(*model, dir, ids);
    auto saved = LoadSafetensorsDir(dir);
    ASSERT_TRUE(saved.ok()) << saved.status();
    EXPECT_EQ(saved->at("transformer.h.1.self_attention.query_key_value.weight").sizes(),
              at::IntArrayRef({32 + 2 * c.kv * 8, 32}));
    EXPECT_EQ(saved->count(absl::StrCat("transformer.h.0.", c.norm, ".bias")), 1u);
    EXPECT_EQ(saved->count("transformer.word_embeddings.weight"), 1u);
    EXPECT_EQ(saved->count("transformer.h.0.mlp.dense_4h_to_h.weight"), 1u);
    // The config written back reads the same, through transformers' own fields.
    const nlohmann::json written = nlohmann::json::parse(testing::ReadFile(dir + "/config.json"));
    auto reread = ModelConfig::FromJson(written);
    ASSERT_TRUE(reread.ok()) << reread.status();
    EXPECT_EQ(reread->num_key_value_heads, c.kv);
    EXPECT_EQ(reread->one_norm_per_layer, c.one_norm);
    EXPECT_EQ(reread->parallel_residual, c.parallel);
    EXPECT_EQ(reread->intermediate_size, config->intermediate_size);
  }
  nlohmann::json alibi = base;
  alibi["alibi"] = true;
  EXPECT_THAT(std::string(ModelConfig::FromJson(alibi).status().message()), HasSubstr("alibi = true"));
  nlohmann::json dropped = base;
  dropped["hidden_dropout"] = 0.1;  // one mask on the layer's summed output: not residual_dropout's per branch
  EXPECT_THAT(std::string(ModelConfig::FromJson(dropped).status().message()), HasSubstr("hidden_dropout = 0.1"));
}

// TRL's tiny models pass num_key_value_heads and intermediate_size to every family's
// config class; GPT2Config, GPTJConfig, OPTConfig and GPTNeoXConfig keep the ones they
// lack as extra attributes, written to config.json and read by no model: the
// family's own fields decide (n_inner null: 4 n_embd; ffn_dim, 3072 when absent;
// activation_function; one key/value head per query head).
TEST(CausalLMTest, FieldsAFamilyLacksAreIgnoredAsTransformersIgnoresThem) {
  const nlohmann::json extras = {{"num_key_value_heads", 2}, {"intermediate_size", 20}, {"head_dim", 4},
                                 {"hidden_act", "silu"}, {"rms_norm_eps", 0.5}};
  for (const char* type : {"gpt2", "gptj"}) {
    SCOPED_TRACE(type);
    nlohmann::json json = {{"model_type", type}, {"vocab_size", 97}, {"n_embd", 8}, {"n_head", 4}, {"n_layer", 2},
                           {"n_inner", nullptr}, {"activation_function", "gelu_new"}, {"layer_norm_epsilon", 1e-5}};
    json.update(extras);
    auto c = ModelConfig::FromJson(json);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->num_key_value_heads, 4);
    EXPECT_EQ(c->head_dim, 2);
    EXPECT_EQ(c->intermediate_size, 32);
    EXPECT_EQ(c->activation(), Activation::kGeluTanh);
    EXPECT_EQ(c->rms_norm_eps, 1e-5);
    json["n_inner"] = 24;
    EXPECT_EQ(ModelConfig::FromJson(json)->intermediate_size, 24);
  }
  nlohmann::json opt = {{"model_type", "opt"}, {"vocab_size", 97}, {"hidden_size", 8}, {"num_attention_heads", 4},
                        {"num_hidden_layers", 2}, {"activation_function", "relu"}};
  opt.update(extras);
  auto o = ModelConfig::FromJson(opt);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->num_key_value_heads, 4);
  EXPECT_EQ(o->head_dim, 2);
  EXPECT_EQ(o->intermediate_size, 3072);  // OPTConfig's ffn_dim default
  EXPECT_EQ(o->activation(), Activation::kRelu);
  EXPECT_EQ(o->rms_norm_eps, 1e-5);
  opt["ffn_dim"] = 16;
  EXPECT_EQ(ModelConfig::FromJson(opt)->intermediate_size, 16);
  nlohmann::json neox = {{"model_type", "gpt_neox"}, {"vocab_size", 97}, {"hidden_size", 8}, {"num_attention_heads", 4},
                         {"num_hidden_layers", 2}, {"intermediate_size", 32}, {"num_key_value_heads", 2}, {"head_dim", 4}};
  auto n = ModelConfig::FromJson(neox);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(n->num_key_value_heads, 4);
  EXPECT_EQ(n->head_dim, 2);
  EXPECT_EQ(n->intermediate_size, 32);  // GPTNeoXConfig's own field
  // rotary_pct 0.25 of head_dim 2: no dimension turns (transformers' rotary embedding is
  // empty); every path against the transcription, which rotates none either.
  EXPECT_EQ(n->rotary_dim(), 0);
  EXPECT_FALSE(n->uses_rope(0));
  {
    const std::unique_ptr<CausalLM> model = RandomWithStd02(*n, 151);
    RandomizeBiasesAndNorms(*model, 152, 0.5);
    const at::Tensor ids = at::randint(n->vocab_size, {2, 7}, at::kLong);
    const at::Tensor expected = PythonReferenceLogits(*model, ids, "py_neox_tiny", nullptr, "gpt_neox_reference.py");
    ASSERT_TRUE(expected.defined());
    ExpectEveryPathGives(*model, ids, expected, /*prefill=*/3, /*decode_step=*/false);
  }
  // Each loads the tensors its transformers class holds: q, k and v all 8 rows.
  for (const nlohmann::json& json : {neox, opt}) {
    auto config = ModelConfig::FromJson(json);
    ASSERT_TRUE(config.ok());
    auto model = CausalLM::Random(*config, at::kFloat, 1);
    ASSERT_TRUE(model.ok()) << model.status();
    for (const auto& [name, p] : (*model)->named_parameters()) {
      if (absl::EndsWith(name, "v_proj.weight")) EXPECT_EQ(p.size(0), 8) << name;
    }
  }
}

// EleutherAI/gpt-j-6b's config.json read as GPTJConfig defines it (rotary_dim 64 of
// 256, n_inner null: 4 n_embd, lm_head with a bias, untied), written back under its
// names; bad rotary_dim values are named.
TEST(CausalLMTest, GptjConfigReadsGptj6bFields) {
  const nlohmann::json gptj = {{"activation_function", "gelu_new"}, {"architectures", {"GPTJForCausalLM"}},
                               {"attn_pdrop", 0.0}, {"bos_token_id", 50256}, {"embd_pdrop", 0.0}, {"eos_token_id", 50256},
                               {"gradient_checkpointing", false}, {"initializer_range", 0.02}, {"layer_norm_epsilon", 1e-05},
                               {"model_type", "gptj"}, {"n_embd", 4096}, {"n_head", 16}, {"n_inner", nullptr},
                               {"n_layer", 28}, {"n_positions", 2048}, {"resid_pdrop", 0.0}, {"rotary", true},
                               {"rotary_dim", 64}, {"scale_attn_weights", true}, {"tie_word_embeddings", false},
                               {"use_cache", true}, {"vocab_size", 50400}};
  auto c = ModelConfig::FromJson(gptj);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, "GPTJForCausalLM");
  EXPECT_EQ(c->head_dim, 256);
  EXPECT_EQ(c->rotary_dim(), 64);
  EXPECT_EQ(c->intermediate_size, 16384);
  EXPECT_EQ(c->max_position_embeddings, 2048);
  EXPECT_EQ(c->rope_theta, 10000.0);
  EXPECT_TRUE(c->layer_norm && c->layer_norm_bias && c->parallel_residual && c->one_norm_per_layer && c->mlp_bias &&
              c->lm_head_bias && c->rope_interleaved);
  EXPECT_FALSE(c->gated_mlp || c->tie_word_embeddings || c->attention_bias || c->output_bias);
  EXPECT_EQ(c->activation(), Activation::kGeluTanh);
  auto back = ModelConfig::FromJson(nlohmann::json::parse(c->ToJson().dump()));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->ToJson().dump(), c->ToJson().dump());
  for (const std::int64_t head_dim : {80, 96, 112, 200}) {  // rotary_dim / head_dim need not be exact in binary
    for (std::int64_t rotary = 2; rotary <= head_dim; rotary += 2) {
      nlohmann::json j = gptj;
      j["n_embd"] = head_dim * 16;
      j["rotary_dim"] = rotary;
      auto r = ModelConfig::FromJson(j);
      ASSERT_TRUE(r.ok()) << r.status();
      ASSERT_EQ(r->rotary_dim(), rotary) << head_dim;
      ASSERT_EQ(r->ToJson()["rotary_dim"], rotary) << head_dim;
    }
  }
  for (const std::int64_t bad : {0, 3, 258}) {
    nlohmann::json j = gptj;
    j["rotary_dim"] = bad;
    EXPECT_THAT(std::string(ModelConfig::FromJson(j).status().message()), HasSubstr("rotary_dim must be even")) << bad;
  }
  nlohmann::json no_layers = gptj;
  no_layers.erase("n_layer");
  EXPECT_THAT(std::string(ModelConfig::FromJson(no_layers).status().message()), HasSubstr("GPT-J's num_hidden_layers"));
}

// StableLM against tests/framework/model/stablelm_reference.py (StableLmDecoderLayer's
// maths in fp64 from the checkpoint we write): LayerNorms with random weights and
// biases, partial rotary; sequential with q/k/v biases, then parallel (one norm) with
// qk_layernorm's per-head LayerNorms (random), stored one tensor per head as
// StableLM's checkpoints hold them, and grouped queries. Every path, saved and
// loaded back bit-identical; a missing head's norm is named.
TEST(CausalLMTest, StableLmMatchesThePythonTranscriptionOnEveryPath) {
  for (const bool parallel : {false, true}) {
    SCOPED_TRACE(parallel ? "use_parallel_residual, qk_layernorm, grouped queries" : "sequential, use_qkv_bias");
    const nlohmann::json json = {{"model_type", "stablelm"}, {"architectures", {"StableLmForCausalLM"}}, {"vocab_size", 97},
                                 {"hidden_size", 32}, {"intermediate_size", 56}, {"num_hidden_layers", 2},
                                 {"num_attention_heads", 4}, {"num_key_value_heads", parallel ? 2 : 4},
                                 {"partial_rotary_factor", 0.5}, {"layer_norm_eps", 1e-5}, {"rope_theta", 500.0},
                                 {"use_qkv_bias", !parallel}, {"use_parallel_residual", parallel}, {"qk_layernorm", parallel},
                                 {"max_position_embeddings", 64}, {"tie_word_embeddings", false}};
    auto config = ModelConfig::FromJson(json);
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_EQ(config->architecture, "StableLmForCausalLM");
    EXPECT_EQ(config->one_norm_per_layer, parallel);
    const std::unique_ptr<CausalLM> model = RandomWithStd02(*config, parallel ? 131 : 132);
    RandomizeBiasesAndNorms(*model, parallel ? 133 : 134);
    const at::Tensor ids = at::randint(config->vocab_size, {2, 9}, at::kLong);
    const at::Tensor expected = PythonReferenceLogits(*model, ids, parallel ? "py_stablelm_parallel" : "py_stablelm", nullptr,
                                                      "stablelm_reference.py");
    ASSERT_TRUE(expected.defined());
    ExpectEveryPathGives(*model, ids, expected, /*prefill=*/4, /*decode_step=*/false);
    const std::string dir = testing::TempDir(parallel ? "stablelm_save_parallel" : "stablelm_save");
    ASSERT_TRUE(SaveCausalLM(*model, dir).ok());
    ExpectLoadedBackGivesTheSameLogits(*model, dir, ids);
    auto saved = LoadSafetensorsDir(dir);
    ASSERT_TRUE(saved.ok()) << saved.status();
    EXPECT_EQ(saved->count("model.layers.1.post_attention_layernorm.bias"), parallel ? 0u : 1u);
    EXPECT_EQ(saved->count("model.layers.1.self_attn.q_proj.bias"), parallel ? 0u : 1u);
    EXPECT_EQ(saved->count("model.norm.bias"), 1u);
    if (!parallel) continue;
    EXPECT_EQ(saved->count("model.layers.1.self_attn.q_norm.weight"), 0u);
    ASSERT_EQ(saved->count("model.layers.1.self_attn.q_layernorm.norms.3.weight"), 1u);
    EXPECT_EQ(saved->at("model.layers.1.self_attn.q_layernorm.norms.3.weight").sizes(), at::IntArrayRef({8}));
    EXPECT_EQ(saved->count("model.layers.1.self_attn.k_layernorm.norms.1.weight"), 1u);
    EXPECT_EQ(saved->count("model.layers.1.self_attn.k_layernorm.norms.2.weight"), 0u);
    std::map<std::string, at::Tensor> missing = *saved;
    missing.erase("model.layers.0.self_attn.q_layernorm.norms.2.weight");
    EXPECT_THAT(std::string(CausalLM::FromTensors(*config, missing, at::kFloat).status().message()),
                HasSubstr("lacks tensor 'model.layers.0.self_attn.q_layernorm.norms.2.weight'"));
  }
}

// stabilityai/stablelm-2-1_6b's config.json fields read as StableLmConfig defines them;
// written back under its names; hidden_dropout (on the MLP output only) is refused.
TEST(CausalLMTest, StableLmConfigReadsStableLm2Fields) {
  const nlohmann::json stablelm2 = {{"architectures", {"StableLmForCausalLM"}}, {"bos_token_id", 100257}, {"eos_token_id", 100257},
                                    {"hidden_act", "silu"}, {"hidden_dropout", 0.0}, {"hidden_size", 2048},
                                    {"initializer_range", 0.02}, {"intermediate_size", 5632}, {"layer_norm_eps", 1e-05},
                                    {"max_position_embeddings", 4096}, {"model_type", "stablelm"}, {"num_attention_heads", 32},
                                    {"num_hidden_layers", 24}, {"num_key_value_heads", 32}, {"partial_rotary_factor", 0.25},
                                    {"qk_layernorm", false}, {"rope_scaling", nullptr}, {"rope_theta", 10000},
                                    {"tie_word_embeddings", false}, {"torch_dtype", "bfloat16"}, {"use_cache", true},
                                    {"use_parallel_residual", false}, {"use_qkv_bias", true}, {"vocab_size", 100352}};
  auto c = ModelConfig::FromJson(stablelm2);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->rotary_dim(), 16);
  EXPECT_TRUE(c->layer_norm && c->layer_norm_bias && c->attention_bias && c->gated_mlp);
  EXPECT_FALSE(c->parallel_residual || c->one_norm_per_layer || c->qk_norm || c->output_bias || c->tie_word_embeddings);
  auto back = ModelConfig::FromJson(nlohmann::json::parse(c->ToJson().dump()));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->ToJson().dump(), c->ToJson().dump());
  nlohmann::json dropout = stablelm2;
  dropout["hidden_dropout"] = 0.1;
  EXPECT_THAT(std::string(ModelConfig::FromJson(dropout).status().message()), HasSubstr("hidden_dropout = 0.1"));
}

// StarCoder2 against tests/framework/model/starcoder2_reference.py (Starcoder2's
// decoder layer in fp64 from the checkpoint we write): LayerNorms with random weights
// and biases, random biases on every projection (use_bias), the ungated c_fc/c_proj
// MLP, grouped queries, a sliding window of 4 on every layer (then use_bias false and
// no window). Every path, saved and loaded back bit-identical under its names.
TEST(CausalLMTest, Starcoder2MatchesThePythonTranscriptionOnEveryPath) {
  for (const bool bias : {true, false}) {
    SCOPED_TRACE(bias ? "use_bias, sliding_window 4" : "no bias, no window");
    nlohmann::json json = {{"model_type", "starcoder2"}, {"architectures", {"Starcoder2ForCausalLM"}}, {"vocab_size", 97},
                           {"hidden_size", 32}, {"intermediate_size", 56}, {"num_hidden_layers", 2},
                           {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"norm_epsilon", 1e-5},
                           {"rope_theta", 500.0}, {"use_bias", bias}, {"max_position_embeddings", 64},
                           {"sliding_window", bias ? nlohmann::json(4) : nlohmann::json(nullptr)}};
    auto config = ModelConfig::FromJson(json);
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_EQ(config->architecture, "Starcoder2ForCausalLM");
    EXPECT_EQ(config->window_of(1), bias ? 4 : 0);
    EXPECT_TRUE(config->tie_word_embeddings);
    const std::unique_ptr<CausalLM> model = RandomWithStd02(*config, bias ? 141 : 142);
    RandomizeBiasesAndNorms(*model, bias ? 143 : 144);
    const at::Tensor ids = at::randint(config->vocab_size, {2, 9}, at::kLong);
    const at::Tensor expected = PythonReferenceLogits(*model, ids, bias ? "py_starcoder2" : "py_starcoder2_nobias", nullptr,
                                                      "starcoder2_reference.py");
    ASSERT_TRUE(expected.defined());
    ExpectEveryPathGives(*model, ids, expected, /*prefill=*/4, /*decode_step=*/false);
    const std::string dir = testing::TempDir(bias ? "starcoder2_save" : "starcoder2_save_nobias");
    ASSERT_TRUE(SaveCausalLM(*model, dir).ok());
    ExpectLoadedBackGivesTheSameLogits(*model, dir, ids);
    auto saved = LoadSafetensorsDir(dir);
    ASSERT_TRUE(saved.ok()) << saved.status();
    EXPECT_EQ(saved->count("model.layers.1.mlp.c_fc.weight"), 1u);
    EXPECT_EQ(saved->count("model.layers.1.mlp.c_proj.bias"), bias ? 1u : 0u);
    EXPECT_EQ(saved->count("model.layers.1.self_attn.o_proj.bias"), bias ? 1u : 0u);
    EXPECT_EQ(saved->count("model.layers.1.post_attention_layernorm.bias"), 1u);
    const nlohmann::json written = nlohmann::json::parse(testing::ReadFile(dir + "/config.json"));
    EXPECT_EQ(written["use_bias"], bias);
    EXPECT_EQ(written["sliding_window"], bias ? nlohmann::json(4) : nlohmann::json(nullptr));
    EXPECT_EQ(written["norm_epsilon"], 1e-5);
  }
  nlohmann::json llama = {{"model_type", "llama"}, {"vocab_size", 32}, {"hidden_size", 16}, {"intermediate_size", 32},
                          {"num_hidden_layers", 1}, {"num_attention_heads", 2}, {"residual_dropout", 0.1}};
  EXPECT_THAT(std::string(ModelConfig::FromJson(llama).status().message()), HasSubstr("residual_dropout = 0.1"));
}

// GPT-2 against tests/framework/model/gpt2_reference.py, which reads the checkpoint
// we write under GPT-2's own names and layout (transformer.*, Conv1D weights [in, out],
// one attn.c_attn with q, k, v columns) and does GPT2Block's maths in fp64: learned
// positions, LayerNorms with random weights and biases, random biases everywhere;
// tied and untied heads, scale_attn_weights on and off, n_inner null and set,
// scale_attn_by_inverse_layer_idx (with reorder_and_upcast_attn) on the untied. Every
// path, saved and loaded back bit-identical; a checkpoint without the transformer.
// prefix (the hub's gpt2) and old buffers load; shapes are named in the checkpoint's
// layout; a position past n_positions is an error, not a read out of bounds.
TEST(CausalLMTest, Gpt2MatchesThePythonTranscriptionOnEveryPath) {
  for (const bool tied : {true, false}) {
    SCOPED_TRACE(tied ? "tied, scaled, n_inner null" : "untied, unscaled, n_inner 40");
    const nlohmann::json json = {{"model_type", "gpt2"}, {"architectures", {"GPT2LMHeadModel"}}, {"vocab_size", 97},
                                 {"n_embd", 32}, {"n_inner", tied ? nlohmann::json(nullptr) : nlohmann::json(40)},
                                 {"n_layer", 2}, {"n_head", 4}, {"n_positions", 12}, {"n_ctx", 12},
                                 {"layer_norm_epsilon", 1e-5}, {"activation_function", tied ? "gelu_new" : "gelu"},
                                 {"attn_pdrop", 0.1}, {"resid_pdrop", 0.1}, {"embd_pdrop", 0.1},
                                 {"scale_attn_weights", tied}, {"tie_word_embeddings", tied},
                                 {"scale_attn_by_inverse_layer_idx", !tied}, {"reorder_and_upcast_attn", !tied}};
    auto config = ModelConfig::FromJson(json);
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_EQ(config->architecture, "GPT2LMHeadModel");
    EXPECT_EQ(config->intermediate_size, tied ? 128 : 40);
    EXPECT_EQ(config->max_position_embeddings, 12);
    const std::unique_ptr<CausalLM> model = RandomWithStd02(*config, tied ? 91 : 92);
    RandomizeBiasesAndNorms(*model, tied ? 93 : 94);
    const at::Tensor ids = at::randint(config->vocab_size, {2, 9}, at::kLong);
    const at::Tensor expected = PythonReferenceLogits(*model, ids, tied ? "py_gpt2_tied" : "py_gpt2", nullptr, "gpt2_reference.py");
    ASSERT_TRUE(expected.defined());
    ExpectEveryPathGives(*model, ids, expected, /*prefill=*/4, /*decode_step=*/false);

    const std::string dir = testing::TempDir(tied ? "gpt2_save_tied" : "gpt2_save");
    ASSERT_TRUE(SaveCausalLM(*model, dir).ok());
    ExpectLoadedBackGivesTheSameLogits(*model, dir, ids);
    auto saved = LoadSafetensorsDir(dir);
    ASSERT_TRUE(saved.ok()) << saved.status();
    for (const auto& [name, t] : *saved) EXPECT_TRUE(absl::StartsWith(name, "transformer.") || name == "lm_head.weight") << name;
    EXPECT_EQ(saved->at("transformer.h.1.attn.c_attn.weight").sizes(), at::IntArrayRef({32, 96}));
    EXPECT_EQ(saved->at("transformer.h.1.mlp.c_fc.weight").sizes(), at::IntArrayRef({32, tied ? 128 : 40}));
    EXPECT_EQ(saved->at("transformer.wpe.weight").sizes(), at::IntArrayRef({12, 32}));
    EXPECT_EQ(saved->count("lm_head.weight"), tied ? 0u : 1u);
    nlohmann::json written = nlohmann::json::parse(testing::ReadFile(dir + "/config.json"));
    EXPECT_EQ(written["n_embd"], 32);
    EXPECT_EQ(written["resid_pdrop"], 0.1);
    EXPECT_EQ(written["scale_attn_weights"], tied);
    EXPECT_EQ(written["scale_attn_by_inverse_layer_idx"], !tied);
    EXPECT_FALSE(written.contains("hidden_size"));

    std::map<std::string, at::Tensor> bare;  // the hub's gpt2: no transformer. prefix, old buffers
    for (const auto& [name, t] : *saved) bare[absl::StartsWith(name, "transformer.") ? name.substr(12) : name] = t;
    bare["h.0.attn.bias"] = at::ones({1, 1, 12, 12}, at::kBool).tril();
    bare["h.0.attn.masked_bias"] = at::full({}, -1e4);
    auto loaded = CausalLM::FromTensors(*config, bare, at::kFloat);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    {
      c10::NoGradGuard no_grad;
      EXPECT_TRUE(at::equal((*loaded)->Forward(ids, Positions(2, 9), at::Tensor(), nullptr),
                            model->Forward(ids, Positions(2, 9), at::Tensor(), nullptr)));
    }
    std::map<std::string, at::Tensor> bad = *saved;
    bad["transformer.h.0.mlp.c_fc.weight"] = bad["transformer.h.0.mlp.c_fc.weight"].t();  // nn.Linear's layout
    EXPECT_THAT(std::string(CausalLM::FromTensors(*config, bad, at::kFloat).status().message()),
                HasSubstr(absl::StrCat("tensor 'transformer.h.0.mlp.c_fc.weight' has shape [", tied ? 128 : 40,
                                       ", 32], config.json implies [32, ", tied ? 128 : 40, "]")));
    bad = *saved;
    bad.erase("transformer.h.1.attn.c_attn.weight");
    EXPECT_THAT(std::string(CausalLM::FromTensors(*config, bad, at::kFloat).status().message()),
                HasSubstr("lacks tensor 'transformer.h.1.attn.c_attn.weight' of shape [32, 96]"));
    c10::NoGradGuard no_grad;
    try {
      (void)model->Forward(at::zeros({1, 1}, at::kLong), at::full({1, 1}, 12, at::kLong), at::Tensor(), nullptr);
      ADD_FAILURE() << "position 12 of 12 embedded";
    } catch (const c10::Error& e) {
      EXPECT_THAT(e.what_without_backtrace(), HasSubstr("position 12 is past the 12 positions"));
    }
  }
}

// OPT against tests/framework/model/opt_reference.py, which reads the checkpoint we
// write under OPT's names (model.decoder.*, out_proj, fc1, fc2, self_attn_layer_norm,
// final_layer_norm) and does OPTDecoderLayer's maths in fp64: learned positions read
// 2 rows on, ReLU, random LayerNorm weights and biases everywhere. Every path; saved
// and loaded back bit-identical; OPTModel's files (no model. prefix) load; a position
// past max_position_embeddings is an error; facebook/opt-125m's config reads.
TEST(CausalLMTest, OptMatchesThePythonTranscriptionOnEveryPath) {
  const nlohmann::json json = {{"model_type", "opt"}, {"architectures", {"OPTForCausalLM"}}, {"vocab_size", 97},
                               {"hidden_size", 32}, {"word_embed_proj_dim", 32}, {"ffn_dim", 48}, {"num_hidden_layers", 2},
                               {"num_attention_heads", 4}, {"max_position_embeddings", 12}, {"do_layer_norm_before", true},
                               {"activation_function", "relu"}, {"dropout", 0.1}, {"attention_dropout", 0.0},
                               {"enable_bias", true}, {"layerdrop", 0.0}};
  auto config = ModelConfig::FromJson(json);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->intermediate_size, 48);
  EXPECT_EQ(config->activation(), Activation::kRelu);
  EXPECT_EQ(config->residual_dropout, 0.1);
  const std::unique_ptr<CausalLM> model = RandomWithStd02(*config, 97);
  {
    c10::NoGradGuard no_grad;
    at::manual_seed(98);
    for (auto& [name, p] : model->named_parameters()) {
      if (absl::EndsWith(name, ".bias")) p.copy_(at::randn(p.sizes()) * 0.2);
      if (absl::StrContains(name, "norm.weight")) p.copy_(1 + at::randn(p.sizes()) * 0.3);
    }
  }
  const at::Tensor ids = at::randint(config->vocab_size, {2, 9}, at::kLong);
  const at::Tensor expected = PythonReferenceLogits(*model, ids, "py_opt", nullptr, "opt_reference.py");
  ASSERT_TRUE(expected.defined());
  ExpectEveryPathGives(*model, ids, expected, /*prefill=*/4, /*decode_step=*/false);
  const std::string dir = testing::TempDir("opt_save");
  ASSERT_TRUE(SaveCausalLM(*model, dir).ok());
  ExpectLoadedBackGivesTheSameLogits(*model, dir, ids);
  auto saved = LoadSafetensorsDir(dir);
  ASSERT_TRUE(saved.ok()) << saved.status();
  for (const auto& [name, t] : *saved) EXPECT_TRUE(absl::StartsWith(name, "model.decoder.")) << name;
  EXPECT_EQ(saved->at("model.decoder.embed_positions.weight").sizes(), at::IntArrayRef({14, 32}));
  EXPECT_EQ(saved->count("model.decoder.layers.1.self_attn.out_proj.bias"), 1u);
  EXPECT_EQ(saved->at("model.decoder.layers.0.fc1.weight").sizes(), at::IntArrayRef({48, 32}));
  std::map<std::string, at::Tensor> bare;  // OPTModel's own files
  for (const auto& [name, t] : *saved) bare[name.substr(6)] = t;
  auto loaded = CausalLM::FromTensors(*config, bare, at::kFloat);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  bare.erase("decoder.layers.1.fc2.bias");
  EXPECT_THAT(std::string(CausalLM::FromTensors(*config, bare, at::kFloat).status().message()),
              HasSubstr("lacks tensor 'model.decoder.layers.1.fc2.bias' of shape [32]"));
  c10::NoGradGuard no_grad;
  EXPECT_TRUE(at::equal((*loaded)->Forward(ids, Positions(2, 9), at::Tensor(), nullptr),
                        model->Forward(ids, Positions(2, 9), at::Tensor(), nullptr)));
  EXPECT_THROW((void)model->Forward(at::zeros({1, 1}, at::kLong), at::full({1, 1}, 12, at::kLong), at::Tensor(), nullptr),
               c10::Error);

  const nlohmann::json opt125m = {{"_remove_final_layer_norm", false}, {"activation_dropout", 0.0},
                                  {"activation_function", "relu"}, {"architectures", {"OPTForCausalLM"}},
                                  {"attention_dropout", 0.0}, {"bos_token_id", 2}, {"do_layer_norm_before", true},
                                  {"dropout", 0.1}, {"eos_token_id", 2}, {"ffn_dim", 3072}, {"hidden_size", 768},
                                  {"init_std", 0.02}, {"layerdrop", 0.0}, {"max_position_embeddings", 2048},
                                  {"model_type", "opt"}, {"num_attention_heads", 12}, {"num_hidden_layers", 12},
                                  {"pad_token_id", 1}, {"prefix", "</s>"}, {"torch_dtype", "float16"},
                                  {"vocab_size", 50272}, {"word_embed_proj_dim", 768}};
  auto c = ModelConfig::FromJson(opt125m);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_TRUE(c->tie_word_embeddings && c->learned_positions && c->layer_norm);
  EXPECT_EQ(c->position_offset, 2);
  auto back = ModelConfig::FromJson(nlohmann::json::parse(c->ToJson().dump()));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->ToJson().dump(), c->ToJson().dump());
  nlohmann::json opt350m = opt125m;  // norms after the residual adds, project_in/out
  opt350m.update({{"do_layer_norm_before", false}, {"word_embed_proj_dim", 512}, {"hidden_size", 1024}, {"ffn_dim", 4096},
                  {"num_attention_heads", 16}, {"num_hidden_layers", 24}});
  auto c350 = ModelConfig::FromJson(opt350m);
  ASSERT_TRUE(c350.ok()) << c350.status();
  EXPECT_TRUE(c350->post_layer_norm);
  EXPECT_EQ(c350->output_size(), 512);
  auto back350 = ModelConfig::FromJson(nlohmann::json::parse(c350->ToJson().dump()));
  ASSERT_TRUE(back350.ok()) << back350.status();
  EXPECT_EQ(back350->ToJson().dump(), c350->ToJson().dump());
  EXPECT_EQ(back350->ToJson()["word_embed_proj_dim"], 512);
  EXPECT_EQ(back350->ToJson()["do_layer_norm_before"], false);
  nlohmann::json removed = opt125m;
  removed["_remove_final_layer_norm"] = true;
  EXPECT_THAT(std::string(ModelConfig::FromJson(removed).status().message()), HasSubstr("_remove_final_layer_norm = true"));
}

// OPT-350m's layout (do_layer_norm_before false: each norm after its residual add, no
// final norm; word_embed_proj_dim 24 < hidden 32: embeddings and LM head 24 wide,
// project_in before the positions, project_out after the layers) against
// opt_reference.py in fp64. Every path; saved under OPT's names
// (model.decoder.project_in/out) and loaded back; the reward trainer's head reads the
// projected width (OPTForSequenceClassification's score is [1, word_embed_proj_dim]).
TEST(CausalLMTest, Opt350mPostNormsAndProjectionsMatchThePythonTranscription) {
  const nlohmann::json json = {{"model_type", "opt"}, {"architectures", {"OPTForCausalLM"}}, {"vocab_size", 97},
                               {"hidden_size", 32}, {"word_embed_proj_dim", 24}, {"ffn_dim", 48}, {"num_hidden_layers", 2},
                               {"num_attention_heads", 4}, {"max_position_embeddings", 12}, {"do_layer_norm_before", false}};
  auto config = ModelConfig::FromJson(json);
  ASSERT_TRUE(config.ok()) << config.status();
  const std::unique_ptr<CausalLM> model = RandomWithStd02(*config, 99);
  RandomizeBiasesAndNorms(*model, 100);
  std::map<std::string, at::Tensor> tensors(model->named_parameters().begin(), model->named_parameters().end());
  EXPECT_EQ(tensors.at("model.embed_tokens.weight").sizes(), at::IntArrayRef({97, 24}));
  EXPECT_EQ(tensors.at("model.project_in.weight").sizes(), at::IntArrayRef({32, 24}));
  EXPECT_EQ(tensors.count("model.norm.weight"), 0u);
  const at::Tensor ids = at::randint(config->vocab_size, {2, 9}, at::kLong);
  const at::Tensor expected = PythonReferenceLogits(*model, ids, "py_opt350m", nullptr, "opt_reference.py");
  ASSERT_TRUE(expected.defined());
  ExpectEveryPathGives(*model, ids, expected, /*prefill=*/4, /*decode_step=*/false);
  const std::string dir = testing::TempDir("opt350m_save");
  ASSERT_TRUE(SaveCausalLM(*model, dir).ok());
  ExpectLoadedBackGivesTheSameLogits(*model, dir, ids);
  auto saved = LoadSafetensorsDir(dir);
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_EQ(saved->count("model.decoder.project_out.weight"), 1u);
  EXPECT_EQ(saved->count("model.decoder.final_layer_norm.weight"), 0u);
  c10::NoGradGuard no_grad;
  EXPECT_EQ(model->Hidden(ids, Positions(2, 9), at::Tensor(), nullptr).size(-1), 24);
  nlohmann::json pre = json;  // the same weights read with the norms before the sublayers: other maths
  pre["do_layer_norm_before"] = true;
  std::map<std::string, at::Tensor> with_final = tensors;
  with_final["model.norm.weight"] = at::ones({32});
  with_final["model.norm.bias"] = at::zeros({32});
  auto other = CausalLM::FromTensors(*ModelConfig::FromJson(pre), with_final, at::kFloat);
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_GT(((*other)->Forward(ids, Positions(2, 9), at::Tensor(), nullptr) - expected).abs().max().item<double>(), 1e-3);
}

// openai-community/gpt2's config.json (its fields as transformers wrote them) reads
// as GPT2Config defines it, and writing it back and reading again keeps it; GPT-2's
// options with other maths are refused by name; its own names are the required ones.
TEST(CausalLMTest, Gpt2ConfigReadsItsOwnFields) {
  const nlohmann::json gpt2 = {{"activation_function", "gelu_new"}, {"architectures", {"GPT2LMHeadModel"}},
                               {"attn_pdrop", 0.1}, {"bos_token_id", 50256}, {"embd_pdrop", 0.1}, {"eos_token_id", 50256},
                               {"initializer_range", 0.02}, {"layer_norm_epsilon", 1e-05}, {"model_type", "gpt2"},
                               {"n_ctx", 1024}, {"n_embd", 768}, {"n_head", 12}, {"n_layer", 12}, {"n_positions", 1024},
                               {"resid_pdrop", 0.1}, {"summary_activation", nullptr}, {"summary_first_dropout", 0.1},
                               {"summary_proj_to_labels", true}, {"summary_type", "cls_index"}, {"summary_use_proj", true},
                               {"task_specific_params", {{"text-generation", {{"do_sample", true}, {"max_length", 50}}}}},
                               {"vocab_size", 50257}};
  auto c = ModelConfig::FromJson(gpt2);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->hidden_size, 768);
  EXPECT_EQ(c->intermediate_size, 3072);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->num_key_value_heads, 12);
  EXPECT_EQ(c->max_position_embeddings, 1024);
  EXPECT_TRUE(c->learned_positions && c->layer_norm && c->tie_word_embeddings && c->mlp_bias && c->output_bias);
  EXPECT_FALSE(c->gated_mlp || c->parallel_residual || c->uses_rope(0));
  EXPECT_EQ(c->activation(), Activation::kGeluTanh);
  EXPECT_EQ(c->attention_scale(), 0.125);
  EXPECT_EQ(c->attention_dropout, 0.1);
  EXPECT_EQ(c->residual_dropout, 0.1);
  EXPECT_EQ(c->embedding_dropout, 0.1);
  EXPECT_EQ(c->eos_token_ids, std::vector<std::int64_t>{50256});
  auto back = ModelConfig::FromJson(nlohmann::json::parse(c->ToJson().dump()));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->ToJson().dump(), c->ToJson().dump());
  EXPECT_EQ(ExpectedTensors(*back), ExpectedTensors(*c));
  auto message = [&](const nlohmann::json& update, const char* erase = nullptr) {
    nlohmann::json j = gpt2;
    j.update(update);
    if (erase != nullptr) j.erase(erase);
    return std::string(ModelConfig::FromJson(j).status().message());
  };
  EXPECT_THAT(message({{"scale_attn_by_inverse_layer_idx", 1}}), HasSubstr("\"scale_attn_by_inverse_layer_idx\" must be a boolean"));
  EXPECT_THAT(message({{"add_cross_attention", true}}), HasSubstr("add_cross_attention = true"));
  EXPECT_THAT(message(nlohmann::json::object(), "n_embd"), HasSubstr("lacks \"n_embd\""));
  EXPECT_THAT(message({{"resid_pdrop", -0.5}}), HasSubstr("\"resid_pdrop\" must be a probability"));
  EXPECT_THAT(message({{"n_head", 5}}), HasSubstr("n_head (5) must divide n_embd (768)"));
}

// Dropout as transformers applies it in train mode, switched on per model and only
// in forwards that build a graph. Off by default and under no_grad: the eval logits.
// On: two training forwards from one seed agree, and differ from eval. With a
// probability of 1, by hand: embd_pdrop zeroes the embeddings (= the model with wte
// and wpe zeroed); resid_pdrop zeroes every sublayer's branch (= lm_head(ln_f(wte +
// wpe)), no layer left); attn_pdrop zeroes the attention probabilities (= the model
// whose v projection is zero: attention adds c_proj's bias only). Padded and packed.
TEST(CausalLMTest, DropoutAppliesInTrainingForwardsOnlyAsTransformersDoes) {
  nlohmann::json json = {{"model_type", "gpt2"}, {"vocab_size", 97}, {"n_embd", 32}, {"n_layer", 2},
                         {"n_head", 4},         {"n_positions", 16}, {"attn_pdrop", 0.3}, {"resid_pdrop", 0.3},
                         {"embd_pdrop", 0.3}};
  auto config = ModelConfig::FromJson(json);
  ASSERT_TRUE(config.ok()) << config.status();
  const std::unique_ptr<CausalLM> model = RandomWithStd02(*config, 95);
  {
    c10::NoGradGuard no_grad;
    at::manual_seed(96);
    for (auto& [name, p] : model->named_parameters()) {
      if (absl::EndsWith(name, ".bias")) p.copy_(at::randn(p.sizes()) * 0.2);
    }
  }
  const at::Tensor ids = at::randint(config->vocab_size, {2, 7}, at::kLong), pos = Positions(2, 7);
  std::vector<std::vector<std::int64_t>> seqs;
  for (int b = 0; b < 2; ++b) seqs.emplace_back(ids[b].data_ptr<std::int64_t>(), ids[b].data_ptr<std::int64_t>() + 7);
  auto padded = [&](const CausalLM& m) { return m.Forward(ids, pos, at::Tensor(), nullptr).detach(); };
  auto packed = [&](const CausalLM& m) { return m.Logits(m.PackedHidden(PackSequences(seqs))).view({2, 7, -1}).detach(); };
  at::Tensor eval;
  {
    c10::NoGradGuard no_grad;
    eval = padded(*model);
  }
  EXPECT_FALSE(model->dropout());
  EXPECT_TRUE(at::equal(padded(*model), eval)) << "dropout while switched off";
  model->set_dropout(true);
  {
    c10::NoGradGuard no_grad;
    EXPECT_TRUE(at::equal(padded(*model), eval)) << "dropout under no_grad";
  }
  for (auto forward : {std::function<at::Tensor(const CausalLM&)>(padded), std::function<at::Tensor(const CausalLM&)>(packed)}) {
    at::manual_seed(7);
    const at::Tensor first = forward(*model);
    at::manual_seed(7);
    EXPECT_TRUE(at::equal(forward(*model), first)) << "one seed, two masks";
    EXPECT_GT((first - eval).abs().max().item<double>(), 1e-2) << "no dropout in a training forward";
    EXPECT_FALSE(at::equal(forward(*model), first)) << "the next forward drew the same masks";
  }

  std::map<std::string, at::Tensor> tensors(model->named_parameters().begin(), model->named_parameters().end());
  auto with = [&](double attn, double resid, double embd, std::map<std::string, at::Tensor> weights) {
    nlohmann::json j = json;
    j.update({{"attn_pdrop", attn}, {"resid_pdrop", resid}, {"embd_pdrop", embd}});
    auto m = CausalLM::FromTensors(*ModelConfig::FromJson(j), std::move(weights), at::kFloat);
    EXPECT_TRUE(m.ok()) << m.status();
    return std::move(*m);
  };
  auto zeroed = [&](std::vector<std::string> names) {
    std::map<std::string, at::Tensor> w;
    for (const auto& [name, t] : tensors) w[name] = t.detach().clone();
    for (const std::string& name : names) w[name].zero_();
    return w;
  };
  at::Tensor no_layers;  // resid_pdrop = 1: ln_f(wte[id] + wpe[p]) · wteᵀ, by hand
  {
    c10::NoGradGuard no_grad;
    const at::Tensor h = at::embedding(tensors["model.embed_tokens.weight"], ids) +
                         at::embedding(tensors["model.embed_positions.weight"], pos);
    no_layers = at::matmul(at::layer_norm(h, {32}, tensors["model.norm.weight"], tensors["model.norm.bias"], 1e-5),
                           tensors["model.embed_tokens.weight"].t());
  }
  std::vector<std::string> v_parts;
  for (int layer = 0; layer < 2; ++layer) {
    v_parts.push_back(absl::StrCat("model.layers.", layer, ".self_attn.v_proj.weight"));
    v_parts.push_back(absl::StrCat("model.layers.", layer, ".self_attn.v_proj.bias"));
  }
  const std::unique_ptr<CausalLM> no_embeddings = with(0, 0, 0, zeroed({"model.embed_tokens.weight", "model.embed_positions.weight"}));
  const std::unique_ptr<CausalLM> no_values = with(0, 0, 0, zeroed(v_parts));
  at::Tensor expect_embd, expect_attn;
  {
    c10::NoGradGuard no_grad;
    // Zero embeddings, but the LM head (tied) is the trained one: logits of the
    // zero-input hidden states through the real head.
    expect_embd = at::matmul(no_embeddings->PackedHidden(PackSequences(seqs)).view({2, 7, -1}),
                             tensors["model.embed_tokens.weight"].t());
    expect_attn = padded(*no_values);
  }
  for (const auto& [attn, resid, embd, expected, what] :
       {std::tuple{0.0, 0.0, 1.0, expect_embd, "embd_pdrop = 1"}, std::tuple{0.0, 1.0, 0.0, no_layers, "resid_pdrop = 1"},
        std::tuple{1.0, 0.0, 0.0, expect_attn, "attn_pdrop = 1"}}) {
    SCOPED_TRACE(what);
    const std::unique_ptr<CausalLM> m = with(attn, resid, embd, tensors);
    m->set_dropout(true);
    EXPECT_LT((padded(*m) - expected).abs().max().item<double>(), 1e-4);
    EXPECT_LT((packed(*m) - expected).abs().max().item<double>(), 1e-4);
    EXPECT_GT((padded(*m) - eval).abs().max().item<double>(), 1e-2);
  }
}

// transformers 5 keeps an MoE layer's experts as two 3-D parameters
// (mlp.experts.gate_up_proj [E, 2I, H], gate rows then up; mlp.experts.down_proj
// [E, H, I]; Mixtral's router under mlp. too): such a checkpoint gives the same model
// as the hub's one tensor per expert; a fused tensor of the wrong shape is named.
TEST(CausalLMTest, TransformersFiveFusedExpertsLoadAsPerExpertTensors) {
  const nlohmann::json base = {{"vocab_size", 97}, {"hidden_size", 32}, {"intermediate_size", 40},
                               {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"num_key_value_heads", 2}};
  nlohmann::json mixtral = base, qwen3 = base;
  mixtral.update({{"model_type", "mixtral"}, {"num_local_experts", 3}, {"num_experts_per_tok", 2}});
  qwen3.update({{"model_type", "qwen3_moe"}, {"num_experts", 4}, {"num_experts_per_tok", 2}, {"moe_intermediate_size", 12},
                {"head_dim", 8}, {"mlp_only_layers", {0}}});
  for (const nlohmann::json& json : {mixtral, qwen3}) {
    auto config = ModelConfig::FromJson(json);
    ASSERT_TRUE(config.ok()) << config.status();
    SCOPED_TRACE(config->model_type);
    const std::unique_ptr<CausalLM> model = RandomWithStd02(*config, 71);
    std::map<std::string, at::Tensor> fused(model->named_parameters().begin(), model->named_parameters().end());
    const std::string moe = config->model_type == "mixtral" ? "block_sparse_moe." : "mlp.";
    for (std::int64_t layer = 0; layer < 2; ++layer) {
      if (!config->is_moe_layer(layer)) continue;
      const std::string p = absl::StrCat("model.layers.", layer, ".");
      std::vector<at::Tensor> gate_up, down;
      for (std::int64_t e = 0; e < config->num_experts; ++e) {
        const std::string expert = absl::StrCat(p, moe, "experts.", e, ".");
        const bool mixtral_names = config->model_type == "mixtral";
        const std::string g = expert + (mixtral_names ? "w1" : "gate_proj"), u = expert + (mixtral_names ? "w3" : "up_proj"),
                          d = expert + (mixtral_names ? "w2" : "down_proj");
        gate_up.push_back(at::cat({fused.at(g + ".weight"), fused.at(u + ".weight")}));
        down.push_back(fused.at(d + ".weight"));
        for (const std::string& n : {g, u, d}) fused.erase(n + ".weight");
      }
      fused[p + "mlp.experts.gate_up_proj"] = at::stack(gate_up);
      fused[p + "mlp.experts.down_proj"] = at::stack(down);
      const at::Tensor router = fused.at(p + moe + "gate.weight");
      fused.erase(p + moe + "gate.weight");
      fused[p + "mlp.gate.weight"] = router;
    }
    auto loaded = CausalLM::FromTensors(*config, fused, at::kFloat);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    const at::Tensor ids = at::randint(config->vocab_size, {2, 7}, at::kLong);
    c10::NoGradGuard no_grad;
    EXPECT_TRUE(at::equal((*loaded)->Forward(ids, Positions(2, 7), at::Tensor(), nullptr),
                          model->Forward(ids, Positions(2, 7), at::Tensor(), nullptr)));
    fused["model.layers.1.mlp.experts.down_proj"] = fused["model.layers.1.mlp.experts.down_proj"].narrow(0, 0, 2);
    EXPECT_THAT(std::string(CausalLM::FromTensors(*config, fused, at::kFloat).status().message()),
                HasSubstr("tensor 'model.layers.1.mlp.experts.down_proj' has shape"));
  }
}

// Training through the experts: in fp64, the gradient autograd gives the router, the
// shared expert's gate and each expert (through the sort, gather and scatter-add of
// the routing) matches central finite differences of the loss along a random direction.
TEST(CausalLMTest, MixtureOfExpertsGradientsMatchFiniteDifferences) {
  const nlohmann::json json = {{"model_type", "qwen2_moe"}, {"vocab_size", 53}, {"hidden_size", 16},
                               {"intermediate_size", 24}, {"num_hidden_layers", 1}, {"num_attention_heads", 2},
                               {"num_key_value_heads", 1}, {"num_experts", 4}, {"num_experts_per_tok", 2},
                               {"moe_intermediate_size", 12}, {"shared_expert_intermediate_size", 8}};
  auto config = ModelConfig::FromJson(json);
  ASSERT_TRUE(config.ok()) << config.status();
  auto model = CausalLM::Random(*config, at::kDouble, 7);
  ASSERT_TRUE(model.ok());
  at::manual_seed(0);
  const at::Tensor ids = at::randint(53, {2, 6}, at::kLong);
  const at::Tensor weights = at::randn({2, 6, 53}, at::TensorOptions().dtype(at::kDouble));
  auto loss = [&] { return ((*model)->Forward(ids, Positions(2, 6), at::Tensor(), nullptr) * weights).sum(); };
  // The router, the shared expert's gate and every routed expert's down_proj (an
  // expert no token chose has no gradient: then the loss must not move along it).
  std::vector<std::pair<std::string, at::Tensor>> checked;
  for (const auto& [name, t] : (*model)->named_parameters()) {
    if (absl::EndsWith(name, "mlp.gate.weight") || absl::EndsWith(name, "shared_expert_gate.weight") ||
        (absl::StrContains(name, "experts.") && absl::EndsWith(name, "down_proj.weight"))) {
      checked.push_back({name, t});
      at::Tensor(t).set_requires_grad(true);
    }
  }
  ASSERT_EQ(checked.size(), 2u + 4u);
  loss().backward();
  int reached_experts = 0;
  for (auto& [name, p] : checked) {
    SCOPED_TRACE(name);
    const at::Tensor grad = p.grad().defined() ? p.grad().clone() : at::zeros_like(p);
    const at::Tensor direction = at::randn(p.sizes(), p.options());
    const double eps = 1e-6;
    c10::NoGradGuard no_grad;
    p.add_(direction, eps);
    const double up = loss().item<double>();
    p.sub_(direction, 2 * eps);
    const double down = loss().item<double>();
    p.add_(direction, eps);
    const double numeric = (up - down) / (2 * eps), analytic = (grad * direction).sum().item<double>();
    if (absl::StrContains(name, "experts.")) reached_experts += p.grad().defined() ? 1 : 0;
    if (!absl::StrContains(name, "experts.")) EXPECT_GT(std::abs(analytic), 1e-6) << "no gradient reached it";
    EXPECT_NEAR(analytic, numeric, 1e-6 * std::max(1.0, std::abs(numeric)));
  }
  EXPECT_GE(reached_experts, 2);  // 12 tokens, 2 experts each
}

// The routers' load-balancing loss (output_router_logits) against transformers'
// load_balancing_loss_func transcribed in llama_reference.py, on two rows
// [prompt + chosen], [prompt + rejected] of one length (every token real), for
// Mixtral, Qwen2-MoE (layer 1 dense: its router-less layer does not count) and
// Qwen3-MoE:
//   - Hidden over the rows;
//   - CompletionLogprobs over the pair, packed with the prompt once (it counts twice)
//     and the completions' last tokens fed too;
//   - a left-padded row counts only its real tokens: as the row alone, packed.
// The loss is differentiable w.r.t. the routers; forwards without a graph (unless
// recorded without_grad, as evaluation does), or with recording off, record nothing;
// the take clears.
TEST(CausalLMTest, RouterLoadBalancingLossMatchesTransformersOnEveryPath) {
  const nlohmann::json base = {{"vocab_size", 97}, {"hidden_size", 32}, {"intermediate_size", 40},
                               {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
                               {"head_dim", 8}, {"rms_norm_eps", 1e-6}, {"rope_theta", 10000.0},
                               {"tie_word_embeddings", false}, {"output_router_logits", true}};
  nlohmann::json mixtral = base, qwen2 = base, qwen3 = base;
  mixtral.update({{"model_type", "mixtral"}, {"num_local_experts", 4}, {"num_experts_per_tok", 2}});
  qwen2.update({{"model_type", "qwen2_moe"}, {"num_experts", 4}, {"num_experts_per_tok", 2}, {"moe_intermediate_size", 24},
                {"shared_expert_intermediate_size", 36}, {"mlp_only_layers", {1}}, {"norm_topk_prob", false}});
  qwen3.update({{"model_type", "qwen3_moe"}, {"num_experts", 6}, {"num_experts_per_tok", 3}, {"moe_intermediate_size", 16},
                {"norm_topk_prob", true}});
  for (const nlohmann::json& json : {mixtral, qwen2, qwen3}) {
    auto config = ModelConfig::FromJson(json);
    ASSERT_TRUE(config.ok()) << config.status();
    SCOPED_TRACE(config->model_type);
    EXPECT_TRUE(config->output_router_logits);
    EXPECT_EQ(config->router_aux_loss_coef, 0.001);
    const std::unique_ptr<CausalLM> model = RandomWithStd02(*config, 17);
    const std::string router = config->model_type == "mixtral" ? "model.layers.0.block_sparse_moe.gate.weight"
                                                               : "model.layers.0.mlp.gate.weight";
    for (auto& [name, param] : model->named_parameters()) {
      if (name == router) param.set_requires_grad(true);
    }
    at::manual_seed(3);
    const at::Tensor prompt = at::randint(config->vocab_size, {4}, at::kLong);
    const at::Tensor chosen = at::randint(config->vocab_size, {5}, at::kLong), rejected = at::randint(config->vocab_size, {5}, at::kLong);
    const at::Tensor ids = at::stack({at::cat({prompt, chosen}), at::cat({prompt, rejected})});  // [2, 9]
    const std::string dir = testing::TempDir(absl::StrCat("aux_", config->model_type));
    ASSERT_TRUE(SaveCausalLM(*model, dir).ok());
    testing::WriteFile(dir + "/config.json", json.dump());
    ASSERT_TRUE(SaveSafetensors(dir + "/ids.safetensors", {{"ids", ids}}).ok());
    std::string out;
    ASSERT_EQ(testing::RunCommand(posttrain::testing::Python() + " " + testing::SourceDir() +
                                      "/tests/framework/model/llama_reference.py " + dir, &out), 0) << out;
    auto file = SafetensorsFile::Open(dir + "/reference_logits.safetensors");
    ASSERT_TRUE(file.ok()) << file.status();
    const double expected = (*file->Get("aux_loss")).item<double>();

    EXPECT_FALSE(model->TakeRouterAuxLoss().defined());
    model->Hidden(ids, Positions(2, 9), at::Tensor(), nullptr);  // recording off
    EXPECT_FALSE(model->TakeRouterAuxLoss().defined());
    model->set_record_router(true);
    {
      c10::NoGradGuard no_grad;  // no graph: nothing to train, nothing recorded
      model->Hidden(ids, Positions(2, 9), at::Tensor(), nullptr);
      EXPECT_FALSE(model->TakeRouterAuxLoss().defined());
      model->set_record_router(true, /*without_grad=*/true);  // an evaluation's forwards
      EXPECT_TRUE(model->records_router());
      model->Hidden(ids, Positions(2, 9), at::Tensor(), nullptr);
      const at::Tensor evaluated = model->TakeRouterAuxLoss();
      ASSERT_TRUE(evaluated.defined());
      EXPECT_NEAR(evaluated.item<double>(), expected, 1e-5);
      model->set_record_router(true);
      EXPECT_FALSE(model->records_router());
    }
    model->Hidden(ids, Positions(2, 9), at::Tensor(), nullptr);
    const at::Tensor rows = model->TakeRouterAuxLoss();
    ASSERT_TRUE(rows.defined());
    EXPECT_NEAR(rows.item<double>(), expected, 1e-5);
    EXPECT_FALSE(model->TakeRouterAuxLoss().defined());  // the take cleared it

    const std::vector<std::int64_t> p(prompt.data_ptr<std::int64_t>(), prompt.data_ptr<std::int64_t>() + 4);
    const std::vector<std::int64_t> c(chosen.data_ptr<std::int64_t>(), chosen.data_ptr<std::int64_t>() + 5);
    const std::vector<std::int64_t> r(rejected.data_ptr<std::int64_t>(), rejected.data_ptr<std::int64_t>() + 5);
    CompletionLogprobs(*model, MakeCompletionBatch({p, p}, {c, r}, at::kCPU), 1.0);
    const at::Tensor pair = model->TakeRouterAuxLoss();
    ASSERT_TRUE(pair.defined());
    EXPECT_NEAR(pair.item<double>(), expected, 1e-5);
    pair.backward();
    for (auto& [name, param] : model->named_parameters()) {
      if (name != router) continue;
      ASSERT_TRUE(param.grad().defined());
      EXPECT_GT(param.grad().abs().max().item<double>(), 0.0);
    }

    // A third row with an empty completion: transformers' loss over the three rows
    // padded (mask 0 on the pads) counts its prompt's tokens; so must the packed pass,
    // where the prompt is computed once for the rows that continue it.
    {
      const at::Tensor three = at::cat({ids, at::cat({prompt, at::zeros({5}, at::kLong)}).unsqueeze(0)});  // [3, 9]
      const at::Tensor three_mask = at::ones({3, 9}, at::kLong);
      three_mask[2].narrow(0, 4, 5).zero_();
      model->Hidden(three, Positions(3, 9), three_mask, nullptr);
      const double padded_rows = model->TakeRouterAuxLoss().item<double>();
      CompletionLogprobs(*model, MakeCompletionBatch({p, p, p}, {c, r, {}}, at::kCPU), 1.0);
      EXPECT_NEAR(model->TakeRouterAuxLoss().item<double>(), padded_rows, 1e-5);
      EXPECT_GT(std::abs(padded_rows - expected), 1e-5) << "the third row's prompt changes the loss";
    }

    // Left padding: [0, 0, 0, row of 6] with mask 0 on the pads gives the row alone's loss.
    const at::Tensor row = ids[0].narrow(0, 3, 6);
    const std::vector<std::int64_t> alone(row.data_ptr<std::int64_t>(), row.data_ptr<std::int64_t>() + 6);
    model->PackedHidden(PackSequences({alone}));
    const double want = model->TakeRouterAuxLoss().item<double>();
    const at::Tensor padded = at::cat({at::zeros({3}, at::kLong), row}).unsqueeze(0);
    const at::Tensor mask = at::cat({at::zeros({3}, at::kLong), at::ones({6}, at::kLong)}).unsqueeze(0);
    const at::Tensor positions = at::cat({at::zeros({3}, at::kLong), at::arange(6, at::kLong)}).unsqueeze(0);
    model->Hidden(padded, positions, mask, nullptr);
    EXPECT_NEAR(model->TakeRouterAuxLoss().item<double>(), want, 1e-5);
    model->Hidden(padded, positions, at::Tensor(), nullptr);  // the pads counted: another value
    EXPECT_GT(std::abs(model->TakeRouterAuxLoss().item<double>() - want), 1e-4);
  }
}

// What the experts' configs must hold, and what they change that posttrain does not
// do (Mixtral's router noise, a load-balancing loss transformers lacks): clear errors.
TEST(CausalLMTest, MixtureOfExpertsConfigErrorsNameTheField) {
  const nlohmann::json base = {{"model_type", "qwen3_moe"}, {"vocab_size", 97}, {"hidden_size", 32},
                               {"intermediate_size", 40}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                               {"num_experts", 4}, {"num_experts_per_tok", 2}, {"moe_intermediate_size", 16}};
  auto message = [&](const char* key, const nlohmann::json& value, const char* model_type = "qwen3_moe") {
    nlohmann::json j = base;
    j["model_type"] = model_type;
    j[key] = value;
    return std::string(ModelConfig::FromJson(j).status().message());
  };
  EXPECT_THAT(message("num_experts_per_tok", 5), HasSubstr("num_experts_per_tok must be between 1 and the 4 experts, got 5"));
  EXPECT_THAT(message("mlp_only_layers", {0, 2}), HasSubstr("mlp_only_layers must hold layer indices in [0, 2), got 2"));
  EXPECT_THAT(message("decoder_sparse_step", 0), HasSubstr("decoder_sparse_step must be positive"));
  EXPECT_THAT(message("output_router_logits", true, "glm4_moe"),
              HasSubstr("output_router_logits = true (glm4_moe has no router load-balancing loss in transformers)"));
  EXPECT_THAT(message("router_aux_loss_coef", -0.5), HasSubstr("router_aux_loss_coef must be a finite number >= 0, got -0.5"));
  EXPECT_THAT(message("output_router_logits", "yes"), HasSubstr("\"output_router_logits\" must be a boolean"));
  {
    nlohmann::json j = base;
    j["output_router_logits"] = true;
    j["router_aux_loss_coef"] = 0.02;
    auto balanced = ModelConfig::FromJson(j);
    ASSERT_TRUE(balanced.ok()) << balanced.status();
    EXPECT_TRUE(balanced->output_router_logits);
    EXPECT_EQ(balanced->router_aux_loss_coef, 0.02);
    const nlohmann::json written = balanced->ToJson();
    EXPECT_EQ(written["output_router_logits"], true);
    EXPECT_EQ(written["router_aux_loss_coef"], 0.02);
    j["model_type"] = "gpt_oss";
    j["num_local_experts"] = j["num_experts"];
    j.erase("num_experts");
    j.erase("moe_intermediate_size");
    j.erase("router_aux_loss_coef");
    auto gpt_oss = ModelConfig::FromJson(j);
    ASSERT_TRUE(gpt_oss.ok()) << gpt_oss.status();
    EXPECT_EQ(gpt_oss->router_aux_loss_coef, 0.9);  // GptOssConfig's default
  }
  EXPECT_THAT(message("router_jitter_noise", 0.1, "mixtral"), HasSubstr("router_jitter_noise = 0.1"));
  EXPECT_THAT(message("num_experts", 4, "llama"), HasSubstr("num_experts = 4 (mixture of experts)"));
  EXPECT_THAT(message("n_routed_experts", 4), HasSubstr("n_routed_experts = 4 (mixture of experts)"));
  nlohmann::json none = base;
  none["num_experts"] = 0;  // Qwen-MoE without experts: the dense MLP everywhere
  auto dense = ModelConfig::FromJson(none);
  ASSERT_TRUE(dense.ok()) << dense.status();
  EXPECT_FALSE(dense->is_moe_layer(0) || dense->is_moe_layer(1));
}

// transformers 5 writes RoPE as one rope_parameters object (rope_theta, rope_type and
// the scaling fields) instead of top-level rope_theta / rope_scaling: both read the
// same; a theta left at the default would rotate by other angles.
TEST(CausalLMTest, TransformersFiveRopeParametersReadLikeRopeThetaAndRopeScaling) {
  const nlohmann::json base = {{"model_type", "llama"}, {"vocab_size", 97}, {"hidden_size", 32},
                               {"intermediate_size", 48}, {"num_hidden_layers", 1}, {"num_attention_heads", 4},
                               {"num_key_value_heads", 4}, {"head_dim", 8}, {"rms_norm_eps", 1e-6},
                               {"max_position_embeddings", 64}};
  const nlohmann::json scaling = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                                  {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 16}};
  nlohmann::json v4 = base, v5 = base;
  v4["rope_theta"] = 500000.0;
  v4["rope_scaling"] = scaling;
  v5["rope_parameters"] = scaling;
  v5["rope_parameters"]["rope_theta"] = 500000.0;
  v5["dtype"] = "bfloat16";
  auto a = ModelConfig::FromJson(v4), b = ModelConfig::FromJson(v5);
  ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
  EXPECT_EQ(b->rope_theta, 500000.0);
  ASSERT_TRUE(b->rope_scaling.has_value());
  EXPECT_EQ(b->rope_scaling->rope_type, "llama3");
  EXPECT_EQ(b->rope_scaling->factor, 8.0);
  EXPECT_EQ(b->rope_scaling->original_max_position_embeddings, 16);
  EXPECT_EQ(b->torch_dtype, "bfloat16");
  auto ma = CausalLM::Random(*a, at::kFloat, 3), mb = CausalLM::Random(*b, at::kFloat, 3);
  ASSERT_TRUE(ma.ok() && mb.ok());
  const at::Tensor ids = at::randint(97, {1, 30}, at::kLong);
  c10::NoGradGuard no_grad;
  EXPECT_EQ(((*ma)->Forward(ids, Positions(1, 30), at::Tensor(), nullptr) -
             (*mb)->Forward(ids, Positions(1, 30), at::Tensor(), nullptr)).abs().max().item<double>(), 0.0);
  // The transcription reads the v5 form too (theta 5e5 and llama3 scaling).
  const std::string dir = testing::TempDir("rope_v5");
  ASSERT_TRUE(SaveCausalLM(**mb, dir).ok());
  testing::WriteFile(dir + "/config.json", v5.dump());
  ASSERT_TRUE(SaveSafetensors(dir + "/ids.safetensors", {{"ids", ids}}).ok());
  std::string out;
  ASSERT_EQ(testing::RunCommand(posttrain::testing::Python() + " " + testing::SourceDir() + "/tests/framework/model/llama_reference.py " + dir, &out), 0) << out;
  auto reference = SafetensorsFile::Open(dir + "/reference_logits.safetensors");
  ASSERT_TRUE(reference.ok());
  EXPECT_LT(((*mb)->Forward(ids, Positions(1, 30), at::Tensor(), nullptr) - *reference->Get("logits")).abs().max().item<double>(), 1e-4);
  nlohmann::json plain = base;
  plain["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 500000.0}};
  EXPECT_EQ(ModelConfig::FromJson(plain)->rope_theta, 500000.0);
  EXPECT_FALSE(ModelConfig::FromJson(plain)->rope_scaling.has_value());
  plain["rope_parameters"]["partial_rotary_factor"] = 0.5;
  EXPECT_THAT(std::string(ModelConfig::FromJson(plain).status().message()), HasSubstr("partial_rotary_factor = 0.5"));
  plain["rope_parameters"] = {{"rope_type", "yarn"}, {"rope_theta", 500000.0}, {"factor", 4.0}};
  EXPECT_EQ(ModelConfig::FromJson(plain)->rope_scaling->rope_type, "yarn");
  plain["rope_parameters"] = {{"rope_type", "proportional"}, {"rope_theta", 500000.0}, {"factor", 4.0}};
  EXPECT_THAT(std::string(ModelConfig::FromJson(plain).status().message()), HasSubstr("rope_parameters type \"proportional\" is not supported"));
}

// Where config.json leaves head_dim out, each family's config class decides:
// LlamaConfig (and Mistral, Qwen2, SmolLM3) hidden_size / num_attention_heads,
// Qwen3Config 128, GemmaConfig 256.
TEST(CausalLMTest, HeadDimDefaultsFollowEachConfigClass) {
  nlohmann::json config = {{"vocab_size", 32}, {"hidden_size", 64}, {"intermediate_size", 32},
                           {"num_hidden_layers", 1}, {"num_attention_heads", 4}};
  for (auto [type, head_dim] : {std::pair{"llama", 16}, {"mistral", 16}, {"qwen2", 16}, {"smollm3", 16},
                                {"qwen3", 128}, {"gemma", 256}}) {
    config["model_type"] = type;
    auto parsed = ModelConfig::FromJson(config);
    ASSERT_TRUE(parsed.ok()) << type << ": " << parsed.status();
    EXPECT_EQ(parsed->head_dim, head_dim) << type;
  }
}

TEST(CausalLMTest, ConfigFieldsThatChangeTheMathsAreRefusedByName) {
  nlohmann::json config = {{"model_type", "qwen3"}, {"vocab_size", 32}, {"hidden_size", 16}, {"intermediate_size", 32},
                           {"num_hidden_layers", 1}, {"num_attention_heads", 2}, {"head_dim", 8}};
  ASSERT_TRUE(ModelConfig::FromJson(config).ok());
  auto refused = [&](const char* key, nlohmann::json value) {
    nlohmann::json c = config;
    c[key] = value;
    absl::StatusOr<ModelConfig> r = ModelConfig::FromJson(c);
    EXPECT_FALSE(r.ok()) << key;
    return r.ok() ? std::string() : std::string(r.status().message());
  };
  EXPECT_NE(refused("mlp_bias", true).find("mlp_bias"), std::string::npos);
  EXPECT_NE(refused("hidden_dropout", 0.1).find("hidden_dropout = 0.1 (dropout in training)"), std::string::npos);
  EXPECT_NE(refused("resid_pdrop", 0.1).find("resid_pdrop"), std::string::npos);
  EXPECT_NE(refused("attention_dropout", 1.5).find("\"attention_dropout\" must be a probability in [0, 1], got 1.5"),
            std::string::npos);
  EXPECT_NE(refused("final_logit_softcapping", 30.0).find("final_logit_softcapping"), std::string::npos);
  EXPECT_NE(refused("num_experts", 8).find("num_experts"), std::string::npos);
  EXPECT_NE(refused("layer_types", nlohmann::json::array({"chunked_attention"})).find("layer_types containing \"chunked_attention\""),
            std::string::npos);
  EXPECT_NE(refused("model_type", "mpt").find("model_type \"mpt\""), std::string::npos);
}

TEST(CausalLMTest, GreedyReproducesLlama2cReferenceExactly) {
  auto model = LoadCausalLM(testing::Stories260KDir(), at::kFloat);
  ASSERT_TRUE(model.ok()) << model.status();
  auto tokenizer = LoadTokenizer(testing::Stories260KDir());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  std::ifstream in(testing::SourceDir() + "/../shared/fixtures/stories260K_greedy_llama2c.jsonl");
  int cases = 0;
  for (std::string line; std::getline(in, line);) {
    nlohmann::json fixture = nlohmann::json::parse(line);
    const auto prompt_ids = fixture["prompt_ids"].get<std::vector<std::int64_t>>();
    EXPECT_EQ((*tokenizer)->Encode(fixture["prompt"].get<std::string>(), true), prompt_ids);
    SamplingParams params;
    params.do_sample = false;
    params.max_new_tokens = fixture["max_positions"].get<std::int64_t>() - static_cast<std::int64_t>(prompt_ids.size());
    params.eos_token_ids = {1};  // run.c stops when the model emits BOS
    auto out = Generate(**model, {prompt_ids}, 1, params, tokenizer->get());
    ASSERT_TRUE(out.ok()) << out.status();
    std::vector<std::int64_t> got = (*out)[0].token_ids;
    if (!got.empty() && got.back() == 1) got.pop_back();
    EXPECT_EQ(got, fixture["greedy_ids"].get<std::vector<std::int64_t>>()) << fixture["prompt"];
    ++cases;
  }
  EXPECT_EQ(cases, 3);
}

TEST(CausalLMTest, ABatchOfDifferentLengthsGivesTheSameGreedyTokensAsEachAlone) {
  auto model = LoadCausalLM(testing::Stories260KDir(), at::kFloat);
  ASSERT_TRUE(model.ok());
  auto tokenizer = LoadTokenizer(testing::Stories260KDir());
  ASSERT_TRUE(tokenizer.ok());
  std::vector<std::vector<std::int64_t>> prompts;
  for (const char* p : {"Once upon a time", "The dog", "Lily and Ben went to the park to play with a big red ball",
                        "One day"}) {
    prompts.push_back((*tokenizer)->Encode(p, true));
  }
  SamplingParams params;
  params.do_sample = false;
  params.max_new_tokens = 40;
  auto batch = Generate(**model, prompts, 1, params, nullptr);
  ASSERT_TRUE(batch.ok());
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto alone = Generate(**model, {prompts[i]}, 1, params, nullptr);
    ASSERT_TRUE(alone.ok());
    EXPECT_EQ((*batch)[i].token_ids, (*alone)[0].token_ids) << "prompt " << i;
    for (size_t t = 0; t < (*alone)[0].logprobs.size(); ++t) {
      EXPECT_NEAR((*batch)[i].logprobs[t], (*alone)[0].logprobs[t], 1e-4);
    }
  }
}

TEST(GenerateCallbackTest, EachGenerationIsHandedOverOnceAsSoonAsItIsFinal) {
  auto model = LoadCausalLM(testing::Stories260KDir(), at::kFloat);
  auto tokenizer = LoadTokenizer(testing::Stories260KDir());
  ASSERT_TRUE(model.ok() && tokenizer.ok());
  SamplingParams params;
  params.max_new_tokens = 24;
  params.seed = 5;
  params.eos_token_ids = {(*tokenizer)->eos_token_id().value()};
  params.stop_strings = {"."};  // many finish early, at different steps
  params.batch_size = 3;
  std::vector<std::pair<size_t, Generation>> seen;
  params.on_finished = [&](size_t index, const Generation& g) { seen.push_back({index, g}); };
  auto out = Generate(**model, {(*tokenizer)->Encode("Once upon a time", true), (*tokenizer)->Encode("The dog", true)},
                      4, params, tokenizer->get());
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(seen.size(), out->size());
  std::vector<bool> once(out->size(), false);
  std::int64_t stopped_early = 0;
  for (const auto& [index, g] : seen) {
    ASSERT_LT(index, out->size());
    EXPECT_FALSE(once[index]) << "handed over twice: " << index;
    once[index] = true;
    EXPECT_EQ(g.token_ids, (*out)[index].token_ids);
    EXPECT_EQ(g.text, (*out)[index].text);
    EXPECT_EQ(g.finish_reason, (*out)[index].finish_reason);
    stopped_early += g.finish_reason == FinishReason::kStop;
  }
  EXPECT_GT(stopped_early, 0);
  // Handed over when final: within a micro-batch (3 rows), in order of length.
  for (size_t k = 1; k < seen.size(); ++k) {
    if (seen[k].first / 3 != seen[k - 1].first / 3) continue;
    EXPECT_GE(seen[k].second.token_ids.size(), seen[k - 1].second.token_ids.size());
  }
}

TEST(CausalLMTest, SaveLoadRoundTripKeepsHfNamesShapesAndValues) {
  auto model = CausalLM::Random(TinyConfig(), at::kBFloat16, 5);
  ASSERT_TRUE(model.ok());
  const std::string dir = testing::TempDir("roundtrip");
  ASSERT_TRUE(SaveCausalLM(**model, dir).ok());
  nlohmann::json config = nlohmann::json::parse(testing::ReadFile(dir + "/config.json"));
  EXPECT_EQ(config["architectures"][0], "LlamaForCausalLM");
  EXPECT_EQ(config["torch_dtype"], "bfloat16");
  EXPECT_EQ(config["num_key_value_heads"], 2);
  auto file = SafetensorsFile::Open(dir + "/model.safetensors");
  ASSERT_TRUE(file.ok());
  EXPECT_TRUE(file->Contains("model.layers.1.self_attn.k_proj.weight"));
  EXPECT_EQ(file->Get("model.layers.1.self_attn.k_proj.weight")->sizes(), at::IntArrayRef({16, 32}));
  auto loaded = LoadCausalLM(dir, at::kBFloat16);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  for (size_t i = 0; i < (*model)->named_parameters().size(); ++i) {
    EXPECT_EQ((*loaded)->named_parameters()[i].first, (*model)->named_parameters()[i].first);
    EXPECT_TRUE(at::equal((*loaded)->named_parameters()[i].second, (*model)->named_parameters()[i].second));
  }
}

TEST(CausalLMTest, CheckpointMismatchesAreNamed) {
  auto model = CausalLM::Random(TinyConfig(), at::kFloat, 5);
  std::map<std::string, at::Tensor> tensors((*model)->named_parameters().begin(), (*model)->named_parameters().end());
  auto wrong = tensors;
  wrong["model.layers.0.mlp.up_proj.weight"] = at::zeros({48, 31});
  EXPECT_THAT(std::string(CausalLM::FromTensors(TinyConfig(), wrong, at::kFloat).status().message()),
              HasSubstr("tensor 'model.layers.0.mlp.up_proj.weight' has shape [48, 31], config.json implies [48, 32]"));
  auto missing = tensors;
  missing.erase("model.norm.weight");
  EXPECT_THAT(std::string(CausalLM::FromTensors(TinyConfig(), missing, at::kFloat).status().message()),
              HasSubstr("lacks tensor 'model.norm.weight'"));
  auto extra = tensors;
  extra["score.weight"] = at::zeros({1, 32});
  EXPECT_THAT(std::string(CausalLM::FromTensors(TinyConfig(), extra, at::kFloat).status().message()),
              HasSubstr("does not use: score.weight"));
}

TEST(Llama2cTest, TruncatedCheckpointIsDataLoss) {
  const std::string dir = testing::TempDir("l2c");
  std::string bytes = testing::ReadFile(testing::RepoDataPath("stories260K.bin"));
  testing::WriteFile(dir + "/cut.bin", bytes.substr(0, bytes.size() / 2));
  absl::Status s = ReadLlama2cCheckpoint(dir + "/cut.bin").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(s.message()), HasSubstr("(truncated?)"));
}

// attention_bias where the family's attention is LlamaAttention (Llama, Qwen3, Gemma):
// q, k, v and o_proj all carry a bias (o_proj = nn.Linear(..., bias=
// config.attention_bias)); every path (the fused decode step included) against
// llama_reference.py with random biases, saved and loaded back. Qwen2's o_proj has none; MistralConfig has no
// attention_bias, so an extra one is ignored.
TEST(CausalLMTest, AttentionBiasPutsABiasOnOProjWhereLlamaAttentionDoes) {
  for (const char* type : {"llama", "qwen3", "gemma"}) {
    SCOPED_TRACE(type);
    const nlohmann::json json = {{"model_type", type}, {"vocab_size", 97}, {"hidden_size", 32}, {"intermediate_size", 48},
                                 {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
                                 {"head_dim", 8}, {"attention_bias", true}, {"max_position_embeddings", 64}};
    auto config = ModelConfig::FromJson(json);
    ASSERT_TRUE(config.ok()) << config.status();
    EXPECT_TRUE(config->attention_bias && config->output_bias);
    const std::unique_ptr<CausalLM> model = std::string(type) == "gemma" ? RandomGemmaWithStd02(*config, 181)
                                                                          : RandomWithStd02(*config, 181);
    RandomizeBiasesAndNorms(*model, 182, 0.5);
    std::map<std::string, at::Tensor> tensors(model->named_parameters().begin(), model->named_parameters().end());
    ASSERT_EQ(tensors.count("model.layers.1.self_attn.o_proj.bias"), 1u);
    const at::Tensor ids = at::randint(config->vocab_size, {2, 7}, at::kLong);
    const at::Tensor expected = PythonReferenceLogits(*model, ids, absl::StrCat("py_o_bias_", type));
    ASSERT_TRUE(expected.defined());
    ExpectEveryPathGives(*model, ids, expected, /*prefill=*/3, /*decode_step=*/true);  // the fused step adds it too
    const std::string dir = testing::TempDir(absl::StrCat("o_bias_", type));
    ASSERT_TRUE(SaveCausalLM(*model, dir).ok());
    ExpectLoadedBackGivesTheSameLogits(*model, dir, ids);
  }
  nlohmann::json qwen2 = {{"model_type", "qwen2"}, {"vocab_size", 97}, {"hidden_size", 32}, {"intermediate_size", 48},
                          {"num_hidden_layers", 2}, {"num_attention_heads", 4}};
  auto q2 = ModelConfig::FromJson(qwen2);
  ASSERT_TRUE(q2.ok());
  EXPECT_TRUE(q2->attention_bias);
  EXPECT_FALSE(q2->output_bias);
  nlohmann::json mistral = qwen2;
  mistral["model_type"] = "mistral";
  mistral["attention_bias"] = true;
  auto m = ModelConfig::FromJson(mistral);
  ASSERT_TRUE(m.ok());
  EXPECT_FALSE(m->attention_bias || m->output_bias);
}

// The fuzzer's input (tests/fuzz/regressions/model_config_yarn_without_rope): a GPT-2
// config with a yarn rope_scaling and an odd head_dim built its yarn table and threw
// from the constructor. GPT-2 has no RoPE: the scaling is an extra, ignored. A RoPE
// family with an odd rotated width and yarn (transformers' ramp fails there too) is
// an error naming it.
TEST(CausalLMTest, RopeScalingOfAModelWithoutRopeIsIgnored) {
  const nlohmann::json fuzzed = nlohmann::json::parse(
      testing::ReadFile(testing::SourceDir() + "/tests/fuzz/regressions/model_config_yarn_without_rope"));
  auto config = ModelConfig::FromJson(fuzzed);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_FALSE(config->rope_scaling.has_value());
  EXPECT_TRUE(CausalLM::Random(*config, at::kFloat, 1).ok());
  const nlohmann::json glm = {{"model_type", "glm4_moe"}, {"vocab_size", 97}, {"hidden_size", 32}, {"intermediate_size", 48},
                              {"moe_intermediate_size", 16}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                              {"head_dim", 10}, {"partial_rotary_factor", 0.5}, {"n_routed_experts", 4},
                              {"num_experts_per_tok", 2},
                              {"rope_scaling", {{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 16}}}};
  EXPECT_THAT(std::string(ModelConfig::FromJson(glm).status().message()),
              HasSubstr("yarn RoPE needs an even number of rotated dimensions per head, got 5"));
}

// TRL's tiny test models (trl-internal-testing/tiny-*, scripts/generate_tiny_models.py):
// each family's config class given hidden_size 8, 4 heads, 2 key/value heads, 2 layers,
// intermediate_size 32 (head_dim 2: one rotated pair; Gemma's own head_dim 256),
// weights at std 0.2. Each against its fp64 transcription on every path it has, the
// fused decode step included where the family runs it, and that step's bf16 products
// against its fp32 ones (to bf16's resolution) where the CPU has AVX512-BF16.
TEST(CausalLMTest, TrlTinyShapesMatchTheTranscriptionsOnEveryPath) {
  const nlohmann::json tiny = {{"vocab_size", 97}, {"hidden_size", 8}, {"num_attention_heads", 4},
                               {"num_key_value_heads", 2}, {"num_hidden_layers", 2}, {"intermediate_size", 32}};
  const std::vector<std::pair<std::string, std::string>> families = {
      {"llama", "llama_reference.py"},   {"mistral", "llama_reference.py"}, {"qwen2", "llama_reference.py"},
      {"qwen3", "llama_reference.py"},   {"gemma", "llama_reference.py"},   {"gemma2", "llama_reference.py"},
      {"phi3", "llama_reference.py"},    {"qwen3_moe", "llama_reference.py"}, {"cohere", "cohere_reference.py"},
      {"cohere2", "cohere_reference.py"}, {"gpt2", "gpt2_reference.py"},   {"opt", "opt_reference.py"}};
  for (const auto& [type, script] : families) {
    SCOPED_TRACE(type);
    nlohmann::json json = tiny;
    json["model_type"] = type;
    if (type == "qwen3_moe") {
      json["num_experts"] = 4;
      json["num_experts_per_tok"] = 2;
    }
    if (type == "opt") json["ffn_dim"] = 32;  // OPTConfig's default 3072 is only slower here
    auto config = ModelConfig::FromJson(json);
    ASSERT_TRUE(config.ok()) << config.status();
    const std::unique_ptr<CausalLM> model = RandomWithStd02(*config, 171);
    RandomizeBiasesAndNorms(*model, 172, 0.5);
    const std::int64_t B = 2, T = 7;
    const at::Tensor ids = at::randint(config->vocab_size, {B, T}, at::kLong);
    const at::Tensor expected = PythonReferenceLogits(*model, ids, "py_trl_tiny_" + type, nullptr, script);
    ASSERT_TRUE(expected.defined());
    ExpectEveryPathGives(*model, ids, expected, /*prefill=*/3, /*decode_step=*/model->CanDecodeStep());
    const std::shared_ptr<const CausalLM::DecodeWeights> bf16 = model->Bf16DecodeWeights();
    if (!model->CanDecodeStep() || bf16 == nullptr) continue;
    c10::InferenceMode inference;
    KVCache cache = model->NewCache(B, T);
    for (std::int64_t t = 0; t < T; ++t) {
      const at::Tensor step =
          model->DecodeStep({ids[0][t].item<std::int64_t>(), ids[1][t].item<std::int64_t>()}, {t, t}, {0, 0}, &cache, bf16.get());
      const at::Tensor want = expected.select(1, t);
      EXPECT_LT((step - want).abs().max().item<double>(), 0.02 * want.abs().max().item<double>() + 0.05) << "bf16, position " << t;
    }
  }
}

}  // namespace
}  // namespace posttrain

// The fused batch-1 decode step (model/decode_step.cc) against the libtorch path
// (CausalLM::Forward with a KV cache), which shares no code with it: logits and
// cache contents agree over several steps, with GQA, q/k/v biases, and with a
// left-padded prompt (attention starting at first_slot).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "posttrain/model/bf16_rows.h"
#include "posttrain/model/causal_lm.h"
#include "posttrain/model/hf_model.h"
#include "posttrain/model/safetensors.h"
#include "test_support.h"

namespace posttrain {
namespace {

KVCache CopyCache(const KVCache& c) {
  KVCache out = c;
  for (auto& k : out.keys) k = k.clone();
  for (auto& v : out.values) v = v.clone();
  return out;
}

// hidden 40 (not a multiple of the AVX2 width: the tails count) runs every product
// on one thread; hidden 200 is large enough for the row-parallel path.
void Check(std::int64_t pad, std::int64_t hidden = 40) {
  ModelConfig c = testing::TinyTrainerModelConfig();
  c.attention_bias = true;
  c.hidden_size = hidden;
  c.intermediate_size = hidden + 12;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = hidden / 4;
  auto model = CausalLM::Random(c, at::kFloat, 3);
  ASSERT_TRUE(model.ok());
  for (const auto& [name, p] : (*model)->named_parameters()) {
    if (name.find("bias") != std::string::npos || name.find("norm") != std::string::npos) p.uniform_(0.5, 1.5);
  }
  const CausalLM& m = **model;
  ASSERT_TRUE(m.CanDecodeStep());
  c10::InferenceMode inference;
  const std::int64_t prompt = 6, steps = 5, T = pad + prompt;
  at::Tensor ids = at::randint(3, 61, {1, T}, at::kLong);
  at::Tensor mask = at::ones({1, T + steps}, at::kLong);
  mask.narrow(1, 0, pad).zero_();
  at::Tensor pos = at::zeros({1, T}, at::kLong);
  pos.narrow(1, pad, prompt).copy_(at::arange(prompt, at::kLong));
  KVCache torch_cache = m.NewCache(1, T + steps);
  at::Tensor logits = m.Forward(ids, pos, mask.narrow(1, 0, T), &torch_cache).select(1, T - 1)[0];
  KVCache fused_cache = CopyCache(torch_cache);
  std::int64_t token = logits.argmax().item<std::int64_t>();
  for (std::int64_t t = 0; t < steps; ++t) {
    const at::Tensor expected =
        m.Forward(at::full({1, 1}, token, at::kLong), at::full({1, 1}, prompt + t, at::kLong),
                  mask.narrow(1, 0, T + t + 1), &torch_cache)[0][0];
    const at::Tensor got = m.DecodeStep({token}, {prompt + t}, {pad}, &fused_cache)[0];
    ASSERT_EQ(got.sizes(), expected.sizes());
    EXPECT_LT((got - expected).abs().max().item<double>(), 1e-4) << "pad " << pad << " step " << t;
    EXPECT_EQ(fused_cache.length, torch_cache.length);
    for (size_t l = 0; l < torch_cache.keys.size(); ++l) {
      EXPECT_LT((fused_cache.keys[l] - torch_cache.keys[l]).abs().max().item<double>(), 1e-5);
      EXPECT_LT((fused_cache.values[l] - torch_cache.values[l]).abs().max().item<double>(), 1e-5);
    }
    token = expected.argmax().item<std::int64_t>();
  }
}

TEST(DecodeStepTest, EqualsTheLibtorchPathWithACache) { Check(0); }
TEST(DecodeStepTest, SkipsLeftPaddingFromFirstSlot) { Check(3); }
TEST(DecodeStepTest, RowParallelProductsGiveTheSameLogits) { Check(2, 200); }

// Seven sequences of different prompt lengths, left-padded into one cache, decoded
// together: each row equals the libtorch path's row. (Seven: the AVX-512 products
// take sequences 4 at a time and weight rows 4 at a time; hidden 50 leaves a tail of
// both rows and columns.)
TEST(DecodeStepTest, ABatchOfLeftPaddedSequencesEqualsTheLibtorchPath) {
  for (std::int64_t hidden : {40, 50, 200}) {
    ModelConfig c = testing::TinyTrainerModelConfig();
    c.hidden_size = hidden;
    c.intermediate_size = hidden + 12;
    c.head_dim = hidden / 4;
    auto model = CausalLM::Random(c, at::kFloat, 9);
    const CausalLM& m = **model;
    c10::InferenceMode inference;
    const std::vector<std::int64_t> lengths = {4, 6, 5, 6, 3, 6, 2};
    const std::int64_t B = 7, T = 6, steps = 4;
    at::Tensor ids = at::randint(3, 61, {B, T}, at::kLong);
    at::Tensor mask = at::ones({B, T + steps}, at::kLong), pos = at::zeros({B, T}, at::kLong);
    std::vector<std::int64_t> first_slots;
    for (std::int64_t b = 0; b < B; ++b) {
      const std::int64_t pad = T - lengths[b];
      mask[b].narrow(0, 0, pad).zero_();
      pos[b].narrow(0, pad, lengths[b]).copy_(at::arange(lengths[b], at::kLong));
      first_slots.push_back(pad);
    }
    KVCache torch_cache = m.NewCache(B, T + steps);
    at::Tensor next = m.Forward(ids, pos, mask.narrow(1, 0, T), &torch_cache).select(1, T - 1).argmax(-1);
    KVCache fused_cache = CopyCache(torch_cache);
    for (std::int64_t t = 0; t < steps; ++t) {
      std::vector<std::int64_t> tokens, positions;
      for (std::int64_t b = 0; b < B; ++b) {
        tokens.push_back(next[b].item<std::int64_t>());
        positions.push_back(lengths[b] + t);
      }
      const at::Tensor expected = m.Forward(next.unsqueeze(1), at::tensor(positions, at::kLong).unsqueeze(1),
                                            mask.narrow(1, 0, T + t + 1), &torch_cache).select(1, 0);
      const at::Tensor got = m.DecodeStep(tokens, positions, first_slots, &fused_cache);
      EXPECT_LT((got - expected).abs().max().item<double>(), 1e-4) << "hidden " << hidden << " step " << t;
      next = expected.argmax(-1);
    }
  }
}

// bf16 products (Bf16DecodeWeights) against the independent transcription of the
// Llama forward with every linear layer's operands rounded to bf16 and fp32 sums
// (llama_reference.py --bf16-products): stories260K decodes five sequences token by
// token from an empty cache (every position through the bf16 path; five: blocks of
// four inputs and a tail). The two differ by fp32 summation order (and by the bf16
// roundings that order flips); the fp32 products differ from the transcription by
// bf16's rounding everywhere.
TEST(DecodeStepTest, Bf16ProductsEqualATranscriptionWithBf16Operands) {
  if (!internal::Bf16RowDotsInHardware()) GTEST_SKIP() << "no AVX512-BF16 on this CPU: DecodeStep keeps fp32 products";
  auto loaded = LoadCausalLM(testing::Stories260KDir(), at::kFloat);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const CausalLM& m = **loaded;
  const std::shared_ptr<const CausalLM::DecodeWeights> bf16 = m.Bf16DecodeWeights();
  ASSERT_NE(bf16, nullptr);
  c10::InferenceMode inference;
  at::manual_seed(5);
  const std::int64_t B = 5, T = 12;
  const at::Tensor ids = at::randint(3, 512, {B, T}, at::kLong);
  KVCache bf16_cache = m.NewCache(B, T), fp32_cache = m.NewCache(B, T);
  std::vector<at::Tensor> bf16_logits, fp32_logits;
  const std::vector<std::int64_t> first_slots(B, 0);
  for (std::int64_t t = 0; t < T; ++t) {
    std::vector<std::int64_t> tokens, positions(B, t);
    for (std::int64_t b = 0; b < B; ++b) tokens.push_back(ids[b][t].item<std::int64_t>());
    bf16_logits.push_back(m.DecodeStep(tokens, positions, first_slots, &bf16_cache, bf16.get()));
    fp32_logits.push_back(m.DecodeStep(tokens, positions, first_slots, &fp32_cache));
  }
  const std::string dir = testing::TempDir("decode_bf16");
  namespace fs = std::filesystem;
  for (const char* file : {"config.json", "model.safetensors"}) {
    fs::copy_file(testing::Stories260KDir() + "/" + file, dir + "/" + file, fs::copy_options::overwrite_existing);
  }
  ASSERT_TRUE(SaveSafetensors(dir + "/ids.safetensors", {{"ids", ids}}).ok());
  std::string log;
  ASSERT_EQ(testing::RunCommand(testing::Python() + " " + testing::SourceDir() +
                                    "/tests/framework/model/llama_reference.py " + dir + " --bf16-products 2>&1",
                                &log),
            0)
      << log;
  auto file = SafetensorsFile::Open(dir + "/reference_logits.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  const at::Tensor reference = *file->Get("logits");  // [B, T, vocab]
  const at::Tensor ours = at::stack(bf16_logits, 1), fp32 = at::stack(fp32_logits, 1);
  const at::Tensor diff = (ours - reference).abs(), fp32_diff = (fp32 - reference).abs();
  const double median = diff.median().item<double>(), fp32_median = fp32_diff.median().item<double>();
  std::printf("|bf16 products - transcription|: median %.3g, max %.3g; |fp32 products - transcription|: median %.3g, "
              "max %.3g (max |logit| %.3g)\n",
              median, diff.max().item<double>(), fp32_median, fp32_diff.max().item<double>(),
              reference.abs().max().item<double>());
  // Most logits agree to fp32's rounding (seen: medians 2e-7 to 6e-6 over six seeds,
  // the fp32 products' 0.011 to 0.013). Summation order can flip a bf16 rounding of
  // an input; where one does early, later positions of that sequence move by up to
  // bf16's resolution (seen: max 0.03 to 0.05 at |logit| 17, the fp32 products' 0.08
  // to 0.11), so the max is held to that scale only. A wrong matrix, or a missed
  // rounding of the inputs, moves every logit.
  EXPECT_LT(median, 1e-4);
  EXPECT_GT(fp32_median, 100 * median);
  EXPECT_LT(diff.max().item<double>(), 0.1);
}

TEST(DecodeStepTest, RefusesWhatItCannotRun) {
  auto model = CausalLM::Random(testing::TinyTrainerModelConfig(), at::kFloat, 3);
  KVCache two = (*model)->NewCache(2, 8);
  EXPECT_THROW((*model)->DecodeStep({1}, {0}, {0}, &two), c10::Error);  // batch mismatch
  KVCache one = (*model)->NewCache(1, 8);
  EXPECT_THROW((*model)->DecodeStep({999}, {0}, {0}, &one), c10::Error);
  EXPECT_THROW((*model)->DecodeStep({1, 2}, {0}, {0, 0}, &one), c10::Error);
  auto bf16 = CausalLM::Random(testing::TinyTrainerModelConfig(), at::kBFloat16, 3);
  EXPECT_FALSE((*bf16)->CanDecodeStep());
}

}  // namespace
}  // namespace posttrain

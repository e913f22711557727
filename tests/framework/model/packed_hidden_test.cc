// The padding-free path (CausalLM::PackedHidden, PackCompletionBatch) against the
// padded one (CausalLM::Hidden: dense [B, T, S] mask, one softmax over every key),
// which shares no attention code with it: values and parameter gradients agree
// within 1e-5 in fp32 for independent sequences, for prompts shared by several
// completions, for tiles of queries (a sequence longer than one tile) and with GQA
// and q/k/v biases.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "posttrain/generation/logprobs.h"
#include "posttrain/model/causal_lm.h"
#include "test_support.h"

namespace posttrain {
namespace {

std::unique_ptr<CausalLM> Model(bool bias) {
  ModelConfig c = testing::TinyTrainerModelConfig();
  c.attention_bias = bias;
  c.max_position_embeddings = 4096;
  auto model = CausalLM::Random(c, at::kFloat, 11);
  EXPECT_TRUE(model.ok());
  for (const auto& [name, p] : (*model)->named_parameters()) {
    // Non-trivial norms and biases, so that a wrong broadcast shows.
    if (name.find("norm") != std::string::npos || name.find("bias") != std::string::npos) {
      p.uniform_(0.5, 1.5);
    }
    p.set_requires_grad(true);
  }
  return std::move(*model);
}

std::vector<std::int64_t> Tokens(std::int64_t n, std::int64_t seed) {
  std::vector<std::int64_t> out;
  for (std::int64_t i = 0; i < n; ++i) out.push_back((i * 7 + seed * 13 + (i * i) % 5) % 61);
  return out;
}

// Hidden states of each sequence alone, through the padded path: [len, H] each.
std::vector<at::Tensor> PaddedHidden(const CausalLM& model, const std::vector<std::vector<std::int64_t>>& seqs) {
  std::int64_t longest = 0;
  for (const auto& s : seqs) longest = std::max<std::int64_t>(longest, static_cast<std::int64_t>(s.size()));
  const auto B = static_cast<std::int64_t>(seqs.size());
  at::Tensor ids = at::zeros({B, longest}, at::kLong), mask = at::zeros({B, longest}, at::kLong);
  for (std::int64_t b = 0; b < B; ++b) {
    for (size_t t = 0; t < seqs[b].size(); ++t) {
      ids[b][static_cast<std::int64_t>(t)] = seqs[b][t];
      mask[b][static_cast<std::int64_t>(t)] = 1;
    }
  }
  at::Tensor pos = at::arange(longest, at::kLong).unsqueeze(0).expand({B, longest}).contiguous();
  at::Tensor h = model.Hidden(ids, pos, mask, nullptr);
  std::vector<at::Tensor> out;
  for (std::int64_t b = 0; b < B; ++b) out.push_back(h[b].narrow(0, 0, static_cast<std::int64_t>(seqs[b].size())));
  return out;
}

std::vector<at::Tensor> Gradients(const CausalLM& model, const at::Tensor& loss) {
  for (const at::Tensor& p : model.parameters()) p.mutable_grad() = at::Tensor();
  loss.backward();
  std::vector<at::Tensor> out;
  for (const at::Tensor& p : model.parameters()) out.push_back(p.grad().defined() ? p.grad().clone() : at::zeros_like(p));
  return out;
}

// Gradients sum over every token, so they are compared relative to their size:
// max |a - b| <= tol * max(1, max |b|).
void ExpectClose(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b, double tol, const char* what) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    const double scale = std::max(1.0, b[i].abs().max().item<double>());
    EXPECT_LT((a[i] - b[i]).abs().max().item<double>(), tol * scale) << what << " " << i << " (scale " << scale << ")";
  }
}

TEST(PackedHiddenTest, IndependentSequencesEqualThePaddedPathInValueAndGradient) {
  for (bool bias : {false, true}) {
    auto model = Model(bias);
    // 1,100 tokens at 4 heads is more than one tile of queries (PackedAttention).
    const std::vector<std::vector<std::int64_t>> seqs = {Tokens(5, 1), Tokens(1, 2), Tokens(1100, 3), Tokens(17, 4)};
    const at::Tensor weights = at::randn({1100 + 23, 16});
    std::vector<at::Tensor> padded = PaddedHidden(*model, seqs);
    const at::Tensor expected = at::cat(padded, 0);
    const auto expected_grads = Gradients(*model, (expected * weights).sum());
    const at::Tensor packed = model->PackedHidden(PackSequences(seqs));
    ASSERT_EQ(packed.sizes(), expected.sizes());
    EXPECT_LT((packed - expected).abs().max().item<double>(), 1e-5) << "bias " << bias;
    // Weight gradients are fp32 sums over 1,123 tokens taken in a different order
    // (and OpenBLAS blocks them by the threads it gets, so a loaded machine moves
    // the rounding): ~1e-5 seen, 2e-5 allowed.
    ExpectClose(Gradients(*model, (packed * weights).sum()), expected_grads, 2e-5, "gradient");
  }
}

TEST(PackedHiddenTest, ASharedPrefixEqualsEachSequenceComputedWhole) {
  auto model = Model(true);
  const std::vector<std::int64_t> prompt = Tokens(9, 5), a = Tokens(6, 6), b = Tokens(3, 7), other = Tokens(4, 8);
  // Stream: prompt | a (after prompt) | other (alone) | b (after prompt).
  std::vector<std::int64_t> ids = prompt, pos;
  for (std::int64_t t = 0; t < 9; ++t) pos.push_back(t);
  for (size_t t = 0; t < a.size(); ++t) ids.push_back(a[t]), pos.push_back(9 + static_cast<std::int64_t>(t));
  for (size_t t = 0; t < other.size(); ++t) ids.push_back(other[t]), pos.push_back(static_cast<std::int64_t>(t));
  for (size_t t = 0; t < b.size(); ++t) ids.push_back(b[t]), pos.push_back(9 + static_cast<std::int64_t>(t));
  PackedSequences p;
  p.input_ids = at::tensor(ids, at::kLong);
  p.position_ids = at::tensor(pos, at::kLong);
  p.offsets = {0, 9, 15, 19, 22};
  p.prefix = {-1, 0, -1, 0};
  const at::Tensor packed = model->PackedHidden(p);

  auto join = [](std::vector<std::int64_t> x, const std::vector<std::int64_t>& y) {
    x.insert(x.end(), y.begin(), y.end());
    return x;
  };
  std::vector<at::Tensor> whole = PaddedHidden(*model, {join(prompt, a), other, join(prompt, b)});
  // The prompt's states come from the first whole sequence; each continuation's
  // from the positions after the prompt.
  const at::Tensor expected =
      at::cat({whole[0].narrow(0, 0, 9), whole[0].narrow(0, 9, 6), whole[1], whole[2].narrow(0, 9, 3)}, 0);
  EXPECT_LT((packed - expected).abs().max().item<double>(), 1e-5);
  // And the prompt's states are the same under either continuation.
  EXPECT_LT((whole[0].narrow(0, 0, 9) - whole[2].narrow(0, 0, 9)).abs().max().item<double>(), 1e-6);

  const at::Tensor weights = at::randn({22, 16});
  // Gradient of the shared prompt: the sum of what each whole sequence sends it.
  const at::Tensor prompt_weights = weights.narrow(0, 0, 9);
  const at::Tensor expected_loss = (whole[0].narrow(0, 0, 9) * prompt_weights).sum() +
                                   (whole[0].narrow(0, 9, 6) * weights.narrow(0, 9, 6)).sum() +
                                   (whole[1] * weights.narrow(0, 15, 4)).sum() +
                                   (whole[2].narrow(0, 9, 3) * weights.narrow(0, 19, 3)).sum();
  const auto expected_grads = Gradients(*model, expected_loss);
  ExpectClose(Gradients(*model, (packed * weights).sum()), expected_grads, 1e-5, "gradient");
}

// A DPO-like stream: prompts shared by two continuations each, and independent
// sequences, with and without a sliding window shorter than the sequences (so that a
// continuation's window reaches back into its prompt); against each sequence computed
// whole through the padded path, in value and gradients.
TEST(PackedHiddenTest, SharedPromptsAndAWindowEqualEachSequenceComputedWhole) {
  for (std::int64_t window : {0, 6}) {
    ModelConfig c = testing::TinyTrainerModelConfig();
    c.attention_bias = true;
    c.max_position_embeddings = 4096;
    if (window > 0) c.sliding_window = window;
    auto created = CausalLM::Random(c, at::kFloat, 12);
    ASSERT_TRUE(created.ok());
    std::unique_ptr<CausalLM> model = std::move(*created);
    for (const auto& [name, param] : model->named_parameters()) {
      if (name.find("norm") != std::string::npos || name.find("bias") != std::string::npos) param.uniform_(0.5, 1.5);
      param.set_requires_grad(true);
    }
    // Stream: three prompts (20-22 tokens), each followed by two continuations
    // (10-14), then three independent sequences (29-31).
    PackedSequences p;
    std::vector<std::int64_t> ids, pos;
    std::vector<std::vector<std::int64_t>> whole;  // what each packed sequence's rows are the end of
    std::vector<std::pair<std::int64_t, std::int64_t>> rows;  // (whole sequence, first row in it)
    p.offsets = {0};
    auto append = [&](const std::vector<std::int64_t>& tokens, std::int64_t first_position, std::int64_t prefix) {
      for (size_t t = 0; t < tokens.size(); ++t) {
        ids.push_back(tokens[t]);
        pos.push_back(first_position + static_cast<std::int64_t>(t));
      }
      p.offsets.push_back(static_cast<std::int64_t>(ids.size()));
      p.prefix.push_back(prefix);
    };
    std::int64_t seed = 20;
    for (std::int64_t prompt_length : {20, 22, 21}) {
      const std::vector<std::int64_t> prompt = Tokens(prompt_length, ++seed);
      const auto prompt_index = static_cast<std::int64_t>(p.offsets.size()) - 1;
      append(prompt, 0, -1);
      rows.push_back({static_cast<std::int64_t>(whole.size()), 0});
      for (std::int64_t continuation_length : {10 + prompt_length % 3, 14 - prompt_length % 3}) {
        const std::vector<std::int64_t> continuation = Tokens(continuation_length, ++seed);
        append(continuation, prompt_length, prompt_index);
        std::vector<std::int64_t> joined = prompt;
        joined.insert(joined.end(), continuation.begin(), continuation.end());
        rows.push_back({static_cast<std::int64_t>(whole.size()), prompt_length});
        whole.push_back(joined);
      }
      rows[rows.size() - 3].first = static_cast<std::int64_t>(whole.size()) - 1;  // the prompt: from its last continuation
    }
    for (std::int64_t length : {30, 29, 31}) {
      whole.push_back(Tokens(length, ++seed));
      append(whole.back(), 0, -1);
      rows.push_back({static_cast<std::int64_t>(whole.size()) - 1, 0});
    }
    p.input_ids = at::tensor(ids, at::kLong);
    p.position_ids = at::tensor(pos, at::kLong);
    const at::Tensor packed = model->PackedHidden(p);

    const std::vector<at::Tensor> padded = PaddedHidden(*model, whole);
    std::vector<at::Tensor> parts;
    for (std::int64_t s = 0; s < p.num_sequences(); ++s) {
      const auto& [w, first] = rows[static_cast<size_t>(s)];
      parts.push_back(padded[static_cast<size_t>(w)].narrow(0, first, p.length(s)));
    }
    const at::Tensor expected = at::cat(parts, 0);
    ASSERT_EQ(packed.sizes(), expected.sizes());
    EXPECT_LT((packed - expected).abs().max().item<double>(), 1e-5) << "window " << window;
    const at::Tensor weights = at::randn(expected.sizes());
    const auto expected_grads = Gradients(*model, (expected * weights).sum());
    ExpectClose(Gradients(*model, (packed * weights).sum()), expected_grads, 2e-5, window > 0 ? "window" : "gradient");
  }
}

TEST(PackedHiddenTest, CompletionLogprobsWithSharedPromptsEqualFullLogitsOnPaddedRows) {
  auto model = Model(false);
  const std::vector<std::int64_t> p1 = Tokens(7, 1), p2 = Tokens(3, 2);
  // DPO-like (two completions per prompt), a single-token completion, an empty one.
  const std::vector<std::vector<std::int64_t>> prompts = {p1, p2, p1, p2, p1};
  const std::vector<std::vector<std::int64_t>> completions = {Tokens(5, 3), Tokens(8, 4), Tokens(2, 5), Tokens(1, 6), {}};
  const CompletionBatch batch = MakeCompletionBatch(prompts, completions, at::kCPU);

  std::vector<std::int64_t> predicting;
  const PackedSequences packed = PackCompletionBatch(batch, &predicting);
  EXPECT_EQ(packed.input_ids.size(0), 7 + 3 + 4 + 7 + 1) << "each prompt once, completions without their last token";

  // Plain: padded rows, full [N, L, V] logits, log_softmax, gather, mask.
  const std::int64_t n = batch.input_ids.size(0), L = batch.input_ids.size(1), C = batch.completion_mask.size(1);
  at::Tensor pos = at::arange(L, at::kLong).unsqueeze(0).expand({n, L}).contiguous();
  at::Tensor logp = at::log_softmax(model->Forward(batch.input_ids, pos, batch.attention_mask, nullptr), -1);
  at::Tensor expected = at::zeros({n, C});
  for (std::int64_t i = 0; i < n; ++i) {
    for (std::int64_t k = 0; k < batch.completion_lengths[i]; ++k) {
      const std::int64_t at_pos = batch.prompt_lengths[i] - 1 + k;
      expected[i][k] = logp[i][at_pos][batch.input_ids[i][at_pos + 1].item<std::int64_t>()];
    }
  }
  const at::Tensor upstream = at::randn({n, C});
  const auto expected_grads = Gradients(*model, (expected * upstream).sum());
  const at::Tensor got = CompletionLogprobs(*model, batch, 1.0);
  EXPECT_LT((got - expected).abs().max().item<double>(), 1e-5);
  ExpectClose(Gradients(*model, (got * upstream).sum()), expected_grads, 1e-5, "gradient");
}

TEST(PackedHiddenTest, MalformedStreamsAreRefused) {
  auto model = Model(false);
  PackedSequences p = PackSequences({Tokens(3, 1), Tokens(2, 2)});
  p.prefix = {1, -1};  // a prefix after its continuation
  EXPECT_THROW(model->PackedHidden(p), c10::Error);
  p.prefix = {-1};  // not one per sequence
  EXPECT_THROW(model->PackedHidden(p), c10::Error);
  p.prefix.clear();
  p.offsets = {0, 3, 4};  // does not end at N
  EXPECT_THROW(model->PackedHidden(p), c10::Error);
  EXPECT_THROW(PackSequences({{}}), c10::Error);
}

}  // namespace
}  // namespace posttrain

#include "posttrain/generation/generate.h"

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <map>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "absl/strings/str_cat.h"
#include "posttrain/core/autocast.h"
#include "posttrain/core/device.h"
#include "posttrain/core/status.h"
#include "posttrain/generation/logprobs.h"
#include "tbb/parallel_for.h"

namespace posttrain {

std::uint64_t Mix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
namespace {

constexpr float kMinusInf = -std::numeric_limits<float>::infinity();

bool Greedy(const SamplingParams& p) { return !p.do_sample || p.temperature <= 0.0; }

}  // namespace

absl::Status CheckTokenizerFitsModel(const CausalLM& model, const Tokenizer& tokenizer) {
  if (tokenizer.vocab_size() > model.config().vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("the tokenizer has ", tokenizer.vocab_size(),
                                                   " token ids but the model's vocab_size is ", model.config().vocab_size,
                                                   ": ids past it have no embedding (wrong tokenizer for this model?)"));
  }
  return absl::OkStatus();
}

std::vector<std::int64_t> EosTokenIds(const CausalLM& model, const Tokenizer* tokenizer) {
  std::vector<std::int64_t> ids = model.config().eos_token_ids;
  if (tokenizer != nullptr && tokenizer->eos_token_id() &&
      std::find(ids.begin(), ids.end(), *tokenizer->eos_token_id()) == ids.end()) {
    ids.push_back(*tokenizer->eos_token_id());
  }
  return ids;
}

namespace {

// Decoding batches up to this size go through CausalLM::DecodeStep (generation_bench:
// stories260K batch 64 10.6k vs 4.8k tok/s through libtorch, stories15M 800 vs 761;
// batch 1 and 16 faster on both).
constexpr std::int64_t kFusedDecodeRows = 64;

// One OpenMP thread in a scope (when `on` and OMP_NUM_THREADS is unset), then as before
// (at Restore or the end of the scope).
class OneOpenMpThread {
 public:
  explicit OneOpenMpThread(bool on) : before_(at::get_num_threads()) {
    on_ = on && before_ > 1 && std::getenv("OMP_NUM_THREADS") == nullptr;
    if (on_) at::set_num_threads(1);
  }
  ~OneOpenMpThread() { Restore(); }
  void Restore() {
    if (on_) at::set_num_threads(before_);
    on_ = false;
  }
  OneOpenMpThread(const OneOpenMpThread&) = delete;
  OneOpenMpThread& operator=(const OneOpenMpThread&) = delete;

 private:
  int before_;
  bool on_ = false;
};

}  // namespace

at::Tensor SampleCategorical(const at::Tensor& logits, const std::vector<double>& uniforms) {
  TORCH_CHECK(logits.dim() == 2 && static_cast<std::int64_t>(uniforms.size()) == logits.size(0),
              "SampleCategorical: logits [N, V] and N uniforms");
  const std::int64_t N = logits.size(0), V = logits.size(1);
  if (!logits.is_cpu()) {  // on the device: the running sums in fp64, then a search
    const at::Tensor cdf = at::softmax(logits.to(at::kDouble), -1).cumsum(-1);  // [N, V]
    const at::Tensor u = at::tensor(uniforms, cdf.options()).view({N, 1}) * cdf.narrow(-1, V - 1, 1);
    return at::searchsorted(cdf, u, /*out_int32=*/false, /*right=*/true).squeeze(1).clamp_max(V - 1);
  }
  // On the CPU libtorch's fp32 softmax (one vectorised operator; the fp64 softmax,
  // cumsum and search took 2.3 ms per step at [16, 32000], half of GRPO's decode
  // step), then each row's running sum in fp64 up to the token: half a row on average.
  const at::Tensor p = at::softmax(logits.to(at::kFloat), -1).contiguous();  // [N, V]
  const at::Tensor totals = p.sum(-1, /*keepdim=*/false, at::kDouble);     // 1 up to rounding
  at::Tensor out = at::empty({N}, p.options().dtype(at::kLong));
  auto* picked = out.data_ptr<std::int64_t>();
  const double* total = totals.data_ptr<double>();
  auto draw = [&](std::int64_t n) {
    const float* row = p.data_ptr<float>() + n * V;
    const double u = uniforms[static_cast<size_t>(n)] * total[n];
    double sum = 0;
    std::int64_t token = -1, last = 0;
    for (std::int64_t i = 0; i < V; ++i) {
      if (row[i] <= 0.0f) continue;
      sum += row[i];
      last = i;
      if (sum > u) {
        token = i;
        break;
      }
    }
    // Summed in another order than `totals`, the running sum can end a rounding short
    // of u when u is next to the total: the last token of nonzero probability.
    picked[n] = token >= 0 ? token : last;
  };
  tbb::parallel_for(std::int64_t{0}, N, draw);
  return out;
}

namespace {

// The uniform in [0, 1) a generation with stream `stream` draws at token t.
double StreamUniform(std::uint64_t stream, std::int64_t t) {
  return static_cast<double>(Mix64(stream ^ Mix64(static_cast<std::uint64_t>(t))) >> 11) * 0x1.0p-53;
}

}  // namespace

at::Tensor ProcessLogits(const at::Tensor& logits, const at::Tensor& seen, const SamplingParams& p) {
  at::Tensor x = logits;
  if (p.repetition_penalty != 1.0 && seen.defined()) {
    at::Tensor penalized = at::where(x < 0, x * p.repetition_penalty, x / p.repetition_penalty);
    x = at::where(seen, penalized, x);
  }
  if (Greedy(p)) return x;
  if (p.temperature != 1.0) x = x / p.temperature;
  if (p.top_k > 0 && p.top_k < x.size(-1)) {
    at::Tensor kth = std::get<0>(at::topk(x, p.top_k, -1)).narrow(-1, p.top_k - 1, 1);
    x = x.masked_fill(x < kth, kMinusInf);
  }
  if (p.top_p < 1.0) {
    auto [sorted, order] = at::sort(x, -1, /*descending=*/false);
    at::Tensor cumulative = at::softmax(sorted, -1).cumsum(-1);
    at::Tensor remove = cumulative <= (1.0 - p.top_p);
    remove.narrow(-1, remove.size(-1) - 1, 1).fill_(false);  // keep at least one
    x = x.masked_fill(at::zeros_like(remove).scatter(-1, order, remove), kMinusInf);
  }
  if (p.min_p > 0.0) {
    at::Tensor probs = at::softmax(x, -1);
    at::Tensor threshold = std::get<0>(probs.max(-1, /*keepdim=*/true)) * p.min_p;
    x = x.masked_fill(probs < threshold, kMinusInf);
  }
  return x;
}

absl::Status ValidateSamplingParams(const SamplingParams& p) {
  auto bad = [](const char* name, double value, const char* range) {
    return absl::InvalidArgumentError(absl::StrCat(name, " must be ", range, ", got ", value));
  };
  for (auto [name, value] : {std::pair{"temperature", p.temperature}, {"top_p", p.top_p}, {"min_p", p.min_p},
                             {"repetition_penalty", p.repetition_penalty}, {"mixture_coef", p.mixture_coef}}) {
    if (!std::isfinite(value)) return bad(name, value, "a finite number");
  }
  if (p.max_new_tokens < 1) return bad("max_new_tokens", static_cast<double>(p.max_new_tokens), ">= 1");
  if (p.temperature < 0) return bad("temperature", p.temperature, ">= 0");
  if (p.top_k < 0) return bad("top_k", static_cast<double>(p.top_k), ">= 0");
  if (p.top_p <= 0 || p.top_p > 1) return bad("top_p", p.top_p, "in (0, 1]");
  if (p.min_p < 0 || p.min_p > 1) return bad("min_p", p.min_p, "in [0, 1]");
  if (p.repetition_penalty <= 0) return bad("repetition_penalty", p.repetition_penalty, "> 0");
  if (p.batch_size < 0) return bad("batch_size", static_cast<double>(p.batch_size), ">= 0");
  if (p.mixture_coef < 0 || p.mixture_coef > 1) return bad("mixture_coef", p.mixture_coef, "in [0, 1]");
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Generation>> Generate(const CausalLM& model,
                                                 const std::vector<std::vector<std::int64_t>>& prompts,
                                                 std::int64_t num_generations, const SamplingParams& params,
                                                 const Tokenizer* tokenizer) {
  if (num_generations < 1) return absl::InvalidArgumentError("num_generations must be >= 1");
  POSTTRAIN_RETURN_IF_ERROR(ValidateSamplingParams(params));
  const std::int64_t context = model.config().max_position_embeddings;
  if (!params.stop_strings.empty() && tokenizer == nullptr) {
    return absl::InvalidArgumentError("stop strings need a tokenizer");
  }
  const std::int64_t vocab = model.config().vocab_size;
  const CausalLM* mix = params.mixture_model;
  if (mix != nullptr && (mix->config().vocab_size != vocab || mix->config().max_position_embeddings < context)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the mixture model has vocab_size ", mix->config().vocab_size, " and max_position_embeddings ",
        mix->config().max_position_embeddings, "; the model has ", vocab, " and ", context,
        ": a geometric mixture needs the same vocabulary and at least the same context"));
  }
  if (mix != nullptr && mix->device() != model.device()) {
    return absl::InvalidArgumentError("the mixture model is on another device than the model");
  }
  // (1 − c)·z_model + c·z_mixture, in fp32.
  const double c = params.mixture_coef;
  auto mixed = [c](const at::Tensor& z_model, const at::Tensor& z_mixture) {
    return z_model.to(at::kFloat).mul(1.0 - c).add_(z_mixture.to(at::kFloat), c);
  };
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (prompts[i].empty()) return absl::InvalidArgumentError(absl::StrCat("prompt ", i, " has no tokens"));
    if (static_cast<std::int64_t>(prompts[i].size()) >= context) {
      return absl::InvalidArgumentError(absl::StrCat("prompt ", i, " has ", prompts[i].size(),
                                                     " tokens: no room to generate within the model's max_position_embeddings = ",
                                                     context, " (shorten it, e.g. with max_prompt_length)"));
    }
    for (std::int64_t id : prompts[i]) {
      if (id < 0 || id >= vocab) {
        return absl::InvalidArgumentError(absl::StrCat("prompt ", i, " has token id ", id, " outside the vocabulary of ", vocab));
      }
    }
  }
  c10::InferenceMode inference;  // no autograd records or version counters while decoding
  if (!params.prompt_seeds.empty() && params.prompt_seeds.size() != prompts.size()) {
    return absl::InvalidArgumentError(absl::StrCat("prompt_seeds holds ", params.prompt_seeds.size(), " seeds for ",
                                                   prompts.size(), " prompts"));
  }
  const bool greedy = Greedy(params);
  const double temperature = greedy ? 1.0 : params.temperature;

  // All sequences, grouped by prompt, each with its random stream.
  std::vector<Generation> out;
  std::vector<std::uint64_t> streams;
  for (size_t p = 0; p < prompts.size(); ++p) {
    for (std::int64_t g = 0; g < num_generations; ++g) {
      Generation gen_out;
      gen_out.prompt_index = static_cast<std::int64_t>(p);
      out.push_back(std::move(gen_out));
      const std::uint64_t prompt_seed =
          params.prompt_seeds.empty() ? Mix64(params.seed ^ Mix64(p + 0x5EED)) : params.prompt_seeds[p];
      streams.push_back(Mix64(prompt_seed + Mix64(static_cast<std::uint64_t>(g))));
    }
  }
  const std::int64_t total = static_cast<std::int64_t>(out.size());
  // A finished generation: its text (cut before a stop string), then the callback.
  auto finalize = [&](std::int64_t index) {
    Generation& g = out[static_cast<size_t>(index)];
    if (tokenizer != nullptr) {
      g.text = tokenizer->Decode(g.token_ids, /*skip_special_tokens=*/true);
      for (const std::string& s : params.stop_strings) {
        const size_t at_pos = s.empty() ? std::string::npos : g.text.find(s);
        if (at_pos != std::string::npos) g.text.resize(at_pos);
      }
    }
    if (params.on_finished) params.on_finished(static_cast<size_t>(index), g);
  };
  size_t longest_stop = 0;
  for (const std::string& s : params.stop_strings) longest_stop = std::max(longest_stop, s.size());
  const std::int64_t micro = params.batch_size > 0 ? params.batch_size : std::max<std::int64_t>(total, 1);

  // The fused decode step runs on TBB's threads; OpenMP's, woken by the few libtorch
  // calls between steps (sampling), would spin beside them: one OpenMP thread while
  // generating, the prompts' prefill included (GRPO's step at stories15M's shape, 16 x
  // 64 tokens: generation 0.85-0.88 s against 1.00-1.07 with two).
  // A few sequences decode through the fused step (model/decode_step.cc), under
  // autocast too: its loops (bf16 products where the CPU has them, else fp32), at
  // these batch sizes, are faster than bf16 products through the dispatcher
  // (generation_bench --bf16 1, tokens/s at batch 1 / 16 / 64, fp32 loops:
  // stories260K 8,226 / 13,208 / 15,343 against 833 / 4,305 / 9,566; stories15M's
  // shape 597 / 1,400 / 2,287 against 175 / 1,122 / 2,042).
  const bool fused_decode = model.CanDecodeStep() && mix == nullptr;
  OneOpenMpThread one_thread(fused_decode && std::min(micro, total) <= kFusedDecodeRows);
  // Under bf16 autocast the fused step's products take bf16 operands where the CPU
  // has AVX512-BF16 (copies of this call's weights: 2 bytes per parameter while it
  // runs). GRPO's generation at stories15M's shape, 16 x 64 tokens, interleaved
  // A/B: 0.50-0.58 s/step against 0.89-0.97 with fp32 products.
  // With an adapter (LoRA), the step decodes the merged model, as TRL's vLLM
  // generation does (merge_adapter before its weights go to vLLM): the merged copies
  // are made once per call (fp32 ones of the adapted matrices, or the bf16 packing).
  // The prompts' prefill runs the adapted forward. generation_bench --lora 16,
  // stories15M's shape, bf16 autocast, tokens/s at batch 1 / 16 / 64: 84 / 713 /
  // 1,577 through the adapted libtorch forward.
  std::shared_ptr<const CausalLM::DecodeWeights> decode_weights;
  if (fused_decode && AutocastEnabled(at::kCPU) && AutocastDtype(at::kCPU) == at::kBFloat16) {
    decode_weights = model.Bf16DecodeWeights();
  }
  if (fused_decode && decode_weights == nullptr && model.adapter() != nullptr) decode_weights = model.MergedDecodeWeights();
  for (std::int64_t start = 0; start < total; start += micro) {
    const std::int64_t n = std::min(micro, total - start);
    // Each distinct prompt of the micro-batch is prefilled once; its generations
    // start from copies of its KV cache (GRPO's num_generations samples share it).
    std::map<std::int64_t, std::int64_t> unique_of_prompt;
    std::vector<std::int64_t> unique_prompts, row_unique(static_cast<size_t>(n));
    std::int64_t longest = 0;
    for (std::int64_t r = 0; r < n; ++r) {
      const std::int64_t p = out[start + r].prompt_index;
      auto [it, fresh] = unique_of_prompt.try_emplace(p, static_cast<std::int64_t>(unique_prompts.size()));
      if (fresh) unique_prompts.push_back(p);
      row_unique[static_cast<size_t>(r)] = it->second;
      longest = std::max<std::int64_t>(longest, static_cast<std::int64_t>(prompts[p].size()));
    }
    const auto U = static_cast<std::int64_t>(unique_prompts.size());
    // At most up to the model's context (the batch's longest prompt bounds it).
    const std::int64_t max_new = std::min(params.max_new_tokens, context - longest);
    // Left-padded prompts, their mask and positions.
    const at::TensorOptions id_options = model.options().dtype(at::kLong);
    at::Tensor input = at::full({U, longest}, params.pad_token_id, id_options);
    at::Tensor prompt_mask = at::zeros({U, longest + max_new}, id_options);
    at::Tensor positions = at::zeros({U, longest}, id_options);
    for (std::int64_t u = 0; u < U; ++u) {
      const std::vector<std::int64_t>& prompt = prompts[unique_prompts[static_cast<size_t>(u)]];
      const std::int64_t len = static_cast<std::int64_t>(prompt.size()), pad = longest - len;
      input[u].narrow(0, pad, len).copy_(at::tensor(prompt, id_options));
      prompt_mask[u].narrow(0, pad, len).fill_(1);
      positions[u].narrow(0, pad, len).copy_(at::arange(len, id_options));
    }
    KVCache cache = model.NewCache(U, longest + max_new);
    // The LM head only on the last prompt position: the others' logits are unused.
    at::Tensor logits = model.Logits(
        model.Hidden(input, positions, prompt_mask.narrow(1, 0, longest), &cache).select(1, longest - 1));
    KVCache mix_cache;
    if (mix != nullptr) {
      mix_cache = mix->NewCache(U, longest + max_new);
      logits = mixed(logits, mix->Logits(mix->Hidden(input, positions, prompt_mask.narrow(1, 0, longest), &mix_cache)
                                             .select(1, longest - 1)));
    }

    // Rows of the decoding batch: `active[b]` is the micro-batch row in slot b.
    // Finished rows leave the batch (their cache rows with them) once they are an
    // eighth of it, so a long tail of unfinished samples decodes at its own size.
    std::vector<std::int64_t> active(static_cast<size_t>(n));
    for (std::int64_t r = 0; r < n; ++r) active[static_cast<size_t>(r)] = r;
    auto keep_rows = [&](const at::Tensor& index) {
      for (KVCache* kv : {&cache, &mix_cache}) {
        for (at::Tensor& k : kv->keys) k = k.index_select(0, index);
        for (at::Tensor& v : kv->values) v = v.index_select(0, index);
      }
    };
    at::Tensor mask;
    if (U == n && std::is_sorted(row_unique.begin(), row_unique.end())) {
      mask = prompt_mask;
    } else {
      const at::Tensor index = at::tensor(row_unique, id_options);
      keep_rows(index);
      logits = logits.index_select(0, index);
      mask = prompt_mask.index_select(0, index);
    }
    std::vector<std::int64_t> lengths(static_cast<size_t>(n));
    at::Tensor seen = params.repetition_penalty != 1.0 ? at::zeros({n, vocab}, id_options.dtype(at::kBool)) : at::Tensor();
    for (std::int64_t r = 0; r < n; ++r) {
      const std::vector<std::int64_t>& prompt = prompts[out[start + r].prompt_index];
      lengths[static_cast<size_t>(r)] = static_cast<std::int64_t>(prompt.size());
      if (seen.defined()) seen[r].index_fill_(0, at::tensor(prompt, id_options), true);
    }

    std::vector<bool> finished(n, false);
    std::int64_t remaining = n, finished_in_batch = 0;
    for (std::int64_t t = 0; t < max_new && remaining > 0; ++t) {
      // Any NaN or ±Inf makes the sum non-finite (so would finite logits summing past
      // 3e38, from a model as broken). One reduction: at::isfinite(logits).all() took
      // 1.6 ms per step at [16, 32000].
      if (!std::isfinite(logits.sum().item<double>())) {
        return absl::FailedPreconditionError(absl::StrCat(
            "the model's logits are not finite (NaN or Inf) at generated token ", t,
            ": its weights or config (rope_theta, rms_norm_eps, rope_scaling) are broken"));
      }
      const auto B = static_cast<std::int64_t>(active.size());
      if (params.on_step_logits) {
        for (std::int64_t b = 0; b < B; ++b) {
          const std::int64_t r = active[static_cast<size_t>(b)];
          if (!finished[r]) params.on_step_logits(static_cast<size_t>(start + r), t, logits[b]);
        }
      }
      at::Tensor processed = ProcessLogits(logits, seen, params);
      at::Tensor next;
      if (greedy) {
        next = processed.argmax(-1);
      } else {
        std::vector<double> uniforms;
        for (std::int64_t r : active) uniforms.push_back(StreamUniform(streams[static_cast<size_t>(start + r)], t));
        next = SampleCategorical(processed, uniforms);
      }
      const at::Tensor next_host = next.to(at::kCPU);  // read on the host (no copy on the CPU)
      auto next_a = next_host.accessor<std::int64_t, 1>();
      for (std::int64_t b = 0; b < B; ++b) {
        const std::int64_t r = active[static_cast<size_t>(b)];
        if (finished[r]) continue;
        Generation& g = out[start + r];
        const std::int64_t token = next_a[b];
        g.token_ids.push_back(token);
        bool stop = std::find(params.eos_token_ids.begin(), params.eos_token_ids.end(), token) !=
                    params.eos_token_ids.end();
        if (!stop && !params.stop_strings.empty()) {
          // Only the newest token can complete a stop string, so decode just the
          // tokens it may span (each decodes to at least one byte), plus two.
          const size_t window = std::min(g.token_ids.size(), longest_stop + 2);
          const std::string tail = tokenizer->Decode(
              std::vector<std::int64_t>(g.token_ids.end() - static_cast<std::ptrdiff_t>(window), g.token_ids.end()),
              /*skip_special_tokens=*/true);
          for (const std::string& s : params.stop_strings) stop = stop || (!s.empty() && tail.find(s) != std::string::npos);
        }
        if (stop) {
          g.finish_reason = FinishReason::kStop;
          finished[r] = true;
          --remaining;
          ++finished_in_batch;
          finalize(start + r);
        }
      }
      if (remaining == 0 || t + 1 == max_new) break;
      if (seen.defined()) seen.scatter_(1, next.unsqueeze(1), true);
      if (finished_in_batch > 0 && finished_in_batch * 8 >= B) {
        std::vector<std::int64_t> slots, still;
        for (std::int64_t b = 0; b < B; ++b) {
          if (!finished[active[static_cast<size_t>(b)]]) {
            slots.push_back(b);
            still.push_back(active[static_cast<size_t>(b)]);
          }
        }
        const at::Tensor index = at::tensor(slots, id_options);
        keep_rows(index);
        mask = mask.index_select(0, index);
        next = next.index_select(0, index);
        if (seen.defined()) seen = seen.index_select(0, index);
        active = std::move(still);
        finished_in_batch = 0;
      }
      mask.select(1, longest + t).fill_(1);
      if (fused_decode && static_cast<std::int64_t>(active.size()) <= kFusedDecodeRows &&
          cache.keys[0].size(0) == static_cast<std::int64_t>(active.size())) {
        // A few sequences: the fused decode step (model/decode_step.cc).
        std::vector<std::int64_t> tokens, positions, first_slots;
        auto next_now = next.accessor<std::int64_t, 1>();
        for (size_t b = 0; b < active.size(); ++b) {
          const std::int64_t len = lengths[static_cast<size_t>(active[b])];
          tokens.push_back(next_now[static_cast<std::int64_t>(b)]);
          positions.push_back(len + t);
          first_slots.push_back(longest - len);
        }
        logits = model.DecodeStep(tokens, positions, first_slots, &cache, decode_weights.get());
        continue;
      }
      std::vector<std::int64_t> step_positions_v;
      for (std::int64_t r : active) step_positions_v.push_back(lengths[static_cast<size_t>(r)] + t);
      at::Tensor step_positions = at::tensor(step_positions_v, id_options).unsqueeze(1);
      logits = model.Forward(next.unsqueeze(1), step_positions, mask.narrow(1, 0, longest + t + 1), &cache).select(1, 0);
      if (mix != nullptr) {
        logits = mixed(logits, mix->Forward(next.unsqueeze(1), step_positions, mask.narrow(1, 0, longest + t + 1), &mix_cache)
                                   .select(1, 0));
      }
    }
    for (std::int64_t r = 0; r < n; ++r) {
      if (!finished[r]) finalize(start + r);  // hit max_new_tokens
    }
  }
  one_thread.Restore();  // the teacher-forced pass is a training-sized forward
  // The returned log-probs come from the teacher-forced pass trainers use too.
  for (std::int64_t start = 0; params.compute_logprobs && start < total; start += micro) {
    const std::int64_t n = std::min(micro, total - start);
    std::vector<std::vector<std::int64_t>> batch_prompts, batch_completions;
    for (std::int64_t r = 0; r < n; ++r) {
      batch_prompts.push_back(prompts[out[start + r].prompt_index]);
      batch_completions.push_back(out[start + r].token_ids);
    }
    at::Tensor logps = CompletionLogprobs(model, MakeCompletionBatch(batch_prompts, batch_completions, model.device()), temperature)
                             .to(at::kCPU);
    auto logps_a = logps.accessor<float, 2>();
    for (std::int64_t r = 0; r < n; ++r) {
      std::vector<float>& dst = out[start + r].logprobs;
      dst.resize(out[start + r].token_ids.size());
      for (size_t k = 0; k < dst.size(); ++k) dst[k] = logps_a[r][static_cast<std::int64_t>(k)];
    }
  }
  return out;
}

}  // namespace posttrain

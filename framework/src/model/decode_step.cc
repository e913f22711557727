// CausalLM::DecodeStep: one token of one sequence through the whole model in plain
// loops over the weights, for batch-1 decoding on the CPU in fp32.
//
// Why: at batch 1 every weight is read once per token, so decoding is bound by
// memory bandwidth and by per-operation overhead, not arithmetic. Through libtorch a
// token costs ~250 operator calls (~1 ms here) and OpenBLAS's gemv reads the
// stories15M LM head at ~11 GB/s (3.25 ms); llama2.c's run.c does the whole token in
// ~2.2 ms. This path does what run.c does: a fused loop per layer, row-parallel
// matrix-vector products (AVX2/FMA where the CPU has them, chosen at run time), no
// allocation but the returned logits. Numerics follow CausalLM::Hidden (RMSNorm in
// fp32, rotate-half RoPE from the same inv_freq, softmax in fp32); the test compares
// the two paths' logits.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <vector>

#include "posttrain/core/threads.h"
#include "posttrain/model/causal_lm.h"
#include "tbb/blocked_range.h"
#include "tbb/parallel_for.h"

namespace posttrain {
namespace {

float DotPortable(const float* a, const float* b, std::int64_t n) {
  float s[4] = {0, 0, 0, 0};
  std::int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s[0] += a[i] * b[i];
    s[1] += a[i + 1] * b[i + 1];
    s[2] += a[i + 2] * b[i + 2];
    s[3] += a[i + 3] * b[i + 3];
  }
  for (; i < n; ++i) s[0] += a[i] * b[i];
  return (s[0] + s[1]) + (s[2] + s[3]);
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) float DotAvx2(const float* a, const float* b, std::int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
  std::int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
    s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  const __m256 s = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
  float total = _mm_cvtss_f32(h);
  for (; i < n; ++i) total += a[i] * b[i];
  return total;
}
#endif

using DotFn = float (*)(const float*, const float*, std::int64_t);

DotFn Dot() {
#if defined(__x86_64__)
  static const DotFn fn = DetectCpu().avx2 ? DotAvx2 : DotPortable;
  return fn;
#else
  return DotPortable;
#endif
}

// One matrix-vector product y = W x (+ b), W [rows, cols] row-major.
struct MatVecJob {
  const float* w;
  const float* b;  // may be null
  float* y;
  std::int64_t rows;
};

// Products that share their input x [cols], their rows split over cores in one
// parallel region when there are enough of them to pay for it.
void MatVecs(std::initializer_list<MatVecJob> jobs, const float* x, std::int64_t cols) {
  const DotFn dot = Dot();
  std::vector<MatVecJob> list(jobs);
  std::int64_t total = 0;
  for (const MatVecJob& j : list) total += j.rows;
  // Row r of the concatenation: job k, row r - (rows before k).
  auto run = [&](std::int64_t begin, std::int64_t end) {
    std::int64_t base = 0;
    for (const MatVecJob& j : list) {
      const std::int64_t lo = std::max(begin, base), hi = std::min(end, base + j.rows);
      for (std::int64_t r = lo; r < hi; ++r) {
        const std::int64_t i = r - base;
        j.y[i] = dot(j.w + i * cols, x, cols) + (j.b != nullptr ? j.b[i] : 0.0f);
      }
      base += j.rows;
    }
  };
  if (total * cols < (std::int64_t{1} << 15) || DetectCpu().cores == 1) {
    run(0, total);
    return;
  }
  const std::int64_t grain = std::max<std::int64_t>(8, total / (4 * DetectCpu().cores));
  tbb::parallel_for(tbb::blocked_range<std::int64_t>(0, total, grain),
                    [&](const tbb::blocked_range<std::int64_t>& r) { run(r.begin(), r.end()); });
}

// transformers' LlamaRMSNorm in fp32: x / sqrt(mean(x²) + eps) * w.
void RmsNorm(const float* x, const float* w, float* out, std::int64_t n, double eps) {
  float ss = 0;
  for (std::int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
  const float inv = 1.0f / std::sqrt(ss / static_cast<float>(n) + static_cast<float>(eps));
  for (std::int64_t i = 0; i < n; ++i) out[i] = w[i] * (x[i] * inv);
}

// Rotate-half RoPE on `heads` vectors of dimension d at one position.
void Rope(float* v, std::int64_t heads, std::int64_t d, const float* cos, const float* sin) {
  const std::int64_t half = d / 2;
  for (std::int64_t h = 0; h < heads; ++h) {
    float* x = v + h * d;
    for (std::int64_t i = 0; i < half; ++i) {
      const float a = x[i], b = x[i + half];
      x[i] = a * cos[i] - b * sin[i];
      x[i + half] = b * cos[i + half] + a * sin[i + half];
    }
  }
}

const float* Data(const at::Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; }

}  // namespace

bool CausalLM::CanDecodeStep() const {
  if (dtype_ != at::kFloat || !embed_.device().is_cpu()) return false;
  for (const auto& [name, p] : params_) {
    if (!p.is_contiguous()) return false;
  }
  return true;
}

at::Tensor CausalLM::DecodeStep(std::int64_t token, std::int64_t position, std::int64_t first_slot,
                                KVCache* cache) const {
  TORCH_CHECK(CanDecodeStep(), "DecodeStep needs an fp32 CPU model with contiguous weights");
  TORCH_CHECK(cache != nullptr && !cache->keys.empty() && cache->keys[0].size(0) == 1,
              "DecodeStep needs a KV cache of batch 1");
  TORCH_CHECK(cache->length < cache->capacity, "KV cache overflow: capacity ", cache->capacity);
  TORCH_CHECK(token >= 0 && token < config_.vocab_size, "token id ", token, " outside the vocabulary");
  TORCH_CHECK(first_slot >= 0 && first_slot <= cache->length, "first_slot outside the cache");
  const std::int64_t Hd = config_.hidden_size, I = config_.intermediate_size;
  const std::int64_t H = config_.num_attention_heads, KV = config_.num_key_value_heads;
  const std::int64_t G = H / KV, D = config_.head_dim, slot = cache->length, cap = cache->capacity;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));

  // RoPE tables for this position, as RopeCosSin computes them: fp32 position times
  // fp32 inverse frequency, then cos/sin; duplicated over both halves.
  std::vector<float> cos(static_cast<size_t>(D)), sin(static_cast<size_t>(D));
  const float* inv_freq = inv_freq_.data_ptr<float>();
  for (std::int64_t i = 0; i < D / 2; ++i) {
    const float f = static_cast<float>(position) * inv_freq[i];
    cos[static_cast<size_t>(i)] = cos[static_cast<size_t>(i + D / 2)] = std::cos(f);
    sin[static_cast<size_t>(i)] = sin[static_cast<size_t>(i + D / 2)] = std::sin(f);
  }

  std::vector<float> x(Hd), xn(Hd), q(H * D), k(KV * D), v(KV * D), attn(H * D), out(std::max(Hd, I));
  std::vector<float> gate(I), up(I), scores(static_cast<size_t>(slot + 1));
  std::copy_n(embed_.data_ptr<float>() + token * Hd, Hd, x.data());
  for (size_t li = 0; li < layers_.size(); ++li) {
    const Layer& l = layers_[li];
    RmsNorm(x.data(), Data(l.input_norm), xn.data(), Hd, config_.rms_norm_eps);
    MatVecs({{Data(l.q), Data(l.q_bias), q.data(), H * D},
             {Data(l.k), Data(l.k_bias), k.data(), KV * D},
             {Data(l.v), Data(l.v_bias), v.data(), KV * D}},
            xn.data(), Hd);
    Rope(q.data(), H, D, cos.data(), sin.data());
    Rope(k.data(), KV, D, cos.data(), sin.data());
    float* keys = cache->keys[li].data_ptr<float>();  // [1, KV, cap, D]
    float* values = cache->values[li].data_ptr<float>();
    for (std::int64_t h = 0; h < KV; ++h) {
      std::copy_n(k.data() + h * D, D, keys + (h * cap + slot) * D);
      std::copy_n(v.data() + h * D, D, values + (h * cap + slot) * D);
    }
    // Query head h reads key/value head h / G over slots [first_slot, slot].
    for (std::int64_t h = 0; h < H; ++h) {
      const float* kh = keys + (h / G) * cap * D;
      const float* vh = values + (h / G) * cap * D;
      const float* qh = q.data() + h * D;
      float top = -INFINITY;
      for (std::int64_t s = first_slot; s <= slot; ++s) {
        scores[static_cast<size_t>(s)] = DotPortable(qh, kh + s * D, D) * scale;
        top = std::max(top, scores[static_cast<size_t>(s)]);
      }
      float sum = 0;
      for (std::int64_t s = first_slot; s <= slot; ++s) {
        scores[static_cast<size_t>(s)] = std::exp(scores[static_cast<size_t>(s)] - top);
        sum += scores[static_cast<size_t>(s)];
      }
      float* o = attn.data() + h * D;
      std::fill_n(o, D, 0.0f);
      for (std::int64_t s = first_slot; s <= slot; ++s) {
        const float a = scores[static_cast<size_t>(s)] / sum;
        const float* vs = vh + s * D;
        for (std::int64_t i = 0; i < D; ++i) o[i] += a * vs[i];
      }
    }
    MatVecs({{Data(l.o), nullptr, out.data(), Hd}}, attn.data(), H * D);
    for (std::int64_t i = 0; i < Hd; ++i) x[i] += out[i];
    RmsNorm(x.data(), Data(l.post_norm), xn.data(), Hd, config_.rms_norm_eps);
    MatVecs({{Data(l.gate), nullptr, gate.data(), I}, {Data(l.up), nullptr, up.data(), I}}, xn.data(), Hd);
    for (std::int64_t i = 0; i < I; ++i) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];  // SiLU(g)·u
    MatVecs({{Data(l.down), nullptr, out.data(), Hd}}, gate.data(), I);
    for (std::int64_t i = 0; i < Hd; ++i) x[i] += out[i];
  }
  cache->length = slot + 1;
  RmsNorm(x.data(), final_norm_.data_ptr<float>(), xn.data(), Hd, config_.rms_norm_eps);
  at::Tensor logits = at::empty({config_.vocab_size}, at::kFloat);
  MatVecs({{lm_head_.data_ptr<float>(), nullptr, logits.data_ptr<float>(), config_.vocab_size}}, xn.data(), Hd);
  return logits;
}

}  // namespace posttrain

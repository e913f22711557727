// CausalLM::DecodeStep: one token of each of a few sequences through the whole model
// in plain loops over the weights, for small-batch decoding on the CPU in fp32.
//
// Why: at batch 1 every weight is read once per token, so decoding is bound by
// memory bandwidth and by per-operation overhead, not arithmetic. Through libtorch a
// token costs ~250 operator calls (~1 ms here) and OpenBLAS's gemv reads the
// stories15M LM head at ~11 GB/s (3.25 ms); llama2.c's run.c does the whole token in
// ~2.2 ms. This path does what run.c does: a fused loop per layer, row-parallel
// matrix-vector products (AVX-512 blocked over rows and sequences, else AVX2/FMA,
// chosen at run time) that read each weight row once for every sequence of the
// batch, scratch buffers only. Numerics follow CausalLM::Hidden (RMSNorm in
// fp32, rotate-half RoPE from the same inv_freq, softmax in fp32); the test compares
// the two paths' logits. Under bf16 autocast, with Bf16DecodeWeights, the products
// read bf16 copies of the matrices (model/bf16_rows.h); the rest stays as above.
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <initializer_list>
#include <vector>

#include "posttrain/core/autocast.h"
#include "posttrain/core/device.h"
#include "posttrain/core/threads.h"
#include "posttrain/model/bf16_rows.h"
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

// out[j] = w · x[j] for j < C: each weight vector is loaded once for C inputs (a
// batch of sequences decoding together reads the weights once per step).
#if defined(__x86_64__)
template <int C>
__attribute__((target("avx2,fma"))) void DotsAvx2(const float* w, const float* const* x, std::int64_t n, float* out) {
  __m256 s[C];
  for (int j = 0; j < C; ++j) s[j] = _mm256_setzero_ps();
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 wv = _mm256_loadu_ps(w + i);
    for (int j = 0; j < C; ++j) s[j] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[j] + i), s[j]);
  }
  for (int j = 0; j < C; ++j) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s[j]), _mm256_extractf128_ps(s[j], 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    float total = _mm_cvtss_f32(h);
    for (std::int64_t k = i; k < n; ++k) total += w[k] * x[j][k];
    out[j] = total;
  }
}
#endif

// out[r * C + c] = w[r] · x[c] for R weight rows (ldw apart) and C inputs: every
// weight vector loaded is used C times and every input vector R times, from
// registers (R x C accumulators), so the loop is bound by FMAs, not loads — the
// 4-input row kernel above loads a vector per FMA. AVX-512 (32 registers: 16
// accumulators, 4 weight vectors, an input).
#if defined(__x86_64__)
template <int R, int C>
__attribute__((target("avx512f"))) inline void BlockStepAvx512(const float* w, std::int64_t ldw, const float* const* x,
                                                              std::int64_t i, __mmask16 mask, __m512 (&s)[R][C]) {
  __m512 wv[R];
  for (int r = 0; r < R; ++r) wv[r] = _mm512_maskz_loadu_ps(mask, w + r * ldw + i);
  for (int c = 0; c < C; ++c) {
    const __m512 xv = _mm512_maskz_loadu_ps(mask, x[c] + i);
    for (int r = 0; r < R; ++r) s[r][c] = _mm512_fmadd_ps(wv[r], xv, s[r][c]);
  }
}

template <int R, int C>
__attribute__((target("avx512f"))) void BlockAvx512(const float* w, std::int64_t ldw, const float* const* x,
                                                    std::int64_t n, float* out) {
  __m512 s[R][C];
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) s[r][c] = _mm512_setzero_ps();
  }
  std::int64_t i = 0;
  for (; i + 16 <= n; i += 16) BlockStepAvx512<R, C>(w, ldw, x, i, 0xFFFF, s);
  if (i < n) BlockStepAvx512<R, C>(w, ldw, x, i, static_cast<__mmask16>((1u << (n - i)) - 1), s);
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) out[r * C + c] = _mm512_reduce_add_ps(s[r][c]);
  }
}

// Rows [0, rows) of W (ldw apart) times `count` inputs: y[b * ldy + r] = W[r] · x[b]
// (+ bias[r]), 4 rows x up to 4 inputs per kernel call. (The two loops differ only in
// the row count R; folded into one template helper they measured ~30% slower at
// batch 16 — 1,000-1,280 against 1,650-1,730 tokens/s — so they stay written out.)
__attribute__((target("avx512f"))) void RowsAvx512(const float* w, std::int64_t ldw, std::int64_t rows,
                                                   const float* const* x, std::int64_t count, std::int64_t n,
                                                   const float* bias, float* y, std::int64_t ldy) {
  float out[16];
  std::int64_t r = 0;
  auto store = [&](std::int64_t r0, int nr, std::int64_t b0, int nc) {
    for (int i = 0; i < nr; ++i) {
      const float add = bias != nullptr ? bias[r0 + i] : 0.0f;
      for (int c = 0; c < nc; ++c) y[(b0 + c) * ldy + r0 + i] = out[i * nc + c] + add;
    }
  };
  for (; r + 4 <= rows; r += 4) {
    for (std::int64_t b = 0; b < count; b += 4) {
      const float* const* xb = x + b;
      const float* wr = w + r * ldw;
      switch (std::min<std::int64_t>(4, count - b)) {
        case 4: BlockAvx512<4, 4>(wr, ldw, xb, n, out); store(r, 4, b, 4); break;
        case 3: BlockAvx512<4, 3>(wr, ldw, xb, n, out); store(r, 4, b, 3); break;
        case 2: BlockAvx512<4, 2>(wr, ldw, xb, n, out); store(r, 4, b, 2); break;
        default: BlockAvx512<4, 1>(wr, ldw, xb, n, out); store(r, 4, b, 1); break;
      }
    }
  }
  for (; r < rows; ++r) {
    for (std::int64_t b = 0; b < count; b += 4) {
      const float* const* xb = x + b;
      const float* wr = w + r * ldw;
      switch (std::min<std::int64_t>(4, count - b)) {
        case 4: BlockAvx512<1, 4>(wr, ldw, xb, n, out); store(r, 1, b, 4); break;
        case 3: BlockAvx512<1, 3>(wr, ldw, xb, n, out); store(r, 1, b, 3); break;
        case 2: BlockAvx512<1, 2>(wr, ldw, xb, n, out); store(r, 1, b, 2); break;
        default: BlockAvx512<1, 1>(wr, ldw, xb, n, out); store(r, 1, b, 1); break;
      }
    }
  }
}
#endif

// Attention of one query head over key/value slots [first, last] (rows D apart):
// scores[s] = q · k_s · scale, and o = Σ_s (w_s / sum) v_s for weights w. AVX-512
// with a masked tail over D, inlined: the AVX2 dot through a function pointer and
// the compiler's SSE loop for o took 16% of a bf16 decode step at head_dim 48.
#if defined(__x86_64__)
__attribute__((target("avx512f"))) void ScoresAvx512(const float* q, const float* keys, std::int64_t first,
                                                     std::int64_t last, std::int64_t D, float scale, float* scores) {
  for (std::int64_t s = first; s <= last; ++s) {
    const float* k = keys + s * D;
    __m512 acc = _mm512_setzero_ps();
    std::int64_t i = 0;
    for (; i + 16 <= D; i += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(q + i), _mm512_loadu_ps(k + i), acc);
    if (i < D) {
      const auto mask = static_cast<__mmask16>((1u << (D - i)) - 1);
      acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, q + i), _mm512_maskz_loadu_ps(mask, k + i), acc);
    }
    scores[s] = _mm512_reduce_add_ps(acc) * scale;
  }
}

__attribute__((target("avx512f"))) void WeightedValuesAvx512(const float* weights, float sum, const float* values,
                                                             std::int64_t first, std::int64_t last, std::int64_t D,
                                                             float* o) {
  for (std::int64_t i = 0; i < D; i += 16) {
    const auto mask = static_cast<__mmask16>(D - i >= 16 ? 0xFFFF : (1u << (D - i)) - 1);
    __m512 acc = _mm512_setzero_ps();
    for (std::int64_t s = first; s <= last; ++s) {
      acc = _mm512_fmadd_ps(_mm512_set1_ps(weights[s] / sum), _mm512_maskz_loadu_ps(mask, values + s * D + i), acc);
    }
    _mm512_mask_storeu_ps(o + i, mask, acc);
  }
}
#endif

// Dots of one weight row with `count` inputs, 4 at a time.
void Dots(const float* w, const float* const* x, int count, std::int64_t n, float* out) {
#if defined(__x86_64__)
  const bool avx2 = DetectCpu().avx2;
#else
  const bool avx2 = false;
#endif
  for (int j = 0; j < count; j += 4) {
    const int c = std::min(4, count - j);
#if defined(__x86_64__)
    if (avx2) {
      switch (c) {
        case 4: DotsAvx2<4>(w, x + j, n, out + j); continue;
        case 3: DotsAvx2<3>(w, x + j, n, out + j); continue;
        case 2: DotsAvx2<2>(w, x + j, n, out + j); continue;
        default: out[j] = DotAvx2(w, x[j], n); continue;
      }
    }
#endif
    for (int k = 0; k < c; ++k) out[j + k] = DotPortable(w, x[j + k], n);
  }
}

using DotFn = float (*)(const float*, const float*, std::int64_t);

DotFn Dot() {
#if defined(__x86_64__)
  static const DotFn fn = DetectCpu().avx2 ? DotAvx2 : DotPortable;
  return fn;
#else
  return DotPortable;
#endif
}

// One product per sequence b: y[b * ldy + r] = W[r, :] · x[b * cols + :] (+ bias[r]),
// W [rows, cols] row-major.
// With `wb` (DecodeStep's bf16 weights, packed), the product takes W's bf16 copy and
// the inputs rounded to bf16 (internal::Bf16PackedRowDots).
struct MatVecJob {
  const float* w;
  const float* bias;  // may be null
  float* y;
  std::int64_t rows;
  const c10::BFloat16* wb = nullptr;
};

// MatVecs with bf16 weights (each job's `wb` packed by internal::PackBf16Rows): the
// inputs rounded to bf16 once for every job, then blocks of 16 rows in parallel.
void MatVecsBf16(const std::vector<MatVecJob>& list, const float* x, std::int64_t B, std::int64_t cols,
                 std::int64_t ldy) {
  const std::int64_t stride = internal::Bf16InputStride(cols);
  std::vector<c10::BFloat16> x16(static_cast<size_t>(B * stride), c10::BFloat16(0.0f));
  std::vector<const c10::BFloat16*> inputs;
  for (std::int64_t b = 0; b < B; ++b) {
    internal::RoundToBf16(x + b * cols, x16.data() + b * stride, cols);
    inputs.push_back(x16.data() + b * stride);
  }
  constexpr std::int64_t kRows = 16;  // rows per packed block
  std::int64_t total = 0;  // blocks
  for (const MatVecJob& j : list) total += (j.rows + kRows - 1) / kRows;
  auto run = [&](std::int64_t begin, std::int64_t end) {
    std::int64_t base = 0;
    for (const MatVecJob& j : list) {
      const std::int64_t blocks = (j.rows + kRows - 1) / kRows;
      const std::int64_t lo = std::max(begin, base), hi = std::min(end, base + blocks);
      if (lo < hi) {
        internal::Bf16PackedRowDots(j.wb, j.rows, cols, lo - base, hi - base, inputs.data(), B, j.bias, j.y, ldy);
      }
      base += blocks;
    }
  };
  if (total * kRows * cols * B < (std::int64_t{1} << 15) || DetectCpu().cores == 1) {
    run(0, total);
    return;
  }
  const std::int64_t grain = std::max<std::int64_t>(1, total / (4 * DetectCpu().cores));
  tbb::parallel_for(tbb::blocked_range<std::int64_t>(0, total, grain),
                    [&](const tbb::blocked_range<std::int64_t>& r) { run(r.begin(), r.end()); });
}

// Products that share their inputs x [B, cols], over every job's rows in one
// parallel region (rows split over cores when there are enough to pay for it).
// Each weight row is read once for all B inputs.
void MatVecs(std::initializer_list<MatVecJob> jobs, const float* x, std::int64_t B, std::int64_t cols,
             std::int64_t ldy) {
  const DotFn dot = Dot();
  std::vector<MatVecJob> list(jobs);
  if (list.front().wb != nullptr) {
    MatVecsBf16(list, x, B, cols, ldy);
    return;
  }
  std::vector<const float*> inputs(static_cast<size_t>(B));
  for (std::int64_t b = 0; b < B; ++b) inputs[static_cast<size_t>(b)] = x + b * cols;
  std::int64_t total = 0;
  for (const MatVecJob& j : list) total += j.rows;
#if defined(__x86_64__)
  const bool avx512 = DetectCpu().avx512f;
#else
  const bool avx512 = false;
#endif
  auto run = [&](std::int64_t begin, std::int64_t end) {
    std::vector<float> out(static_cast<size_t>(B));
    std::int64_t base = 0;
    for (const MatVecJob& j : list) {
      const std::int64_t lo = std::max(begin, base), hi = std::min(end, base + j.rows);
#if defined(__x86_64__)
      // One sequence stays on the row dot products: it is bound by memory bandwidth,
      // and there the AVX2 loop measured faster (stories15M's shape, batch 1: 752-785
      // tokens/s against 507-648).
      if (avx512 && B > 1 && lo < hi) {
        const std::int64_t i = lo - base;
        RowsAvx512(j.w + i * cols, cols, hi - lo, inputs.data(), B, cols, j.bias != nullptr ? j.bias + i : nullptr,
                   j.y + i, ldy);
        base += j.rows;
        continue;
      }
#endif
      for (std::int64_t r = lo; r < hi; ++r) {
        const std::int64_t i = r - base;
        const float bias = j.bias != nullptr ? j.bias[i] : 0.0f;
        if (B == 1) {
          j.y[i] = dot(j.w + i * cols, x, cols) + bias;
          continue;
        }
        Dots(j.w + i * cols, inputs.data(), static_cast<int>(B), cols, out.data());
        for (std::int64_t b = 0; b < B; ++b) j.y[b * ldy + i] = out[static_cast<size_t>(b)] + bias;
      }
      base += j.rows;
    }
  };
  if (total * cols * B < (std::int64_t{1} << 15) || DetectCpu().cores == 1) {
    run(0, total);
    return;
  }
  const std::int64_t grain = std::max<std::int64_t>(8, total / (4 * DetectCpu().cores));
  tbb::parallel_for(tbb::blocked_range<std::int64_t>(0, total, grain),
                    [&](const tbb::blocked_range<std::int64_t>& r) { run(r.begin(), r.end()); });
}

// transformers' LlamaRMSNorm in fp32: x / sqrt(mean(x²) + eps) * w; GemmaRMSNorm
// (config.norm_weight_offset): ... * (1 + w).
void RmsNorm(const float* x, const float* w, float* out, std::int64_t n, const ModelConfig& config) {
  const float offset = config.norm_weight_offset ? 1.0f : 0.0f;
  float ss = 0;
  for (std::int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
  const float inv = 1.0f / std::sqrt(ss / static_cast<float>(n) + static_cast<float>(config.rms_norm_eps));
  for (std::int64_t i = 0; i < n; ++i) out[i] = (offset + w[i]) * (x[i] * inv);
}

// act(g)·u over n elements, in place in g (transformers' ACT2FN for the activation).
void GatedActivation(float* g, const float* u, std::int64_t n, Activation activation) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f, kInvSqrt2 = 0.7071067811865476f;
  switch (activation) {
    case Activation::kSilu:
      for (std::int64_t i = 0; i < n; ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
      return;
    case Activation::kGelu:
      for (std::int64_t i = 0; i < n; ++i) g[i] = 0.5f * g[i] * (1.0f + std::erf(g[i] * kInvSqrt2)) * u[i];
      return;
    case Activation::kGeluTanh:
      for (std::int64_t i = 0; i < n; ++i) {
        const float x = g[i];
        g[i] = 0.5f * x * (1.0f + std::tanh(kSqrt2OverPi * (x + 0.044715f * x * x * x))) * u[i];
      }
      return;
    case Activation::kRelu:
      for (std::int64_t i = 0; i < n; ++i) g[i] = std::max(g[i], 0.0f) * u[i];
      return;
  }
}

// Rotate-half RoPE on the first `rotated` dimensions of `heads` vectors of
// dimension d at one position (cos/sin: `rotated` entries; the rest pass through).
void Rope(float* v, std::int64_t heads, std::int64_t d, std::int64_t rotated, const float* cos, const float* sin) {
  const std::int64_t half = rotated / 2;
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

struct CausalLM::DecodeWeights {
  struct Layer {
    at::Tensor q, k, v, o, gate, up, down;  // bf16, packed (internal::PackBf16Rows); undefined: fp32 products
    // fp32 merged weights (MergedDecodeWeights) of the adapted projections; undefined: the model's own.
    at::Tensor q32, k32, v32, o32, gate32, up32, down32;
  };
  std::vector<Layer> layers;
  at::Tensor lm_head;
  bool merged = false;  // the installed adapter is folded in (DecodeStep requires it when there is one)
};

namespace {

// The projections DecodeStep multiplies, in DecodeWeights::Layer's order.
constexpr LinearSite kDecodeSites[] = {LinearSite::kQ,    LinearSite::kK,  LinearSite::kV,   LinearSite::kO,
                                       LinearSite::kGate, LinearSite::kUp, LinearSite::kDown};

}  // namespace

std::array<std::pair<at::Tensor, at::Tensor>, 7> CausalLM::DecodeMatrices(std::size_t layer) const {
  const Layer& l = layers_[layer];
  const std::array<at::Tensor, 7> own = {l.q, l.k, l.v, l.o, l.gate, l.up, l.down};
  std::array<std::pair<at::Tensor, at::Tensor>, 7> out;
  NoAutocastScope no_autocast;  // the merge in the weights' dtype, whatever autocast generation runs under
  for (size_t k = 0; k < own.size(); ++k) {
    out[k].first = own[k].detach();
    if (adapter_ == nullptr) continue;
    const at::Tensor m = adapter_->MergedWeight(static_cast<std::int64_t>(layer), kDecodeSites[k], out[k].first);
    // An unadapted site comes back as the model's own weight: no copy of it.
    if (m.data_ptr() != own[k].data_ptr()) out[k].second = m.contiguous();
  }
  return out;
}

std::shared_ptr<const CausalLM::DecodeWeights> CausalLM::Bf16DecodeWeights() const {
  if (!CanDecodeStep() || !internal::Bf16RowDotsInHardware()) return nullptr;
  c10::NoGradGuard no_grad;
  auto w = std::make_shared<DecodeWeights>();
  for (size_t li = 0; li < layers_.size(); ++li) {
    std::array<at::Tensor, 7> packed;
    const auto matrices = DecodeMatrices(li);
    for (size_t k = 0; k < packed.size(); ++k) {
      const auto& [own, merged] = matrices[k];
      packed[k] = internal::PackBf16Rows(merged.defined() ? merged : own);
    }
    w->layers.push_back({packed[0], packed[1], packed[2], packed[3], packed[4], packed[5], packed[6]});
  }
  w->lm_head = internal::PackBf16Rows(lm_head_.detach());
  w->merged = true;  // every matrix packed from the merged weights (the model's own without an adapter)
  return w;
}

std::shared_ptr<const CausalLM::DecodeWeights> CausalLM::MergedDecodeWeights() const {
  if (!CanDecodeStep() || adapter_ == nullptr) return nullptr;
  c10::NoGradGuard no_grad;
  auto w = std::make_shared<DecodeWeights>();
  for (size_t li = 0; li < layers_.size(); ++li) {
    const auto m = DecodeMatrices(li);  // the merged copies only (undefined: unadapted)
    DecodeWeights::Layer layer;
    layer.q32 = m[0].second, layer.k32 = m[1].second, layer.v32 = m[2].second, layer.o32 = m[3].second;
    layer.gate32 = m[4].second, layer.up32 = m[5].second, layer.down32 = m[6].second;
    w->layers.push_back(std::move(layer));
  }
  w->merged = true;
  return w;
}

bool CausalLM::CanDecodeStep() const {
  // A layer runner (sharding) holds shards, not the weights these loops read.
  // An adapter adds terms these loops do not compute.
  // Mixtures of experts route each token through a few of many experts: not these loops.
  // GPT-NeoX's layer (LayerNorms, biases, ungated MLP, parallel residual) is not theirs
  // either, nor GPT-2's (the same, and learned positions), nor Cohere's (RoPE on pairs).
  if (runner_ != nullptr || (adapter_ != nullptr && !adapter_->MergesIntoWeights()) || dtype_ != at::kFloat || !embed_.device().is_cpu() ||
      config_.num_experts > 0 || config_.layer_norm || config_.parallel_residual || !config_.gated_mlp ||
      config_.mlp_bias || config_.learned_positions || config_.rope_interleaved ||
      config_.lm_head_bias || config_.mla() || config_.mamba || config_.clip_qkv > 0) {  // latent attention, state-space layers: not these loops
    return false;
  }
  for (const auto& [name, p] : params_) {
    if (!p.is_contiguous()) return false;
  }
  return true;
}

at::Tensor CausalLM::DecodeStep(const std::vector<std::int64_t>& tokens, const std::vector<std::int64_t>& positions,
                                const std::vector<std::int64_t>& first_slots, KVCache* cache,
                                const DecodeWeights* weights) const {
  TORCH_CHECK(CanDecodeStep(), "DecodeStep needs an fp32 CPU model with contiguous weights");
  TORCH_CHECK(weights == nullptr || weights->layers.size() == layers_.size(), "DecodeStep: weights of another model");
  TORCH_CHECK(adapter_ == nullptr || (weights != nullptr && weights->merged),
              "DecodeStep with an adapter needs its merged weights (Bf16DecodeWeights or MergedDecodeWeights)");
  // The bf16 copy of a matrix (null: fp32 products), and the fp32 matrix: the merged
  // one where the adapter adapts it, else the model's.
  auto wb = [](const at::Tensor& t) { return t.defined() ? t.data_ptr<c10::BFloat16>() : nullptr; };
  auto w32 = [](const at::Tensor& merged, const at::Tensor& own) { return Data(merged.defined() ? merged : own); };
  const DecodeWeights::Layer no_copies;
  const auto B = static_cast<std::int64_t>(tokens.size());
  TORCH_CHECK(B >= 1 && positions.size() == tokens.size() && first_slots.size() == tokens.size(),
              "DecodeStep: one token, position and first slot per sequence");
  TORCH_CHECK(cache != nullptr && !cache->keys.empty() && cache->keys[0].size(0) == B &&
                  cache->keys[0].scalar_type() == at::kFloat && cache->keys[0].is_contiguous(),
              "DecodeStep needs a contiguous fp32 KV cache of batch ", B);
  TORCH_CHECK(cache->length < cache->capacity, "KV cache overflow: capacity ", cache->capacity);
  for (std::int64_t b = 0; b < B; ++b) {
    TORCH_CHECK(tokens[b] >= 0 && tokens[b] < config_.vocab_size, "token id ", tokens[b], " outside the vocabulary");
    TORCH_CHECK(first_slots[b] >= 0 && first_slots[b] <= cache->length, "first_slot outside the cache");
  }
  const std::int64_t Hd = config_.hidden_size, I = config_.intermediate_size;
  const std::int64_t H = config_.num_attention_heads, KV = config_.num_key_value_heads;
  const std::int64_t G = H / KV, D = config_.head_dim, slot = cache->length, cap = cache->capacity;
  // Gemma 2's soft caps: c · tanh(x / c) on the scaled scores and on the logits.
  const auto score_cap = static_cast<float>(config_.attn_logit_softcapping);
  auto at_ = [](std::vector<float>& v, std::int64_t i) { return v.data() + i; };
  const auto residual_multiplier = static_cast<float>(config_.residual_multiplier);  // Granite (1 elsewhere)

  // RoPE tables per sequence, as RopeCosSin computes them: fp32 position times fp32
  // inverse frequency, then cos/sin; duplicated over both halves.
  // Gemma 3's windowed layers have a second table, from their own base.
  // longrope and dynamic NTK: the table for this step's largest position (as
  // RopeCosSin decides); longrope and yarn: cos and sin times the attention factor.
  const std::int64_t length =
      RopeDependsOnLength() && !positions.empty() ? *std::max_element(positions.begin(), positions.end()) + 1 : 0;
  const at::Tensor global_inv_freq = GlobalInvFreq(length);
  const auto global_scaling = static_cast<float>(rope_attention_scaling_);
  const std::int64_t R = config_.rotary_dim();  // RoPE's dimensions of each head (partial rotary: < D)
  auto rope_tables = [&](const at::Tensor& inv_freq_table, float scaling, std::vector<float>& cos, std::vector<float>& sin) {
    cos.resize(static_cast<size_t>(B * R));
    sin.resize(static_cast<size_t>(B * R));
    const float* inv_freq = inv_freq_table.data_ptr<float>();
    for (std::int64_t b = 0; b < B; ++b) {
      for (std::int64_t i = 0; i < R / 2; ++i) {
        const float f = static_cast<float>(positions[b]) * inv_freq[i];
        cos[b * R + i] = cos[b * R + i + R / 2] = std::cos(f) * scaling;
        sin[b * R + i] = sin[b * R + i + R / 2] = std::sin(f) * scaling;
      }
    }
  };
  std::vector<float> global_cos, global_sin, local_cos, local_sin;
  rope_tables(global_inv_freq, global_scaling, global_cos, global_sin);
  if (local_inv_freq_.defined()) rope_tables(local_inv_freq_, 1.0f, local_cos, local_sin);

  std::vector<float> x(B * Hd), xn(B * Hd), q(B * H * D), k(B * KV * D), v(B * KV * D), attn(B * H * D);
  std::vector<float> out(B * Hd), gate(B * I), up(B * I);
  for (std::int64_t b = 0; b < B; ++b) std::copy_n(embed_.data_ptr<float>() + tokens[b] * Hd, Hd, at_(x, b * Hd));
  if (config_.embedding_multiplier != 1.0) {  // Granite (Embed)
    const auto factor = static_cast<float>(config_.embedding_multiplier);
    for (float& e : x) e *= factor;
  } else if (config_.scale_embeddings) {  // Gemma: times sqrt(hidden_size), that factor in fp32 (Embed)
    const auto factor = static_cast<float>(std::sqrt(static_cast<double>(Hd)));
    for (float& e : x) e *= factor;
  }
  for (size_t li = 0; li < layers_.size(); ++li) {
    const Layer& l = layers_[li];
    const DecodeWeights::Layer& l16 = weights != nullptr ? weights->layers[li] : no_copies;
    if (l.input_norm.defined()) {
      for (std::int64_t b = 0; b < B; ++b) RmsNorm(at_(x, b * Hd), Data(l.input_norm), at_(xn, b * Hd), Hd, config_);
    } else {  // OLMo 2: no norm before the attention
      xn = x;
    }
    MatVecs({{w32(l16.q32, l.q), Data(l.q_bias), q.data(), H * D, wb(l16.q)}}, xn.data(), B, Hd, H * D);
    MatVecs({{w32(l16.k32, l.k), Data(l.k_bias), k.data(), KV * D, wb(l16.k)},
             {w32(l16.v32, l.v), Data(l.v_bias), v.data(), KV * D, wb(l16.v)}},
            xn.data(), B, Hd, KV * D);
    float* keys = cache->keys[li].data_ptr<float>();  // [B, KV, cap, D]
    float* values = cache->values[li].data_ptr<float>();
    if (config_.qk_norm && config_.qk_norm_over_heads) {  // OLMo 2: over each sequence's whole q and k
      for (std::int64_t b = 0; b < B; ++b) RmsNorm(at_(q, b * H * D), Data(l.q_norm), at_(q, b * H * D), H * D, config_);
      for (std::int64_t b = 0; b < B; ++b) RmsNorm(at_(k, b * KV * D), Data(l.k_norm), at_(k, b * KV * D), KV * D, config_);
    } else if (config_.qk_norm) {  // Qwen3: RMSNorm over each head's D dims, before RoPE
      for (std::int64_t i = 0; i < B * H; ++i) RmsNorm(at_(q, i * D), Data(l.q_norm), at_(q, i * D), D, config_);
      for (std::int64_t i = 0; i < B * KV; ++i) RmsNorm(at_(k, i * D), Data(l.k_norm), at_(k, i * D), D, config_);
    }
    const bool local = config_.uses_local_rope(static_cast<std::int64_t>(li));
    std::vector<float>& cos = local ? local_cos : global_cos;
    std::vector<float>& sin = local ? local_sin : global_sin;
    for (std::int64_t b = 0; b < B; ++b) {
      if (config_.uses_rope(static_cast<std::int64_t>(li))) {  // SmolLM3's NoPE layers skip it
        Rope(at_(q, b * H * D), H, D, R, at_(cos, b * R), at_(sin, b * R));
        Rope(at_(k, b * KV * D), KV, D, R, at_(cos, b * R), at_(sin, b * R));
      }
      float* kb = keys + b * KV * cap * D;
      float* vb = values + b * KV * cap * D;
      for (std::int64_t h = 0; h < KV; ++h) {
        std::copy_n(at_(k, (b * KV + h) * D), D, kb + (h * cap + slot) * D);
        std::copy_n(at_(v, (b * KV + h) * D), D, vb + (h * cap + slot) * D);
      }
    }
    // Attention: query head h of sequence b reads key/value head h / G over slots
    // [first_slots[b], slot]; (sequence, head) pairs run in parallel.
    const DotFn dot = Dot();
    const std::int64_t window = config_.window_of(static_cast<std::int64_t>(li));
    const auto scale = static_cast<float>(config_.attention_scale(static_cast<std::int64_t>(li)));
#if defined(__x86_64__)
    const bool avx512 = DetectCpu().avx512f;
#endif
    auto attend = [&](std::int64_t begin, std::int64_t end) {
      std::vector<float> scores(static_cast<size_t>(slot + 1));
      for (std::int64_t bh = begin; bh < end; ++bh) {
        const std::int64_t b = bh / H, h = bh % H;
        const float* kh = keys + (b * KV + h / G) * cap * D;
        const float* vh = values + (b * KV + h / G) * cap * D;
        const float* qh = at_(q, bh * D);
        // With a sliding window, the last `window` slots only (transformers' mask, in slots).
        const std::int64_t first = window > 0 ? std::max(first_slots[b], slot - window + 1) : first_slots[b];
#if defined(__x86_64__)
        if (avx512) {
          ScoresAvx512(qh, kh, first, slot, D, scale, scores.data());
        } else
#endif
        {
          for (std::int64_t s = first; s <= slot; ++s) scores[static_cast<size_t>(s)] = dot(qh, kh + s * D, D) * scale;
        }
        float top = -INFINITY;
        for (std::int64_t s = first; s <= slot; ++s) {
          float& score = scores[static_cast<size_t>(s)];
          if (score_cap > 0) score = std::tanh(score / score_cap) * score_cap;
          top = std::max(top, score);
        }
        float sum = 0;
        for (std::int64_t s = first; s <= slot; ++s) {
          scores[static_cast<size_t>(s)] = std::exp(scores[static_cast<size_t>(s)] - top);
          sum += scores[static_cast<size_t>(s)];
        }
        float* o = at_(attn, bh * D);
#if defined(__x86_64__)
        if (avx512) {
          WeightedValuesAvx512(scores.data(), sum, vh, first, slot, D, o);
          continue;
        }
#endif
        std::fill_n(o, D, 0.0f);
        for (std::int64_t s = first; s <= slot; ++s) {
          const float a = scores[static_cast<size_t>(s)] / sum;
          const float* vs = vh + s * D;
          for (std::int64_t i = 0; i < D; ++i) o[i] += a * vs[i];
        }
      }
    };
    if (B * H * (slot + 1) * D < (std::int64_t{1} << 15) || DetectCpu().cores == 1) {
      attend(0, B * H);
    } else {
      tbb::parallel_for(tbb::blocked_range<std::int64_t>(0, B * H, 1),
                        [&](const tbb::blocked_range<std::int64_t>& r) { attend(r.begin(), r.end()); });
    }
    MatVecs({{w32(l16.o32, l.o), Data(l.o_bias), out.data(), Hd, wb(l16.o)}}, attn.data(), B, H * D, Hd);
    if (config_.sandwich_norms) {  // Gemma 2: the attention's output normalised before the residual add
      for (std::int64_t b = 0; b < B; ++b) RmsNorm(at_(out, b * Hd), Data(l.post_norm), at_(out, b * Hd), Hd, config_);
    }
    for (std::int64_t i = 0; i < B * Hd; ++i) x[i] += out[i] * residual_multiplier;
    const at::Tensor& mlp_norm = config_.sandwich_norms ? l.pre_ff_norm : l.post_norm;
    if (mlp_norm.defined()) {
      for (std::int64_t b = 0; b < B; ++b) RmsNorm(at_(x, b * Hd), Data(mlp_norm), at_(xn, b * Hd), Hd, config_);
    } else {  // OLMo 2: no norm before the MLP
      xn = x;
    }
    MatVecs({{w32(l16.gate32, l.gate), nullptr, gate.data(), I, wb(l16.gate)},
             {w32(l16.up32, l.up), nullptr, up.data(), I, wb(l16.up)}},
            xn.data(), B, Hd, I);
    GatedActivation(gate.data(), up.data(), B * I, config_.activation());
    MatVecs({{w32(l16.down32, l.down), nullptr, out.data(), Hd, wb(l16.down)}}, gate.data(), B, I, Hd);
    if (config_.sandwich_norms) {
      for (std::int64_t b = 0; b < B; ++b) RmsNorm(at_(out, b * Hd), Data(l.post_ff_norm), at_(out, b * Hd), Hd, config_);
    }
    for (std::int64_t i = 0; i < B * Hd; ++i) x[i] += out[i] * residual_multiplier;
  }
  cache->length = slot + 1;
  for (std::int64_t b = 0; b < B; ++b) RmsNorm(at_(x, b * Hd), final_norm_.data_ptr<float>(), at_(xn, b * Hd), Hd, config_);
  at::Tensor logits = at::empty({B, config_.vocab_size}, options().dtype(at::kFloat));  // CPU only (CanDecodeStep)
  MatVecs({{lm_head_.data_ptr<float>(), nullptr, logits.data_ptr<float>(), config_.vocab_size,
            weights != nullptr ? wb(weights->lm_head) : nullptr}}, xn.data(), B, Hd,
          config_.vocab_size);
  if (config_.logits_scaling != 1.0) logits = logits / config_.logits_scaling;  // Granite, as Logits does
  if (config_.logit_scale != 1.0) logits = logits * config_.logit_scale;        // Cohere, as Logits does
  if (config_.final_logit_softcapping > 0) {
    const double cap = config_.final_logit_softcapping;
    logits = at::tanh(logits / cap) * cap;  // as Logits does
  }
  return logits;
}

}  // namespace posttrain

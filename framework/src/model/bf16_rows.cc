#include "posttrain/model/bf16_rows.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "posttrain/core/threads.h"

namespace posttrain::internal {
namespace {

float Widen(c10::BFloat16 v) { return static_cast<float>(v); }

constexpr std::int64_t kBlock = 16;  // rows per packed block (fp32 lanes of a 512-bit vector)

void PackedRowDotsPortable(const c10::BFloat16* packed, std::int64_t rows, std::int64_t n2, std::int64_t block_begin,
                           std::int64_t block_end, const c10::BFloat16* const* x, std::int64_t count,
                           const float* bias, float* y, std::int64_t ldy) {
  for (std::int64_t blk = block_begin; blk < block_end; ++blk) {
    const c10::BFloat16* wb = packed + blk * n2 * 2 * kBlock;
    for (std::int64_t i = 0; i < kBlock && blk * kBlock + i < rows; ++i) {
      const std::int64_t r = blk * kBlock + i;
      for (std::int64_t b = 0; b < count; ++b) {
        float s = 0;
        for (std::int64_t p = 0; p < n2; ++p) {
          s += Widen(wb[(p * kBlock + i) * 2]) * Widen(x[b][2 * p]) + Widen(wb[(p * kBlock + i) * 2 + 1]) * Widen(x[b][2 * p + 1]);
        }
        y[b * ldy + r] = s + (bias != nullptr ? bias[r] : 0.0f);
      }
    }
  }
}

#if defined(__x86_64__)
#define POSTTRAIN_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512bf16")))

// One block of 16 rows times C inputs: lane i of acc[c] sums row i's products with
// input c, two columns per instruction; each weight vector is loaded once for the
// C inputs, each input pair broadcast from memory.
template <int C>
POSTTRAIN_BF16_TARGET inline void PackedBlock(const c10::BFloat16* wb, std::int64_t n2, const c10::BFloat16* const* x,
                                              __m512 (&acc)[C]) {
  for (int c = 0; c < C; ++c) acc[c] = _mm512_setzero_ps();
  for (std::int64_t p = 0; p < n2; ++p) {
    const __m512i w = _mm512_loadu_si512(wb + p * 2 * kBlock);
    for (int c = 0; c < C; ++c) {
      std::int32_t pair;
      std::memcpy(&pair, x[c] + 2 * p, sizeof(pair));
      acc[c] = _mm512_dpbf16_ps(acc[c], (__m512bh)w, (__m512bh)_mm512_set1_epi32(pair));
    }
  }
}

template <int C>
POSTTRAIN_BF16_TARGET inline void PackedBlockStore(const c10::BFloat16* wb, std::int64_t n2, const c10::BFloat16* const* x,
                                                   __mmask16 mask, __m512 add, float* y, std::int64_t ldy) {
  __m512 acc[C];
  PackedBlock<C>(wb, n2, x, acc);
  for (int c = 0; c < C; ++c) _mm512_mask_storeu_ps(y + c * ldy, mask, _mm512_add_ps(acc[c], add));
}

POSTTRAIN_BF16_TARGET void PackedRowDotsAvx512Bf16(const c10::BFloat16* packed, std::int64_t rows, std::int64_t n2,
                                                   std::int64_t block_begin, std::int64_t block_end,
                                                   const c10::BFloat16* const* x, std::int64_t count,
                                                   const float* bias, float* y, std::int64_t ldy) {
  for (std::int64_t blk = block_begin; blk < block_end; ++blk) {
    const c10::BFloat16* wb = packed + blk * n2 * 2 * kBlock;
    const std::int64_t r0 = blk * kBlock, valid = std::min(kBlock, rows - r0);
    const auto mask = static_cast<__mmask16>((1u << valid) - 1);
    const __m512 add = bias != nullptr ? _mm512_maskz_loadu_ps(mask, bias + r0) : _mm512_setzero_ps();
    for (std::int64_t b = 0; b < count; b += 8) {
      const c10::BFloat16* const* xb = x + b;
      float* yb = y + b * ldy + r0;
      switch (std::min<std::int64_t>(8, count - b)) {
        case 8: PackedBlockStore<8>(wb, n2, xb, mask, add, yb, ldy); break;
        case 7: PackedBlockStore<7>(wb, n2, xb, mask, add, yb, ldy); break;
        case 6: PackedBlockStore<6>(wb, n2, xb, mask, add, yb, ldy); break;
        case 5: PackedBlockStore<5>(wb, n2, xb, mask, add, yb, ldy); break;
        case 4: PackedBlockStore<4>(wb, n2, xb, mask, add, yb, ldy); break;
        case 3: PackedBlockStore<3>(wb, n2, xb, mask, add, yb, ldy); break;
        case 2: PackedBlockStore<2>(wb, n2, xb, mask, add, yb, ldy); break;
        default: PackedBlockStore<1>(wb, n2, xb, mask, add, yb, ldy); break;
      }
    }
  }
}

POSTTRAIN_BF16_TARGET void RoundAvx512Bf16(const float* src, c10::BFloat16* dst, std::int64_t n) {
  std::int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256bh v = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), (__m256i)v);
  }
  for (; i < n; ++i) dst[i] = c10::BFloat16(src[i]);
}
#undef POSTTRAIN_BF16_TARGET
#endif

}  // namespace

bool Bf16RowDotsInHardware() {
#if defined(__x86_64__)
  return DetectCpu().avx512_bf16;
#else
  return false;
#endif
}

at::Tensor PackBf16Rows(const at::Tensor& w) {
  TORCH_CHECK(w.dim() == 2 && w.is_cpu(), "PackBf16Rows: a CPU matrix [rows, n]");
  const std::int64_t rows = w.size(0), n = w.size(1);
  const std::int64_t blocks = (rows + kBlock - 1) / kBlock, n2 = Bf16InputStride(n) / 2;
  at::Tensor padded = at::zeros({blocks * kBlock, 2 * n2}, w.options().dtype(at::kBFloat16));
  padded.narrow(0, 0, rows).narrow(1, 0, n).copy_(w);  // rounds to nearest even
  return padded.view({blocks, kBlock, n2, 2}).permute({0, 2, 1, 3}).contiguous();
}

void Bf16PackedRowDots(const c10::BFloat16* packed, std::int64_t rows, std::int64_t n, std::int64_t block_begin,
                       std::int64_t block_end, const c10::BFloat16* const* x, std::int64_t count, const float* bias,
                       float* y, std::int64_t ldy) {
  const std::int64_t n2 = Bf16InputStride(n) / 2;
#if defined(__x86_64__)
  if (Bf16RowDotsInHardware()) {
    PackedRowDotsAvx512Bf16(packed, rows, n2, block_begin, block_end, x, count, bias, y, ldy);
    return;
  }
#endif
  PackedRowDotsPortable(packed, rows, n2, block_begin, block_end, x, count, bias, y, ldy);
}

void RoundToBf16(const float* src, c10::BFloat16* dst, std::int64_t n) {
#if defined(__x86_64__)
  if (Bf16RowDotsInHardware()) {
    RoundAvx512Bf16(src, dst, n);
    return;
  }
#endif
  for (std::int64_t i = 0; i < n; ++i) dst[i] = c10::BFloat16(src[i]);
}

}  // namespace posttrain::internal

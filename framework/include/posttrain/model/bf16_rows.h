// Matrix-vector products with bf16 operands and fp32 accumulation, for the fused
// decode step (model/decode_step.cc) under bf16 autocast.
//
// Why: decoding a few sequences reads every weight once per token, so it is bound by
// memory and by the multiply-add rate. bf16 weights halve the bytes, and AVX512-BF16's
// vdpbf16ps does 32 bf16 products per instruction (two per fp32 lane, summed in fp32)
// against 16 fp32 FMAs. The operands are what bf16 autocast gives at::linear (weights
// and inputs rounded to bf16, round-to-nearest-even); the sums stay fp32 and are not
// rounded to bf16 afterwards (autocast's at::linear would round its output).
//
// Layout: the weight is packed once (PackBf16Rows) in blocks of 16 rows, each pair of
// adjacent columns of the block's rows side by side — one 64-byte vector holds
// columns 2p and 2p+1 of 16 rows — so a lane of the accumulator is one output row:
// no horizontal sums (at hidden size 288 those cost as much as the products), and
// the weights stream through memory in order.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>

#include <cstdint>

namespace posttrain::internal {

// Whether this CPU runs Bf16PackedRowDots in hardware (AVX512-BF16). Elsewhere it runs
// a portable loop, correct but slower than fp32: callers choose bf16 only where this holds.
bool Bf16RowDotsInHardware();

// w [rows, n] (any float dtype, CPU) rounded to bf16 and packed: a contiguous bf16
// tensor [ceil(rows / 16), ceil(n / 2), 16, 2] with element [b, p, i, j] =
// w[16 b + i, 2 p + j], zero past the matrix's edges.
at::Tensor PackBf16Rows(const at::Tensor& w);

// Inputs padded for the products: n rounded up to even (the products read columns in
// pairs; the padding must hold zeros).
inline std::int64_t Bf16InputStride(std::int64_t n) { return n + (n & 1); }

// y[b * ldy + r] = Σ_i w[r, i] · x[b][i] (+ bias[r]) for rows r of row blocks
// [block_begin, block_end) (16 rows each, the last cut at `rows`) and inputs
// b < count: `packed` from PackBf16Rows(w) with w [rows, n]; each x[b] holds
// Bf16InputStride(n) bf16 values (zero past n). fp32 products and sums; each
// weight vector is loaded once for up to 8 inputs.
void Bf16PackedRowDots(const c10::BFloat16* packed, std::int64_t rows, std::int64_t n, std::int64_t block_begin,
                       std::int64_t block_end, const c10::BFloat16* const* x, std::int64_t count, const float* bias,
                       float* y, std::int64_t ldy);

// dst[i] = src[i] rounded to bf16 (nearest, ties to even; NaN stays NaN), as c10::BFloat16.
void RoundToBf16(const float* src, c10::BFloat16* dst, std::int64_t n);

}  // namespace posttrain::internal

// fp32 matrix products of the chunked LM-head losses (token_logprobs.cc) through
// oneDNN's sgemm where the build has it (libdnnl-dev), else through libtorch.
//
// Why: libtorch 1.13's fp32 matmul goes to the system BLAS, and OpenBLAS may be
// pinned to an older core's kernels (the machines this runs on select Haswell's:
// AVX2 on AVX-512 CPUs). oneDNN picks its kernels from the CPU at run time:
// the head's three products of a 250-row chunk at vocabulary 32,000, dim 288, on two
// cores measured 200-231 / 373-376 / 239-337 GFLOP/s against OpenBLAS's 127-156 /
// 155-162 / 135-172 (logits, grad_hidden, grad_weight accumulation). The products
// run on every core (oneDNN's OpenMP threads) even where fp32 element-wise work
// keeps one OpenMP thread (core/threads.h).
#pragma once

#include <ATen/ATen.h>

namespace posttrain::internal {

// out [M, N] = a [M, K] · b [K, N], plus out's old value when `accumulate`.
// a and b may be transposed views (either stride 1); out must be contiguous. fp32
// operands into fp32 out, or bf16 operands into fp32 out (fp32 accumulation, no
// bf16 rounding of the product: autocast's LM-head products, whose fp32 results
// libtorch would produce as bf16 and then cast, 11 ms per chunk at vocabulary 32,000).
// Any other case (dtype, device, layout) goes through at::mm_out / addmm_ (mixed
// dtypes: the product in a's dtype, then cast).
void MatmulInto(at::Tensor& out, const at::Tensor& a, const at::Tensor& b, bool accumulate);

// Whether MatmulInto uses oneDNN for fp32 (and bf16 into fp32) CPU tensors in this build.
bool MatmulUsesOneDnn();

// at::linear(x, w, b) — x [.., in], w [out, in], b [out] or undefined — with its
// forward and backward products through MatmulInto when they would use oneDNN (fp32
// CPU tensors, autocast off); otherwise at::linear itself. Differentiable in x, w
// and b (backward: grad_x = g·w, grad_w = gᵀ·x, grad_b = Σ g).
at::Tensor Linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b = at::Tensor());

}  // namespace posttrain::internal

#include "posttrain/model/gemm.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>

#include <torch/csrc/autograd/custom_function.h>

#include "posttrain/core/autocast.h"
#include "posttrain/core/threads.h"

#if defined(POSTTRAIN_WITH_ONEDNN)
#include <omp.h>
#include <oneapi/dnnl/dnnl.h>

// oneDNN's bf16 GEMM with fp32 output, row-major as dnnl_sgemm: exported by libdnnl
// since 1.x but declared only in its tests' headers (and by its users, e.g. Intel's
// TensorFlow extension), so declared here. A and B hold bf16 bit patterns.
extern "C" dnnl_status_t dnnl_gemm_bf16bf16f32(char transa, char transb, dnnl_dim_t M, dnnl_dim_t N, dnnl_dim_t K,
                                               float alpha, const std::uint16_t* A, dnnl_dim_t lda,
                                               const std::uint16_t* B, dnnl_dim_t ldb, float beta, float* C,
                                               dnnl_dim_t ldc);
#endif

namespace posttrain::internal {
namespace {

#if defined(POSTTRAIN_WITH_ONEDNN)
// A row-major operand for sgemm: 'N' with its row stride, or 'T' (a transposed
// view of a row-major matrix) with its column stride.
bool Operand(const at::Tensor& t, char* trans, std::int64_t* ld) {
  if (t.stride(1) == 1 && t.stride(0) >= std::max<std::int64_t>(1, t.size(1))) {
    *trans = 'N';
    *ld = t.stride(0);
    return true;
  }
  if (t.stride(0) == 1 && t.stride(1) >= std::max<std::int64_t>(1, t.size(0))) {
    *trans = 'T';
    *ld = t.stride(1);
    return true;
  }
  return false;
}

// OpenMP threads for one call: every core, then what the caller had. OMP_NUM_THREADS,
// when set (`posttrain launch` shares the cores out between ranks with it), wins.
class AllCores {
 public:
  AllCores() : before_(omp_get_max_threads()) {
    static const bool fixed = std::getenv("OMP_NUM_THREADS") != nullptr;
    const int cores = DetectCpu().cores;
    if (!fixed && before_ < cores) omp_set_num_threads(cores);
  }
  ~AllCores() { omp_set_num_threads(before_); }
  AllCores(const AllCores&) = delete;
  AllCores& operator=(const AllCores&) = delete;

 private:
  int before_;
};
#endif

}  // namespace

bool MatmulUsesOneDnn() {
#if defined(POSTTRAIN_WITH_ONEDNN)
  return true;
#else
  return false;
#endif
}

void MatmulInto(at::Tensor& out, const at::Tensor& a, const at::Tensor& b, bool accumulate) {
  TORCH_CHECK(a.dim() == 2 && b.dim() == 2 && out.dim() == 2 && a.size(1) == b.size(0) && out.size(0) == a.size(0) &&
                  out.size(1) == b.size(1),
              "MatmulInto: out [M, N] = a [M, K] · b [K, N] expected");
#if defined(POSTTRAIN_WITH_ONEDNN)
  char ta = 'N', tb = 'N';
  std::int64_t lda = 0, ldb = 0;
  const bool fp32_cpu = out.scalar_type() == at::kFloat && a.scalar_type() == at::kFloat &&
                        b.scalar_type() == at::kFloat && out.is_cpu() && a.is_cpu() && b.is_cpu();
  const bool bf16_cpu = out.scalar_type() == at::kFloat && a.scalar_type() == at::kBFloat16 &&
                        b.scalar_type() == at::kBFloat16 && out.is_cpu() && a.is_cpu() && b.is_cpu();
  if ((fp32_cpu || bf16_cpu) && out.is_contiguous() && a.numel() > 0 && b.numel() > 0 && Operand(a, &ta, &lda) &&
      Operand(b, &tb, &ldb)) {
    AllCores threads;
    const float beta = accumulate ? 1.0f : 0.0f;
    const dnnl_status_t status =
        fp32_cpu ? dnnl_sgemm(ta, tb, a.size(0), b.size(1), a.size(1), 1.0f, a.data_ptr<float>(), lda,
                              b.data_ptr<float>(), ldb, beta, out.data_ptr<float>(), out.size(1))
                 : dnnl_gemm_bf16bf16f32(ta, tb, a.size(0), b.size(1), a.size(1), 1.0f,
                                         reinterpret_cast<const std::uint16_t*>(a.data_ptr<at::BFloat16>()), lda,
                                         reinterpret_cast<const std::uint16_t*>(b.data_ptr<at::BFloat16>()), ldb, beta,
                                         out.data_ptr<float>(), out.size(1));
    TORCH_CHECK(status == dnnl_success, "oneDNN gemm failed (status ", static_cast<int>(status), ")");
    return;
  }
#endif
  if (out.scalar_type() != a.scalar_type() || out.scalar_type() != b.scalar_type()) {
    // Mixed precision without oneDNN: the product in the operands' dtype, then out's.
    const at::Tensor product = at::mm(a, b.to(a.scalar_type())).to(out.scalar_type());
    if (accumulate) {
      out.add_(product);
    } else {
      out.copy_(product);
    }
    return;
  }
  if (accumulate) {
    out.addmm_(a, b);
  } else {
    at::mm_out(out, a, b);
  }
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// x [N, in] · wᵀ + b (b empty: none), both products of backward through MatmulInto too.
class LinearFunction : public torch::autograd::Function<LinearFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
    at::Tensor y = at::empty({x.size(0), w.size(0)}, x.options());
    MatmulInto(y, x, w.t(), /*accumulate=*/false);
    const bool bias = b.numel() > 0;
    if (bias) y.add_(b);
    ctx->save_for_backward({x, w});
    ctx->saved_data["bias"] = bias;
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1], &g = grad_outputs[0];
    at::Tensor gx, gw, gb;
    if (ctx->needs_input_grad(0)) {
      gx = at::empty(x.sizes(), x.options());
      MatmulInto(gx, g, w, false);
    }
    if (ctx->needs_input_grad(1)) {
      gw = at::empty(w.sizes(), w.options());
      MatmulInto(gw, g.t(), x, false);
    }
    if (ctx->saved_data["bias"].toBool() && ctx->needs_input_grad(2)) gb = g.sum(0);
    return {gx, gw, gb};
  }
};

}  // namespace

at::Tensor Linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  const bool fused = MatmulUsesOneDnn() && x.scalar_type() == at::kFloat && w.scalar_type() == at::kFloat &&
                     (!b.defined() || b.scalar_type() == at::kFloat) && x.is_cpu() && w.is_cpu() && x.dim() >= 1 &&
                     w.dim() == 2 && x.size(-1) == w.size(1) && !AutocastEnabled(at::kCPU) && x.numel() > 0;
  if (!fused) return at::linear(x, w, b);
  std::vector<std::int64_t> shape = x.sizes().vec();
  shape.back() = w.size(0);
  // No bias: an empty tensor (an autograd Function's inputs must be defined).
  return LinearFunction::apply(x.reshape({-1, x.size(-1)}), w, b.defined() ? b : at::zeros({0}, x.options()))
      .view(shape);
}

}  // namespace posttrain::internal

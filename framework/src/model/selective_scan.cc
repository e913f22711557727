#include "posttrain/model/selective_scan.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/custom_function.h>

namespace posttrain::internal {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Rows (b, i) are independent: each runs its own loop over t. Pointers into
// contiguous [B, T, I, N] / [B, T, N] / [B, I, N] / [B, T, I] tensors.
template <typename scalar_t>
void ScanForward(const scalar_t* decay, const scalar_t* input, const scalar_t* C, const scalar_t* s0, scalar_t* y,
                 scalar_t* states, scalar_t* last, std::int64_t B, std::int64_t T, std::int64_t I, std::int64_t N) {
  at::parallel_for(0, B * I, std::max<std::int64_t>(1, 4096 / std::max<std::int64_t>(1, T * N)), [&](std::int64_t begin, std::int64_t end) {
    std::vector<scalar_t> s(static_cast<size_t>(N));
    for (std::int64_t row = begin; row < end; ++row) {
      const std::int64_t b = row / I, i = row % I;
      for (std::int64_t n = 0; n < N; ++n) s[n] = s0[(b * I + i) * N + n];
      for (std::int64_t t = 0; t < T; ++t) {
        const std::int64_t at = ((b * T + t) * I + i) * N;
        const scalar_t* c = C + (b * T + t) * N;
        scalar_t acc = 0;
        for (std::int64_t n = 0; n < N; ++n) {
          s[n] = decay[at + n] * s[n] + input[at + n];
          acc += s[n] * c[n];
          if (states != nullptr) states[at + n] = s[n];
        }
        y[(b * T + t) * I + i] = acc;
      }
      for (std::int64_t n = 0; n < N; ++n) last[(b * I + i) * N + n] = s[n];
    }
  });
}

// The same rows backwards: g = ∂L/∂s_t collects y_t's term gy_t · C_t, gives input_t
// its gradient and decay_t g ⊙ s_{t-1}, then passes g ⊙ decay_t on to s_{t-1}.
template <typename scalar_t>
void ScanBackward(const scalar_t* decay, const scalar_t* C, const scalar_t* s0, const scalar_t* states,
                  const scalar_t* gy, const scalar_t* glast, scalar_t* gdecay, scalar_t* ginput, scalar_t* gs0,
                  std::int64_t B, std::int64_t T, std::int64_t I, std::int64_t N) {
  at::parallel_for(0, B * I, std::max<std::int64_t>(1, 4096 / std::max<std::int64_t>(1, T * N)), [&](std::int64_t begin, std::int64_t end) {
    std::vector<scalar_t> g(static_cast<size_t>(N));
    for (std::int64_t row = begin; row < end; ++row) {
      const std::int64_t b = row / I, i = row % I;
      for (std::int64_t n = 0; n < N; ++n) g[n] = glast != nullptr ? glast[(b * I + i) * N + n] : scalar_t(0);
      for (std::int64_t t = T - 1; t >= 0; --t) {
        const std::int64_t at = ((b * T + t) * I + i) * N;
        const scalar_t* c = C + (b * T + t) * N;
        const scalar_t* prev = t > 0 ? states + ((b * T + t - 1) * I + i) * N : s0 + (b * I + i) * N;
        const scalar_t gyt = gy != nullptr ? gy[(b * T + t) * I + i] : scalar_t(0);
        for (std::int64_t n = 0; n < N; ++n) {
          g[n] += gyt * c[n];
          ginput[at + n] = g[n];
          gdecay[at + n] = g[n] * prev[n];
          g[n] *= decay[at + n];
        }
      }
      for (std::int64_t n = 0; n < N; ++n) gs0[(b * I + i) * N + n] = g[n];
    }
  });
}

class SelectiveScanFunction : public torch::autograd::Function<SelectiveScanFunction> {
 public:
  // grad: whether a backward may follow (the states are kept for it).
  static variable_list forward(AutogradContext* ctx, const at::Tensor& decay, const at::Tensor& input, const at::Tensor& C,
                               const at::Tensor& s0, bool grad) {
    const std::int64_t B = decay.size(0), T = decay.size(1), I = decay.size(2), N = decay.size(3);
    at::Tensor y = at::empty({B, T, I}, decay.options());
    at::Tensor last = at::empty({B, I, N}, decay.options());
    at::Tensor states = grad ? at::empty(decay.sizes(), decay.options()) : at::Tensor();
    AT_DISPATCH_FLOATING_TYPES(decay.scalar_type(), "SelectiveScan", [&] {
      ScanForward<scalar_t>(decay.data_ptr<scalar_t>(), input.data_ptr<scalar_t>(), C.data_ptr<scalar_t>(),
                            s0.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(),
                            states.defined() ? states.data_ptr<scalar_t>() : nullptr, last.data_ptr<scalar_t>(), B, T, I, N);
    });
    if (grad) ctx->save_for_backward({decay, C, s0, states});
    return {y, last};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &decay = saved[0], &C = saved[1], &s0 = saved[2], &states = saved[3];
    const std::int64_t B = decay.size(0), T = decay.size(1), I = decay.size(2), N = decay.size(3);
    const at::Tensor gy = grads[0].defined() ? grads[0].contiguous() : at::Tensor();
    const at::Tensor glast = grads[1].defined() ? grads[1].contiguous() : at::Tensor();
    at::Tensor gdecay = at::empty(decay.sizes(), decay.options()), ginput = at::empty(decay.sizes(), decay.options());
    at::Tensor gs0 = at::empty(s0.sizes(), s0.options());
    AT_DISPATCH_FLOATING_TYPES(decay.scalar_type(), "SelectiveScanBackward", [&] {
      ScanBackward<scalar_t>(decay.data_ptr<scalar_t>(), C.data_ptr<scalar_t>(), s0.data_ptr<scalar_t>(),
                             states.data_ptr<scalar_t>(), gy.defined() ? gy.data_ptr<scalar_t>() : nullptr,
                             glast.defined() ? glast.data_ptr<scalar_t>() : nullptr, gdecay.data_ptr<scalar_t>(),
                             ginput.data_ptr<scalar_t>(), gs0.data_ptr<scalar_t>(), B, T, I, N);
    });
    // ∂L/∂C_t[n] = Σ_i gy_t[i] s_t[i, n]: one batched product over the stored states.
    at::Tensor gC = gy.defined() ? at::matmul(gy.unsqueeze(-2), states).squeeze(-2) : at::zeros(C.sizes(), C.options());
    return {gdecay, ginput, gC, gs0, at::Tensor()};
  }
};

}  // namespace

std::pair<at::Tensor, at::Tensor> SelectiveScan(const at::Tensor& decay, const at::Tensor& input, const at::Tensor& C,
                                                const at::Tensor& s0) {
  TORCH_CHECK(decay.dim() == 4 && input.sizes() == decay.sizes(), "SelectiveScan: decay and input must be [B, T, I, N], got ",
              decay.sizes(), " and ", input.sizes());
  const std::int64_t B = decay.size(0), T = decay.size(1), I = decay.size(2), N = decay.size(3);
  TORCH_CHECK(C.sizes() == at::IntArrayRef({B, T, N}) && s0.sizes() == at::IntArrayRef({B, I, N}),
              "SelectiveScan: C must be [B, T, N] and s0 [B, I, N], got ", C.sizes(), " and ", s0.sizes());
  TORCH_CHECK(decay.is_cpu() && (decay.scalar_type() == at::kFloat || decay.scalar_type() == at::kDouble) &&
                  input.scalar_type() == decay.scalar_type() && C.scalar_type() == decay.scalar_type() &&
                  s0.scalar_type() == decay.scalar_type(),
              "SelectiveScan: fp32 or fp64 CPU tensors of one dtype");
  const bool grad = at::GradMode::is_enabled() &&
                    (decay.requires_grad() || input.requires_grad() || C.requires_grad() || s0.requires_grad());
  const variable_list out =
      SelectiveScanFunction::apply(decay.contiguous(), input.contiguous(), C.contiguous(), s0.contiguous(), grad);
  return {out[0], out[1]};
}

}  // namespace posttrain::internal

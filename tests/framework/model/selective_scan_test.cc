// internal::SelectiveScan (Mamba's scan as one C++ loop with a hand-written backward)
// against the recurrence written as libtorch operations, one token at a time as
// transformers' MambaMixer.slow_forward loops, differentiated by autograd: values,
// last state and the gradients of all four inputs in fp64, with a nonzero initial
// state and gradients arriving through both outputs; fp32 within rounding; and the
// edge cases T = 1 and an unused output.
#include "posttrain/model/selective_scan.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

namespace posttrain {
namespace {

// The sequential definition: s_t = decay_t ⊙ s_{t-1} + input_t, y_t = s_t · C_t.
std::pair<at::Tensor, at::Tensor> Loop(const at::Tensor& decay, const at::Tensor& input, const at::Tensor& C,
                                       const at::Tensor& s0) {
  at::Tensor s = s0;
  std::vector<at::Tensor> ys;
  for (std::int64_t t = 0; t < decay.size(1); ++t) {
    s = decay.select(1, t) * s + input.select(1, t);
    ys.push_back(at::matmul(s, C.select(1, t).unsqueeze(-1)).squeeze(-1));  // [B, I]
  }
  return {at::stack(ys, 1), s};
}

struct Inputs {
  at::Tensor decay, input, C, s0;
};

Inputs Random(std::int64_t B, std::int64_t T, std::int64_t I, std::int64_t N, at::ScalarType dtype) {
  at::manual_seed(11);
  const auto o = at::TensorOptions().dtype(dtype);
  Inputs in{at::rand({B, T, I, N}, o), at::randn({B, T, I, N}, o), at::randn({B, T, N}, o), at::randn({B, I, N}, o)};
  for (at::Tensor* t : {&in.decay, &in.input, &in.C, &in.s0}) t->set_requires_grad(true);
  return in;
}

TEST(SelectiveScanTest, EqualsTheSequentialRecurrenceAndItsAutogradGradients) {
  for (const std::int64_t T : {1, 7}) {
    SCOPED_TRACE(T);
    const Inputs in = Random(2, T, 5, 3, at::kDouble);
    const auto [y, last] = internal::SelectiveScan(in.decay, in.input, in.C, in.s0);
    const auto [y_ref, last_ref] = Loop(in.decay, in.input, in.C, in.s0);
    EXPECT_LT((y - y_ref).abs().max().item<double>(), 1e-12);
    EXPECT_LT((last - last_ref).abs().max().item<double>(), 1e-12);
    // A loss that reaches both outputs, with weights that tell positions apart.
    const at::Tensor wy = at::randn(y.sizes(), y.options()), wl = at::randn(last.sizes(), last.options());
    const std::vector<at::Tensor> inputs = {in.decay, in.input, in.C, in.s0};
    const auto grads = torch::autograd::grad({(y * wy).sum() + (last * wl).sum()}, inputs, {}, /*retain_graph=*/true);
    const auto ref = torch::autograd::grad({(y_ref * wy).sum() + (last_ref * wl).sum()}, inputs, {}, /*retain_graph=*/true);
    for (size_t k = 0; k < grads.size(); ++k) {
      EXPECT_LT((grads[k] - ref[k]).abs().max().item<double>(), 1e-12) << "input " << k;
      EXPECT_GT(ref[k].abs().max().item<double>(), 1e-3) << "input " << k << " has a gradient";
    }
    // Only y used: the last state's gradient is absent.
    const auto only_y = torch::autograd::grad({(y * wy).sum()}, inputs);
    const auto only_y_ref = torch::autograd::grad({(y_ref * wy).sum()}, inputs);
    for (size_t k = 0; k < only_y.size(); ++k) EXPECT_LT((only_y[k] - only_y_ref[k]).abs().max().item<double>(), 1e-12);
  }
}

TEST(SelectiveScanTest, Float32IsWithinRoundingOfFloat64) {
  const Inputs in = Random(1, 64, 8, 16, at::kFloat);
  const auto [y, last] = internal::SelectiveScan(in.decay, in.input, in.C, in.s0);
  const auto [y_ref, last_ref] = Loop(in.decay.to(at::kDouble), in.input.to(at::kDouble), in.C.to(at::kDouble),
                                      in.s0.to(at::kDouble));
  EXPECT_LT((y.to(at::kDouble) - y_ref).abs().max().item<double>(), 1e-4);
  EXPECT_LT((last.to(at::kDouble) - last_ref).abs().max().item<double>(), 1e-4);
}

}  // namespace
}  // namespace posttrain

// internal::MatmulInto (the LM head's fp32 products, through oneDNN where built)
// against float64 products, for every layout the chunked losses pass (row-major and
// transposed views of either operand), with and without accumulation, and for the
// cases it hands to libtorch (another dtype, a strided output).
#include "posttrain/model/gemm.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

namespace posttrain {
namespace {

double RelativeError(const at::Tensor& got, const at::Tensor& exact) {
  return (got.to(at::kDouble) - exact).abs().max().item<double>() / exact.abs().max().item<double>();
}

TEST(MatmulIntoTest, EqualsFloat64ProductsForEveryLayout) {
  at::manual_seed(4);
  const std::int64_t m = 37, k = 53, n = 29;
  for (bool transpose_a : {false, true}) {
    for (bool transpose_b : {false, true}) {
      const at::Tensor a = transpose_a ? at::randn({k, m}).t() : at::randn({m, k});
      const at::Tensor b = transpose_b ? at::randn({n, k}).t() : at::randn({k, n});
      const at::Tensor exact = at::mm(a.to(at::kDouble), b.to(at::kDouble));
      at::Tensor out = at::full({m, n}, 7.0f);
      internal::MatmulInto(out, a, b, /*accumulate=*/false);
      EXPECT_LT(RelativeError(out, exact), 1e-5) << transpose_a << transpose_b;
      internal::MatmulInto(out, a, b, /*accumulate=*/true);
      EXPECT_LT(RelativeError(out, 2 * exact), 1e-5) << "accumulate " << transpose_a << transpose_b;
    }
  }
  // A row-major view with a longer row stride (a column slice).
  const at::Tensor wide = at::randn({m, k + 10});
  const at::Tensor a = wide.narrow(1, 3, k), b = at::randn({k, n});
  at::Tensor out = at::empty({m, n});
  internal::MatmulInto(out, a, b, false);
  EXPECT_LT(RelativeError(out, at::mm(a.to(at::kDouble), b.to(at::kDouble))), 1e-5);
}

// bf16 operands into an fp32 output (autocast's LM-head products): the exact product
// of the bf16 values, accumulated in fp32 — not rounded to bf16 (whose relative
// error, 2^-9, is 100x the bound) — for every layout, with and without accumulation.
TEST(MatmulIntoTest, Bf16OperandsIntoFp32EqualTheirFloat64Products) {
  at::manual_seed(5);
  const std::int64_t m = 41, k = 300, n = 33;
  for (bool transpose_a : {false, true}) {
    for (bool transpose_b : {false, true}) {
      const at::Tensor a = (transpose_a ? at::randn({k, m}).t() : at::randn({m, k})).to(at::kBFloat16);
      const at::Tensor b = (transpose_b ? at::randn({n, k}).t() : at::randn({k, n})).to(at::kBFloat16);
      const at::Tensor exact = at::mm(a.to(at::kDouble), b.to(at::kDouble));
      at::Tensor out = at::full({m, n}, 7.0f);
      internal::MatmulInto(out, a, b, /*accumulate=*/false);
      ASSERT_EQ(out.scalar_type(), at::kFloat);
      EXPECT_LT(RelativeError(out, exact), 2e-5) << transpose_a << transpose_b;
      const at::Tensor before = out.to(at::kDouble);
      internal::MatmulInto(out, a, b, /*accumulate=*/true);
      EXPECT_LT(RelativeError(out, before + exact), 2e-5) << "accumulate " << transpose_a << transpose_b;
    }
  }
  // The same dtypes where oneDNN cannot take them (a strided output): through libtorch.
  const at::Tensor a = at::randn({6, 8}).to(at::kBFloat16), b = at::randn({8, 5}).to(at::kBFloat16);
  at::Tensor strided = at::zeros({5, 6}).t();
  internal::MatmulInto(strided, a, b, false);
  EXPECT_LT(RelativeError(strided, at::mm(a.to(at::kDouble), b.to(at::kDouble))), 1e-2);
}

TEST(MatmulIntoTest, OtherCasesGoThroughLibtorch) {
  const at::Tensor a = at::randn({5, 4}, at::kDouble), b = at::randn({4, 3}, at::kDouble);
  at::Tensor out = at::empty({5, 3}, at::kDouble);
  internal::MatmulInto(out, a, b, false);
  EXPECT_LT((out - at::mm(a, b)).abs().max().item<double>(), 1e-12);
  at::Tensor strided = at::zeros({3, 5}).t();  // not contiguous
  internal::MatmulInto(strided, a.to(at::kFloat), b.to(at::kFloat), false);
  EXPECT_LT((strided.to(at::kDouble) - at::mm(a, b)).abs().max().item<double>(), 1e-5);
  at::Tensor bad = at::empty({5, 4});
  EXPECT_THROW(internal::MatmulInto(bad, a.to(at::kFloat), b.to(at::kFloat), false), c10::Error);
}

// internal::Linear: value and the gradients of x, w and b against float64 autograd
// through at::linear, for a 3-d input, with and without a bias, and for inputs that
// need no gradient.
TEST(MatmulIntoTest, LinearEqualsFloat64AutogradInValueAndGradients) {
  at::manual_seed(6);
  for (bool with_bias : {true, false}) {
    const at::Tensor x = at::randn({3, 7, 24}).requires_grad_(true);
    const at::Tensor w = (at::randn({40, 24}) * 0.2).requires_grad_(true);
    const at::Tensor b = with_bias ? at::randn({40}).requires_grad_(true) : at::Tensor();
    const at::Tensor upstream = at::randn({3, 7, 40});
    const at::Tensor y = internal::Linear(x, w, b);
    (y * upstream).sum().backward();
    const at::Tensor x64 = x.detach().to(at::kDouble).requires_grad_(true);
    const at::Tensor w64 = w.detach().to(at::kDouble).requires_grad_(true);
    const at::Tensor b64 = with_bias ? b.detach().to(at::kDouble).requires_grad_(true) : at::Tensor();
    const at::Tensor y64 = at::linear(x64, w64, b64);
    (y64 * upstream.to(at::kDouble)).sum().backward();
    EXPECT_EQ(y.sizes(), y64.sizes());
    EXPECT_LT(RelativeError(y.detach(), y64.detach()), 1e-5);
    EXPECT_LT(RelativeError(x.grad(), x64.grad()), 1e-5);
    EXPECT_LT(RelativeError(w.grad(), w64.grad()), 1e-5);
    if (with_bias) EXPECT_LT(RelativeError(b.grad(), b64.grad()), 1e-5);
  }
  const at::Tensor frozen = at::randn({5, 4});
  const at::Tensor x = at::randn({2, 4}).requires_grad_(true);
  internal::Linear(x, frozen).sum().backward();
  EXPECT_TRUE(x.grad().defined());
  EXPECT_FALSE(frozen.grad().defined());
}

}  // namespace
}  // namespace posttrain

// The bf16 matrix-vector products of the fused decode step (model/bf16_rows.h) on
// packed weights against float64 products of the same bf16 values, and its rounding
// to bf16 against hand-derived bit patterns and c10's conversion.
#include "posttrain/model/bf16_rows.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

namespace posttrain {
namespace {

std::uint16_t Bits(c10::BFloat16 v) { return v.x; }

// Row counts around the 16-row blocks, input counts around the 8 inputs a weight
// vector serves, odd and even lengths (columns go in pairs), a sub-range of blocks
// (what one thread computes), bias on and off, outputs ldy apart.
TEST(Bf16RowsTest, PackedProductsEqualFloat64SumsOfTheBf16Values) {
  at::manual_seed(11);
  for (std::int64_t n : {1, 7, 32, 33, 288, 301}) {
    for (std::int64_t rows : {1, 15, 16, 17, 40}) {
      for (std::int64_t count : {1, 3, 8, 9, 16}) {
        const std::int64_t ldy = rows + 2, stride = internal::Bf16InputStride(n);
        const at::Tensor w = at::randn({rows, n}, at::kFloat);
        const at::Tensor packed = internal::PackBf16Rows(w);
        const std::int64_t blocks = (rows + 15) / 16;
        ASSERT_EQ(packed.sizes(), at::IntArrayRef({blocks, stride / 2, 16, 2}));
        ASSERT_EQ(packed.scalar_type(), at::kBFloat16);
        // Inputs padded to an even length with zeros, as the products require.
        const at::Tensor x = at::zeros({count, stride}, at::kBFloat16);
        x.narrow(1, 0, n).copy_(at::randn({count, n}, at::kFloat));
        const at::Tensor bias = at::randn({rows}, at::kFloat);
        std::vector<const c10::BFloat16*> inputs;
        for (std::int64_t b = 0; b < count; ++b) inputs.push_back(x.data_ptr<c10::BFloat16>() + b * stride);
        const at::Tensor w64 = w.to(at::kBFloat16).to(at::kDouble), x64 = x.narrow(1, 0, n).to(at::kDouble);
        const at::Tensor product = at::mm(x64, w64.t());
        const at::Tensor scale = at::mm(x64.abs(), w64.abs().t()) + 1;  // fp32 sums: error relative to Σ|w x|
        for (bool with_bias : {false, true}) {
          // Blocks [first, blocks): the rows before are not written.
          const std::int64_t first = with_bias && blocks > 1 ? 1 : 0;
          std::vector<float> y(static_cast<size_t>(count * ldy), -7.0f);
          internal::Bf16PackedRowDots(packed.data_ptr<c10::BFloat16>(), rows, n, first, blocks, inputs.data(), count,
                                      with_bias ? bias.data_ptr<float>() : nullptr, y.data(), ldy);
          const at::Tensor exact = with_bias ? product + bias.to(at::kDouble) : product;
          for (std::int64_t b = 0; b < count; ++b) {
            for (std::int64_t r = 0; r < ldy; ++r) {
              const float got = y[static_cast<size_t>(b * ldy + r)];
              if (r < 16 * first || r >= rows) {
                EXPECT_EQ(got, -7.0f) << "wrote outside its rows: row " << r;
                continue;
              }
              EXPECT_NEAR(got, exact[b][r].item<double>(), 4e-6 * scale[b][r].item<double>())
                  << "n " << n << " rows " << rows << " count " << count << " row " << r << " input " << b;
            }
          }
        }
      }
    }
  }
}

TEST(Bf16RowsTest, RoundsToNearestEven) {
  // 1 + 2^-8 lies halfway between bf16's 1 (0x3F80) and 1 + 2^-7 (0x3F81): ties go to
  // the even 0x3F80; 1 + 3·2^-8 halfway between 0x3F81 and 0x3F82: to 0x3F82; just
  // above the first tie rounds up; -2.5 is exact (0xC020).
  const std::vector<float> values = {1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, 1.0f + 0x1p-8f + 0x1p-20f, -2.5f};
  const std::vector<std::uint16_t> expected = {0x3F80, 0x3F82, 0x3F81, 0xC020};
  std::vector<c10::BFloat16> got(values.size());
  internal::RoundToBf16(values.data(), got.data(), static_cast<std::int64_t>(values.size()));
  for (size_t i = 0; i < values.size(); ++i) EXPECT_EQ(Bits(got[i]), expected[i]) << values[i];
  // 37 values (two vectors of 16 and a tail) as c10's scalar conversion rounds them.
  at::manual_seed(2);
  const at::Tensor x = at::randn({37}, at::kFloat) * 1000;
  std::vector<c10::BFloat16> rounded(37);
  internal::RoundToBf16(x.data_ptr<float>(), rounded.data(), 37);
  for (std::int64_t i = 0; i < 37; ++i) {
    EXPECT_EQ(Bits(rounded[static_cast<size_t>(i)]), Bits(c10::BFloat16(x[i].item<float>()))) << i;
  }
}

}  // namespace
}  // namespace posttrain

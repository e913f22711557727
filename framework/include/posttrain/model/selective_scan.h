// The selective scan of Mamba's mixer (Gu & Dao 2023, "Mamba", Algorithm 2 with
// its zero-order-hold discretisation already applied): for each row b and channel i,
//
//   s_t = decay_t ⊙ s_{t-1} + input_t        (over the state's N entries, s_{-1} = s0)
//   y_t = Σ_n s_t[n] · C_t[n]
//
// as one loop over the tokens in plain C++, instead of T libtorch operations (and
// their T autograd nodes), with a hand-written backward running the same loop in
// reverse. transformers' MambaMixer.slow_forward is the sequential definition.
//
//   auto [y, last] = SelectiveScan(decay, input, C, s0);
#pragma once

#include <utility>

#include <ATen/ATen.h>

namespace posttrain::internal {

// decay, input [B, T, I, N]; C [B, T, N]; s0 [B, I, N]; one floating dtype (fp32 or
// fp64) on the CPU. Returns y [B, T, I] and the last state s_{T-1} [B, I, N] (s0 when
// T = 0). Differentiable in all four inputs.
std::pair<at::Tensor, at::Tensor> SelectiveScan(const at::Tensor& decay, const at::Tensor& input, const at::Tensor& C,
                                                const at::Tensor& s0);

}  // namespace posttrain::internal

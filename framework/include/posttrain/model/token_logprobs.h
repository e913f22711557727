// Token log-probabilities through the LM head without the full-vocabulary logits:
// log softmax(h · Wᵀ / T)[target] for each position, computed a chunk of positions at
// a time, with a backward pass that recomputes each chunk's logits (the approach of
// Liger-Kernel's fused linear cross-entropy). Peak memory grows with
// chunk × vocabulary instead of positions × vocabulary: a batch of 4,096 completion
// tokens at a 151,936-token vocabulary needs 2.5 GB of fp32 logits at once, and
// ~36 MB here.
//
//   TokenLogprobsResult r = TokenLogprobs(hidden, lm_head, targets, /*temperature=*/1.0);
//   r.logprobs   [M] fp32, differentiable w.r.t. hidden and lm_head
//   r.argmax     [M] int64, the most likely token at each position (no gradient);
//                [0] when with_argmax is false (it costs a pass over the logits)
//   r.entropy    [M] −Σ p log p of each position's (tempered) distribution, from the
//                same logits (TRL's GRPO "entropy"), when with_entropy
//
// Maths: with z = h·Wᵀ/T and p = softmax(z), ∂log p_y/∂z = onehot(y) − p, so for an
// upstream gradient g: ∂/∂h = (g·(onehot − p)/T)·W and ∂/∂W = (g·(onehot − p)/T)ᵀ·h.
// With a logit soft cap c > 0 (Gemma 2's final_logit_softcapping) the logits are
// z = c·tanh(h·Wᵀ / c) / T, and each ∂/∂z gains the factor 1 − tanh²(h·Wᵀ / c)
// (the cap applies before the temperature, as transformers' model then TRL does).
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

namespace posttrain {

struct TokenLogprobsResult {
  at::Tensor logprobs;  // [M] fp32 (fp64 for fp64 inputs)
  at::Tensor argmax;    // [M] int64 ([0] unless with_argmax)
  at::Tensor entropy;   // [M] entropy of softmax(z) in nats, no gradient ([0] unless with_entropy)
};

// hidden [M, H] (any float dtype; bf16 autocast applies to the matmuls),
// weight [V, H] (the LM head), targets [M] int64 in [0, V). `chunk` positions are
// projected at a time (0: as many as keep a chunk's logits near 8M elements).
TokenLogprobsResult TokenLogprobs(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                                  double temperature, std::int64_t chunk = 0, bool with_argmax = true,
                                  bool with_entropy = false, double softcap = 0.0);

// The same for a loss that is a fixed weighted sum of token log-probs (SFT's
// −Σ log p / n): sum = Σ_t weights_t · log p(y_t) at temperature 1, with the
// gradients w.r.t. hidden and weight computed in the same chunked pass as the value
// and only scaled in backward (Liger-Kernel's fused linear cross-entropy). Each
// chunk's logits are computed once instead of twice; the cost is holding both
// gradients ([M, H] and [V, H], fp32) from forward to backward. Use it only when
// the weights do not depend on the log-probs themselves (they get no gradient).
struct WeightedLogprobSumResult {
  at::Tensor sum;       // scalar fp32, differentiable w.r.t. hidden and weight
  at::Tensor logprobs;  // [M] fp32, no gradient (for metrics)
  at::Tensor argmax;    // [M] int64
};
WeightedLogprobSumResult WeightedTokenLogprobs(const at::Tensor& hidden, const at::Tensor& weight,
                                               const at::Tensor& targets, const at::Tensor& weights,
                                               std::int64_t chunk = 0, double softcap = 0.0);

// GKD's generalized Jensen–Shannon divergence between the student's and the
// teacher's next-token distributions (Agarwal et al. 2024, "On-Policy Distillation
// of Language Models", eq. 1; TRL's GKDTrainer.generalized_jsd_loss), weighted over
// tokens, without ever holding more than a chunk of full-vocabulary logits:
//   p_s = softmax(h_s W_sᵀ / τ), p_t = softmax(h_t W_tᵀ / τ), m = (1−β) p_s + β p_t
//   JSD_β = β KL(p_t ‖ m) + (1−β) KL(p_s ‖ m)     (β = 0: KL(p_t ‖ p_s), forward;
//                                                   β = 1: KL(p_s ‖ p_t), reverse)
//   sum = Σ_t weights_t · JSD_β(t)
// student_hidden [M, H] and student_weight [V, H] get gradients (computed in the same
// chunked pass, as WeightedTokenLogprobs does); the teacher's [M, H_t] / [V, H_t] none.
// The two vocabularies must be equal (V). Returns the weighted sum and the per-token
// divergences [M] (fp32, no gradient).
struct GeneralizedJsdResult {
  at::Tensor sum;
  at::Tensor per_token;
};
GeneralizedJsdResult GeneralizedJsd(const at::Tensor& student_hidden, const at::Tensor& student_weight,
                                    const at::Tensor& teacher_hidden, const at::Tensor& teacher_weight,
                                    const at::Tensor& weights, double beta, double temperature = 1.0,
                                    std::int64_t chunk = 0, double student_softcap = 0.0,
                                    double teacher_softcap = 0.0);

}  // namespace posttrain

#include "posttrain/model/token_logprobs.h"

#include <algorithm>

#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/custom_function.h>

#include "posttrain/model/gemm.h"
#include "posttrain/core/autocast.h"

namespace posttrain {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::ScalarType Accumulation(const at::Tensor& t) { return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

// Under CPU bf16 autocast with oneDNN, the head's products take bf16 operands (the
// weight's copy from autocast's cache: cast once per step, as at::linear would) and
// give fp32 directly (internal::MatmulInto), so no bf16 result is rounded and cast.
bool Bf16IntoFp32(const at::Tensor& hidden, const at::Tensor& weight) {
  return internal::MatmulUsesOneDnn() && hidden.is_cpu() && weight.is_cpu() && AutocastEnabled(at::kCPU) &&
         AutocastDtype(at::kCPU) == at::kBFloat16 && hidden.scalar_type() != at::kDouble &&
         weight.scalar_type() != at::kDouble;
}

at::Tensor Bf16Weight(const at::Tensor& weight) { return at::autocast::cached_cast(at::kBFloat16, weight, at::kCPU); }

// The logits of rows [start, start + n) of `hidden`, soft-capped (softcap > 0:
// c·tanh(z / c)) and then divided by the temperature, in fp32 (fp64).
at::Tensor ChunkLogits(const at::Tensor& hidden, const at::Tensor& weight, std::int64_t start, std::int64_t n,
                       double temperature, double softcap) {
  const at::Tensor h = hidden.narrow(0, start, n);
  at::Tensor z;
  if (h.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat && !AutocastEnabled(h.device().type())) {
    z = at::empty({n, weight.size(0)}, h.options());
    internal::MatmulInto(z, h, weight.t(), /*accumulate=*/false);
  } else if (Bf16IntoFp32(h, weight)) {
    z = at::empty({n, weight.size(0)}, h.options().dtype(at::kFloat));
    internal::MatmulInto(z, h.to(at::kBFloat16), Bf16Weight(weight).t(), /*accumulate=*/false);
  } else {
    z = at::linear(h, weight).to(Accumulation(hidden));
  }
  if (softcap > 0) z = at::tanh(z / softcap).mul_(softcap);
  return temperature == 1.0 ? z : z / temperature;
}

// ∂(capped logits)/∂(raw logits) from the logits ChunkLogits returned: 1 − tanh² =
// 1 − (z·T / c)²; undefined without a cap (the factor is 1).
at::Tensor CapSlope(const at::Tensor& z, double temperature, double softcap) {
  if (softcap <= 0) return at::Tensor();
  return 1 - (z * (temperature / softcap)).pow(2);
}

// The backward of a function that computed its gradients w.r.t. hidden and weight in
// forward (saved, with want_hidden / want_weight): they scaled by the upstream
// gradient of the scalar output, then no gradient for its `other_inputs` inputs.
variable_list ScaledPrecomputedGrads(AutogradContext* ctx, const at::Tensor& g, std::size_t other_inputs) {
  const auto saved = ctx->get_saved_variables();
  variable_list out(2 + other_inputs);
  if (ctx->saved_data["want_hidden"].toBool()) out[0] = saved[0] * g.to(saved[0].scalar_type());
  if (ctx->saved_data["want_weight"].toBool()) out[1] = saved[1] * g.to(saved[1].scalar_type());
  return out;
}

// The gradients of a chunk of rows [start, start + n) from d = ∂loss/∂logits
// [n, V] (fp32): grad_hidden rows = d·W; grad_weight += dᵀ·h. In full precision
// grad_weight accumulates inside the GEMM (beta = 1), so no [V, H] temporary per
// chunk. Under autocast both products run in its dtype, as the forward's at::linear
// does (out= and in-place ops bypass autocast: they ran in fp32, 17% of a bf16 DPO
// step in OpenBLAS), and each chunk's dᵀ·h is added to the fp32 sum: inside the
// GEMM too on the CPU with oneDNN (Bf16IntoFp32; the cast of a bf16 [V, H] product and
// its add were 11 ms per chunk at vocabulary 32,000, 6% of a bf16 SFT step).
void ChunkGradients(const at::Tensor& d, const at::Tensor& hidden, const at::Tensor& weight, std::int64_t start,
                    at::Tensor* grad_hidden, at::Tensor* grad_weight) {
  const std::int64_t n = d.size(0);
  const bool autocast = AutocastEnabled(d.device().type()) && at::isFloatingType(weight.scalar_type()) &&
                        weight.scalar_type() != at::kDouble;
  // Under autocast d is cast once for both products (autocast would cast it per
  // product: it caches only leaf tensors' casts, such as the weight's).
  const at::Tensor dc = autocast ? d.to(AutocastDtype(d.device().type())) : d;
  const bool bf16_into_fp32 = autocast && Bf16IntoFp32(hidden, weight);
  if (grad_hidden != nullptr) {
    at::Tensor out = grad_hidden->narrow(0, start, n);
    if (bf16_into_fp32 && out.scalar_type() == at::kFloat) {
      internal::MatmulInto(out, dc, Bf16Weight(weight), /*accumulate=*/false);
    } else if (autocast) {
      out.copy_(at::mm(dc, weight));
    } else if (const at::Tensor dw = d.to(weight.scalar_type()); out.scalar_type() == dw.scalar_type()) {
      internal::MatmulInto(out, dw, weight, /*accumulate=*/false);
    } else {
      out.copy_(at::matmul(dw, weight));
    }
  }
  if (grad_weight == nullptr) return;
  const at::Tensor h = hidden.narrow(0, start, n);
  if (bf16_into_fp32 && grad_weight->scalar_type() == at::kFloat) {
    internal::MatmulInto(*grad_weight, dc.t(), h.to(at::kBFloat16), /*accumulate=*/true);
  } else if (autocast) {
    grad_weight->add_(at::mm(dc.t(), h));
  } else {
    internal::MatmulInto(*grad_weight, d.t(), h.to(grad_weight->scalar_type()), /*accumulate=*/true);
  }
}

class ChunkedTokenLogprobs : public torch::autograd::Function<ChunkedTokenLogprobs> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& hidden, const at::Tensor& weight,
                               const at::Tensor& targets, double temperature, std::int64_t chunk, bool with_argmax,
                               bool with_entropy, double softcap) {
    const std::int64_t m = hidden.size(0);
    at::Tensor logps = at::empty({m}, hidden.options().dtype(Accumulation(hidden)));
    at::Tensor lse = at::empty({m}, logps.options());
    at::Tensor argmax = with_argmax ? at::empty({m}, targets.options()) : at::zeros({0}, targets.options());
    at::Tensor entropy = with_entropy ? at::empty({m}, logps.options()) : at::zeros({0}, logps.options());
    for (std::int64_t s = 0; s < m; s += chunk) {
      const std::int64_t n = std::min(chunk, m - s);
      const at::Tensor z = ChunkLogits(hidden, weight, s, n, temperature, softcap);
      const at::Tensor l = z.logsumexp(-1);
      lse.narrow(0, s, n).copy_(l);
      logps.narrow(0, s, n).copy_(z.gather(1, targets.narrow(0, s, n).unsqueeze(1)).squeeze(1) - l);
      if (with_argmax) argmax.narrow(0, s, n).copy_(z.argmax(-1));
      // H = −Σ p log p = lse − Σ p z.
      if (with_entropy) entropy.narrow(0, s, n).copy_(l - ((z - l.unsqueeze(1)).exp() * z).sum(-1));
    }
    ctx->save_for_backward({hidden, weight, targets, lse});
    ctx->saved_data["temperature"] = temperature;
    ctx->saved_data["softcap"] = softcap;
    ctx->saved_data["chunk"] = chunk;
    ctx->mark_non_differentiable({argmax, entropy});
    return {logps, argmax, entropy};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &hidden = saved[0], &weight = saved[1], &targets = saved[2], &lse = saved[3];
    const double temperature = ctx->saved_data["temperature"].toDouble();
    const double softcap = ctx->saved_data["softcap"].toDouble();
    const std::int64_t chunk = ctx->saved_data["chunk"].toInt();
    const std::int64_t m = hidden.size(0);
    const at::Tensor g = grad_outputs[0].defined() ? grad_outputs[0].to(lse.scalar_type()) : at::zeros_like(lse);
    const bool want_hidden = ctx->needs_input_grad(0), want_weight = ctx->needs_input_grad(1);
    at::Tensor grad_hidden = want_hidden ? at::empty(hidden.sizes(), hidden.options()) : at::Tensor();
    at::Tensor grad_weight = want_weight ? at::zeros(weight.sizes(), weight.options().dtype(lse.scalar_type())) : at::Tensor();
    for (std::int64_t s = 0; s < m; s += chunk) {
      const std::int64_t n = std::min(chunk, m - s);
      const at::Tensor gs = g.narrow(0, s, n);
      // d = g · (onehot(y) − p) / T (· the cap's slope), p recomputed from the saved log-sum-exp.
      at::Tensor d = ChunkLogits(hidden, weight, s, n, temperature, softcap);
      const at::Tensor slope = CapSlope(d, temperature, softcap);
      d.sub_(lse.narrow(0, s, n).unsqueeze(1)).exp_();
      d.mul_(-gs.unsqueeze(1)).scatter_add_(1, targets.narrow(0, s, n).unsqueeze(1), gs.unsqueeze(1));
      if (temperature != 1.0) d.div_(temperature);
      if (slope.defined()) d.mul_(slope);
      ChunkGradients(d, hidden, weight, s, want_hidden ? &grad_hidden : nullptr, want_weight ? &grad_weight : nullptr);
    }
    return {grad_hidden, want_weight ? grad_weight.to(weight.scalar_type()) : at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// Σ_t w_t · log p(y_t), with both gradients computed in the same pass as the
// value (Liger's fused linear cross-entropy): each chunk's logits are used once.
class WeightedTokenLogprobSum : public torch::autograd::Function<WeightedTokenLogprobSum> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& hidden, const at::Tensor& weight,
                               const at::Tensor& targets, const at::Tensor& weights, std::int64_t chunk,
                               bool want_hidden, bool want_weight, double softcap) {
    const std::int64_t m = hidden.size(0);
    const at::ScalarType acc = Accumulation(hidden);
    at::Tensor logps = at::empty({m}, hidden.options().dtype(acc));
    at::Tensor argmax = at::empty({m}, targets.options());
    at::Tensor grad_hidden = want_hidden ? at::empty(hidden.sizes(), hidden.options()) : at::Tensor();
    at::Tensor grad_weight = want_weight ? at::zeros(weight.sizes(), weight.options().dtype(acc)) : at::Tensor();
    const at::Tensor w = weights.to(acc);
    for (std::int64_t s = 0; s < m; s += chunk) {
      const std::int64_t n = std::min(chunk, m - s);
      at::Tensor z = ChunkLogits(hidden, weight, s, n, 1.0, softcap);
      const at::Tensor y = targets.narrow(0, s, n).unsqueeze(1);
      const at::Tensor lse = z.logsumexp(-1, /*keepdim=*/true);
      logps.narrow(0, s, n).copy_((z.gather(1, y) - lse).squeeze(1));
      argmax.narrow(0, s, n).copy_(z.argmax(-1));
      if (!want_hidden && !want_weight) continue;
      // d = w · (onehot(y) − p) (· the cap's slope), in place of the logits.
      const at::Tensor ws = w.narrow(0, s, n).unsqueeze(1);
      const at::Tensor slope = CapSlope(z, 1.0, softcap);
      at::Tensor d = z.sub_(lse).exp_().mul_(-ws).scatter_add_(1, y, ws);
      if (slope.defined()) d.mul_(slope);
      ChunkGradients(d, hidden, weight, s, want_hidden ? &grad_hidden : nullptr, want_weight ? &grad_weight : nullptr);
    }
    ctx->saved_data["want_hidden"] = want_hidden;
    ctx->saved_data["want_weight"] = want_weight;
    ctx->save_for_backward({grad_hidden, grad_weight});
    ctx->mark_non_differentiable({logps, argmax});
    return {(logps * w).sum(), logps, argmax};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    return ScaledPrecomputedGrads(ctx, grad_outputs[0], /*other_inputs=*/6);
  }
};

// Σ_t w_t · JSD_β(p_s, p_t), gradients w.r.t. the student's hidden states and LM
// head computed in the same chunked pass (∂/∂z_s = p_s ⊙ (g − Σ p_s g) with
// g = ∂JSD/∂p_s, derived in the header's terms; β = 0: p_s − p_t).
class GeneralizedJsdFn : public torch::autograd::Function<GeneralizedJsdFn> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& hidden, const at::Tensor& weight,
                               const at::Tensor& teacher_hidden, const at::Tensor& teacher_weight,
                               const at::Tensor& weights, double beta, double temperature, std::int64_t chunk,
                               bool want_hidden, bool want_weight, double student_softcap, double teacher_softcap) {
    const std::int64_t m = hidden.size(0);
    const at::ScalarType acc = Accumulation(hidden);
    at::Tensor per_token = at::empty({m}, hidden.options().dtype(acc));
    at::Tensor grad_hidden = want_hidden ? at::empty(hidden.sizes(), hidden.options()) : at::Tensor();
    at::Tensor grad_weight = want_weight ? at::zeros(weight.sizes(), weight.options().dtype(acc)) : at::Tensor();
    const at::Tensor w = weights.to(acc);
    for (std::int64_t s = 0; s < m; s += chunk) {
      const std::int64_t n = std::min(chunk, m - s);
      const at::Tensor zs = ChunkLogits(hidden, weight, s, n, temperature, student_softcap);
      const at::Tensor ls = at::log_softmax(zs, -1);
      const at::Tensor lt =
          at::log_softmax(ChunkLogits(teacher_hidden, teacher_weight, s, n, temperature, teacher_softcap).to(acc), -1);
      const at::Tensor ps = ls.exp(), pt = lt.exp();
      at::Tensor loss, d;
      if (beta <= 0.0) {
        loss = (pt * (lt - ls)).sum(-1);
        d = ps - pt;
      } else if (beta >= 1.0) {
        loss = (ps * (ls - lt)).sum(-1);
        d = ps * (ls - lt - loss.unsqueeze(1));
      } else {
        const at::Tensor lm = at::logsumexp(at::stack({ls + std::log(1 - beta), lt + std::log(beta)}), 0);
        loss = beta * (pt * (lt - lm)).sum(-1) + (1 - beta) * (ps * (ls - lm)).sum(-1);
        const at::Tensor g = (1 - beta) * (ls - lm);
        d = ps * (g - (ps * g).sum(-1, /*keepdim=*/true));
      }
      per_token.narrow(0, s, n).copy_(loss);
      if (!want_hidden && !want_weight) continue;
      d = d * (w.narrow(0, s, n).unsqueeze(1) / temperature);
      if (const at::Tensor slope = CapSlope(zs, temperature, student_softcap); slope.defined()) d.mul_(slope);
      ChunkGradients(d, hidden, weight, s, want_hidden ? &grad_hidden : nullptr, want_weight ? &grad_weight : nullptr);
    }
    ctx->saved_data["want_hidden"] = want_hidden;
    ctx->saved_data["want_weight"] = want_weight;
    ctx->save_for_backward({grad_hidden, grad_weight});
    ctx->mark_non_differentiable({per_token});
    return {(per_token * w).sum(), per_token};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    return ScaledPrecomputedGrads(ctx, grad_outputs[0], /*other_inputs=*/10);
  }
};

}  // namespace

GeneralizedJsdResult GeneralizedJsd(const at::Tensor& student_hidden, const at::Tensor& student_weight,
                                    const at::Tensor& teacher_hidden, const at::Tensor& teacher_weight,
                                    const at::Tensor& weights, double beta, double temperature, std::int64_t chunk,
                                    double student_softcap, double teacher_softcap) {
  TORCH_CHECK(student_hidden.dim() == 2 && student_weight.dim() == 2 && student_hidden.size(1) == student_weight.size(1),
              "GeneralizedJsd: student hidden [M, H] and weight [V, H] expected");
  TORCH_CHECK(teacher_hidden.dim() == 2 && teacher_hidden.size(0) == student_hidden.size(0) &&
                  teacher_weight.size(1) == teacher_hidden.size(1),
              "GeneralizedJsd: teacher hidden [M, H_t] and weight [V, H_t] expected");
  TORCH_CHECK(teacher_weight.size(0) == student_weight.size(0), "GeneralizedJsd: the vocabularies differ (",
              student_weight.size(0), " vs ", teacher_weight.size(0), ")");
  TORCH_CHECK(beta >= 0 && beta <= 1 && temperature > 0, "GeneralizedJsd: beta in [0, 1], temperature > 0");
  if (chunk <= 0) chunk = std::max<std::int64_t>(1, (std::int64_t{4} << 20) / std::max<std::int64_t>(1, student_weight.size(0)));
  const bool grad = c10::GradMode::is_enabled();
  const bool want_hidden = grad && student_hidden.requires_grad(), want_weight = grad && student_weight.requires_grad();
  at::Tensor th, tw;
  {
    c10::NoGradGuard no_grad;
    th = teacher_hidden.detach();
    tw = teacher_weight.detach();
  }
  variable_list out = GeneralizedJsdFn::apply(student_hidden, student_weight, th, tw, weights, beta, temperature, chunk,
                                              want_hidden, want_weight, student_softcap, teacher_softcap);
  return {out[0], out[1]};
}

WeightedLogprobSumResult WeightedTokenLogprobs(const at::Tensor& hidden, const at::Tensor& weight,
                                               const at::Tensor& targets, const at::Tensor& weights,
                                               std::int64_t chunk, double softcap) {
  TORCH_CHECK(hidden.dim() == 2 && weight.dim() == 2 && hidden.size(1) == weight.size(1),
              "WeightedTokenLogprobs: hidden [M, H] and weight [V, H] expected");
  TORCH_CHECK(targets.dim() == 1 && targets.size(0) == hidden.size(0) && weights.sizes() == targets.sizes(),
              "WeightedTokenLogprobs: targets [M] and weights [M] expected");
  if (chunk <= 0) chunk = std::max<std::int64_t>(1, (std::int64_t{8} << 20) / std::max<std::int64_t>(1, weight.size(0)));
  const bool grad = c10::GradMode::is_enabled();
  const bool want_hidden = grad && hidden.requires_grad(), want_weight = grad && weight.requires_grad();
  variable_list out =
      WeightedTokenLogprobSum::apply(hidden, weight, targets, weights, chunk, want_hidden, want_weight, softcap);
  return {out[0], out[1], out[2]};
}

TokenLogprobsResult TokenLogprobs(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                                  double temperature, std::int64_t chunk, bool with_argmax, bool with_entropy,
                                  double softcap) {
  TORCH_CHECK(hidden.dim() == 2 && weight.dim() == 2 && hidden.size(1) == weight.size(1),
              "TokenLogprobs: hidden [M, H] and weight [V, H] expected");
  TORCH_CHECK(targets.dim() == 1 && targets.size(0) == hidden.size(0), "TokenLogprobs: targets [M] expected");
  if (chunk <= 0) chunk = std::max<std::int64_t>(1, (std::int64_t{8} << 20) / std::max<std::int64_t>(1, weight.size(0)));
  if (hidden.size(0) == 0) {
    const at::Tensor none = at::zeros({0}, hidden.options().dtype(Accumulation(hidden)));
    return {none, at::zeros({0}, targets.options()), none};
  }
  variable_list out =
      ChunkedTokenLogprobs::apply(hidden, weight, targets, temperature, chunk, with_argmax, with_entropy, softcap);
  return {out[0], out[1], out[2]};
}

}  // namespace posttrain

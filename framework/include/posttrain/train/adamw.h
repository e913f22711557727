// AdamW (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization",
// Algorithm 2; the update torch.optim.AdamW makes):
//   θ ← θ − lr·λ·θ        (only where DecaysWeight: not biases, not norm weights)
//   m ← β1·m + (1−β1)·g        v ← β2·v + (1−β2)·g²
//   θ ← θ − lr · (m / (1−β1^t)) / (sqrt(v / (1−β2^t)) + ε)
// State is held by parameter name (exp_avg, exp_avg_sq, and the step count), so it
// is checkpointed as safetensors and can be sharded by name like the parameters.
// Parameters stored in a low-precision dtype (bf16) get fp32 master weights
// ("master.<name>"): the update is made in fp32 and rounded into the parameter, so
// many small updates accumulate as in mixed-precision training (Micikevicius et al.
// 2018, "Mixed Precision Training", §3.1).
#pragma once

#include <functional>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/status.h"

namespace posttrain {

// Whether weight decay applies to the parameter `name`, as transformers' Trainer
// groups them (get_decay_parameter_names): not to biases nor to the weights of
// norms — names that, lowercased, contain "bias", "layernorm" or "rmsnorm", a
// "norm" path segment (model.norm.weight) or "_norm" before a dot or the end
// (q_norm, embed_norm). Everything else (projections, embeddings, LoRA's A and B)
// decays.
bool DecaysWeight(const std::string& name);

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
};

class AdamW {
 public:
  // `params` are updated in place; their .grad() is read. fp32 state, and fp32
  // master copies of parameters that are not fp32. Weight decay where
  // DecaysWeight(name).
  AdamW(std::vector<std::pair<std::string, at::Tensor>> params, AdamWOptions options);
  // Weight decay on parameter `name` element by element: `mask` (its shape, 1 where
  // it decays, 0 where not): a flat FSDP shard holding several parameters.
  absl::Status SetDecayMask(const std::string& name, const at::Tensor& mask);

  // One update with learning rate `lr`; parameters without a gradient are skipped.
  void Step(double lr);
  void ZeroGrad();
  // L2 norm of all gradients; scales them to at most max_norm (if > 0).
  // Returns the norm before clipping (torch.nn.utils.clip_grad_norm_).
  double ClipGradNorm(double max_norm);
  // The two halves of ClipGradNorm, for a norm over several processes (sharded or
  // replicated parameters): Σ weight(name) · ||grad||² over this optimizer's
  // parameters, and the scaling of every gradient to at most max_norm given the
  // global norm.
  double GradSquares(const std::function<double(const std::string& name)>& weight) const;
  void ClipToNorm(double norm, double max_norm);

  std::int64_t step_count() const { return step_; }
  // "exp_avg.<name>", "exp_avg_sq.<name>", "master.<name>" (non-fp32 parameters
  // only) and "step" (int64 scalar).
  std::vector<std::pair<std::string, at::Tensor>> StateDict() const;
  absl::Status LoadStateDict(const std::map<std::string, at::Tensor>& state);

 private:
  std::vector<std::pair<std::string, at::Tensor>> params_;
  std::vector<at::Tensor> exp_avg_, exp_avg_sq_;
  std::vector<at::Tensor> master_;  // fp32 copies of non-fp32 parameters (else undefined)
  std::vector<at::Tensor> decay_mask_;  // undefined: decays whole (or not at all: !decays_)
  std::vector<bool> decays_;
  AdamWOptions options_;
  std::int64_t step_ = 0;
};

// Learning rate at optimisation step `step` (1-based) of `max_steps`, as
// transformers' get_scheduler: "linear" (warm-up then linear decay to 0),
// "cosine" (warm-up then half a cosine to 0), "constant", "constant_with_warmup".
double ScheduledLearningRate(const std::string& type, double base_lr, std::int64_t step,
                             std::int64_t max_steps, std::int64_t warmup_steps);

}  // namespace posttrain

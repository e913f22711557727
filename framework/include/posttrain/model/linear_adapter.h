// The seam of adapters (LoRA and kin, api/adapter.h): the model's seven linear
// projections per decoder layer ask an installed LinearAdapter for a term to add to
// their output. The model never knows which adapter, or whether there is one.
//
//   out = x Wᵀ (+ b) + adapter->Delta(layer, site, x)      (Delta undefined: nothing)
#pragma once

#include <cstdint>
#include <string>

#include <ATen/ATen.h>

namespace posttrain {

// The projections of a Llama-family decoder layer, by HF module name.
enum class LinearSite { kQ, kK, kV, kO, kGate, kUp, kDown };
inline constexpr LinearSite kLinearSites[] = {LinearSite::kQ,    LinearSite::kK,  LinearSite::kV,   LinearSite::kO,
                                              LinearSite::kGate, LinearSite::kUp, LinearSite::kDown};

// "self_attn.q_proj", ..., "mlp.down_proj": the module path inside model.layers.<i>.
const char* LinearSiteModule(LinearSite site);
// The module's own name: "q_proj", ..., "down_proj".
const char* LinearSiteName(LinearSite site);

class LinearAdapter {
 public:
  virtual ~LinearAdapter() = default;
  // The term added to projection `site` of decoder layer `layer` for its input x
  // [..., in_features]: [..., out_features], or an undefined tensor where this site
  // is not adapted. Differentiable in the adapter's parameters.
  virtual at::Tensor Delta(std::int64_t layer, LinearSite site, const at::Tensor& x) const = 0;
};

}  // namespace posttrain

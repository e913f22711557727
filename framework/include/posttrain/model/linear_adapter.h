// The seam of adapters (LoRA and kin, api/adapter.h): the model's linear
// projections of each decoder layer ask an installed LinearAdapter for a term to add to
// their output. The model never knows which adapter, or whether there is one.
//
//   out = adapter->Adapt(layer, site, x, W, b, x Wᵀ (+ b))
//       = x Wᵀ (+ b) + adapter->Delta(layer, site, x)      (by default; Delta undefined: nothing)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "posttrain/model/model_config.h"

namespace posttrain {

// The projections of a Llama-family decoder layer, by HF module name; DeepSeek-V3's
// latent attention has q_a_proj / q_b_proj (or q_proj), kv_a_proj_with_mqa and
// kv_b_proj where the others have q/k/v; a Mamba layer has only its mixer's four
// (in_proj, x_proj, dt_proj, out_proj).
enum class LinearSite { kQ, kK, kV, kO, kGate, kUp, kDown, kQA, kQB, kKVA, kKVB, kInProj, kXProj, kDtProj, kOutProj };
inline constexpr LinearSite kLinearSites[] = {
    LinearSite::kQ,   LinearSite::kK,   LinearSite::kV,      LinearSite::kO,     LinearSite::kGate,
    LinearSite::kUp,  LinearSite::kDown, LinearSite::kQA,    LinearSite::kQB,    LinearSite::kKVA,
    LinearSite::kKVB, LinearSite::kInProj, LinearSite::kXProj, LinearSite::kDtProj, LinearSite::kOutProj};
inline constexpr int kNumLinearSites = static_cast<int>(sizeof(kLinearSites) / sizeof(kLinearSites[0]));

// "self_attn.q_proj", ..., "mlp.down_proj": the module path inside model.layers.<i>.
const char* LinearSiteModule(LinearSite site);
// The module's own name: "q_proj", ..., "down_proj".
const char* LinearSiteName(LinearSite site);

// A linear module of a decoder layer as checkpoints and PEFT name it: one site
// (Llama's seven), or several sharing one weight, each a block of its output rows
// (Phi-3's self_attn.qkv_proj: q, k, v; mlp.gate_up_proj: gate, up). An adapter on
// a fused module adapts it whole, as PEFT does: one A, one B split by rows.
struct LinearModule {
  struct Part {
    LinearSite site;
    std::int64_t row_offset, rows;
  };
  std::string path;  // inside model.layers.<i>: "self_attn.q_proj", "self_attn.qkv_proj", ...
  std::int64_t in_features = 0, out_features = 0;
  std::vector<Part> parts;  // in row order, covering [0, out_features)
  // A fused q/k/v whose checkpoint rows (and PEFT's lora_B rows) run in head_groups
  // groups, each holding its share of every part in turn: GPT-NeoX's
  // attention.query_key_value by head ([q_h, k_h, v_h], head_groups = heads),
  // Falcon's query_key_value by key/value head ([its G query heads, k_g, v_g],
  // head_groups = kv_heads). `parts` are the blocked order [q; k; v] the model and
  // the adapter's slots hold. 0: the rows are that blocked order.
  std::int64_t head_groups = 0;
  // GPT-2's modules are Conv1D: the checkpoint stores the weight [in, out] (PEFT's
  // fan_in_fan_out); the model, and PEFT's lora_A [r, in] and lora_B [out, r], as for
  // a linear layer.
  bool conv1d = false;

  std::string name() const { return path.substr(path.rfind('.') + 1); }  // "q_proj", "qkv_proj"
};
// The linear modules of one decoder layer of a model of `config`, in HF order.
std::vector<LinearModule> LinearModules(const ModelConfig& config);
// Where a checkpoint of `config` keeps its decoder layers: "model.layers." (Llama's
// families), "gpt_neox.layers." (GPT-NeoX) or "transformer.h." (GPT-2); module paths
// follow "<prefix><i>.".
std::string DecoderLayersPrefix(const ModelConfig& config);

class LinearAdapter {
 public:
  virtual ~LinearAdapter() = default;
  // The term added to projection `site` of decoder layer `layer` for its input x
  // [..., in_features]: [..., out_features], or an undefined tensor where this site
  // is not adapted. Differentiable in the adapter's parameters.
  virtual at::Tensor Delta(std::int64_t layer, LinearSite site, const at::Tensor& x) const = 0;
  // The adapted output of projection `site` of decoder layer `layer`: w [out, in] its
  // base weight (this site's rows of a fused module), b its bias (undefined: none),
  // base = x wᵀ + b as the model computed it, [..., out], in base's dtype. By default
  // base + Delta(layer, site, x); adapters that also rescale the base output (DoRA's
  // magnitudes) override it.
  virtual at::Tensor Adapt(std::int64_t layer, LinearSite site, const at::Tensor& x, const at::Tensor& w,
                           const at::Tensor& b, const at::Tensor& base) const {
    (void)w;
    (void)b;
    const at::Tensor delta = Delta(layer, site, x);
    return delta.defined() ? base + delta.to(base.scalar_type()) : base;
  }
  // Whether MergedWeight folds this adapter into plain weights (its output is then
  // linear in x, as LoRA's and DoRA's are). The fused decode step runs an adapted
  // model on those merged weights (CausalLM::MergedDecodeWeights); it declines one
  // whose adapter cannot merge.
  virtual bool MergesIntoWeights() const { return false; }
  // The weight [out, in] that gives, as a plain linear layer, the adapted output of
  // projection `site` of decoder layer `layer`, whose base weight is w (this site's
  // rows of a fused module): PEFT's merge of the adapter into w, in w's dtype, not
  // differentiable; w itself where the site is not adapted. Only where
  // MergesIntoWeights().
  virtual at::Tensor MergedWeight(std::int64_t layer, LinearSite site, const at::Tensor& w) const {
    (void)layer;
    (void)site;
    return w;
  }
};

}  // namespace posttrain

// Extension point: Adapter — trainable weights on a frozen model's linear layers
// (LoRA first; DoRA, IA³ and others as plugins of the same kind).
//
// The engine attaches an adapter to the policy (`[peft]` in a recipe, TRL's
// peft_config), trains only its parameters, and uses the base model with the adapter
// switched off as the reference (CausalLM::BaseView: no copy). An adapter saves and
// loads its own format (PEFT's for LoRA) and can merge itself into the base weights.
// One whose output is linear in x should also override LinearAdapter's
// MergesIntoWeights / MergedWeight: generation then decodes on its merged weights in
// the fused decode step (without them, through the adapted libtorch forward).
//
//   class MyAdapter final : public posttrain::Adapter {
//    public:
//     static posttrain::ComponentSchema Schema();
//     static absl::StatusOr<std::unique_ptr<posttrain::Adapter>> Create(const posttrain::ComponentConfig&);
//     absl::Status Attach(const posttrain::ModelConfig&, const at::TensorOptions&, std::uint64_t seed) override;
//     at::Tensor Delta(std::int64_t layer, posttrain::LinearSite site, const at::Tensor& x) const override;
//     ...
//   };
//   POSTTRAIN_REGISTER_ADAPTER("my_adapter", MyAdapter);
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"
#include "posttrain/model/causal_lm.h"
#include "posttrain/model/linear_adapter.h"
#include "posttrain/model/model_config.h"

namespace posttrain {

class Adapter : public LinearAdapter {
 public:
  // Creates the adapter's parameters for a model of `config` (options: device and
  // dtype of the adapter's weights, fp32 for training), initialised from `seed`.
  // InvalidArgument when its target modules match no layer of the model (naming them).
  virtual absl::Status Attach(const ModelConfig& config, const at::TensorOptions& options, std::uint64_t seed) = 0;
  // Parameters that start from the base model's weights (DoRA's magnitudes, the row
  // norms of W): called once after Attach with the model the adapter goes on, before
  // training or Load. Default: nothing to do.
  virtual absl::Status Initialize(const CausalLM& base) {
    (void)base;
    return absl::OkStatus();
  }
  // The trainable parameters by the names they are saved under (PEFT's, e.g.
  // "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight").
  virtual std::vector<std::pair<std::string, at::Tensor>> NamedParameters() const = 0;
  // Base-model parameters that train whole beside the adapter (PEFT's
  // modules_to_save), by HF name: the engine unfreezes them.
  virtual std::vector<std::string> ModulesToSave() const { return {}; }
  // Training (dropout on) or evaluation.
  virtual void SetTraining(bool training) = 0;
  // Moves the parameters to `device` (the run's, where the engine moves the model),
  // keeping them trainable leaves.
  virtual void MoveTo(at::Device device) = 0;
  // Writes the adapter (PEFT: adapter_config.json + adapter_model.safetensors) into
  // `dir`, with the base model's tensors named by ModulesToSave() taken from `base`.
  // `base_model_name_or_path` goes to the config.
  virtual absl::Status Save(const std::string& dir, const CausalLM& base,
                            const std::string& base_model_name_or_path) const = 0;
  // Reads weights saved by Save (after Attach with the saved config), and the
  // modules_to_save tensors into `base`.
  virtual absl::Status Load(const std::string& dir, CausalLM& base) = 0;
  // Adds the adapter's change to the base weights of `model` (merge-and-unload).
  virtual absl::Status MergeInto(CausalLM& model) const = 0;
};

}  // namespace posttrain

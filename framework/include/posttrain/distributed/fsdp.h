// FSDP-style sharding of a CausalLM over the run's process group (HF
// TrainingArguments' `fsdp`: "full_shard", "shard_grad_op"; "no_shard" is plain
// data parallelism).
//
// The units are the decoder layers ("model.layers.<i>.*") and the root (the
// embeddings, the final norm, the LM head). Each unit's parameters are laid end
// to end in one flat buffer, padded to a multiple of the world size, and rank r
// keeps only its slice [r·S, (r+1)·S): the shard, a 1-D leaf tensor that the
// optimizer trains (AdamW state therefore exists for the shard alone). The
// model's own parameter tensors stay empty except while their unit is gathered:
//   - a layer is all-gathered just before its forward (LayerRunner::Run, through
//     a custom autograd function) and freed after; its backward gathers it again
//     ("full_shard"; "shard_grad_op" keeps it from forward to backward instead),
//     recomputes the layer's forward and reduce-scatters the parameter gradients
//     into the shard's gradient (mean over ranks, as data parallelism averages);
//   - the root is gathered for a whole step (BeginStep .. EndStep): the
//     embedding lookup starts every forward and the LM head ends it (and it is
//     tied to the embedding in most small models).
// Generation, evaluation and saving gather every unit for their duration
// (GatherAll/ReleaseAll), as TRL does with ZeRO-3 (unwrap_model_for_generation).
// The collectives are ProcessGroup::AllGatherFlat and ReduceScatterMean: NCCL's
// one-buffer all-gather and reduce-scatter; on Gloo (libtorch 1.13 has neither) a
// gathered list, and an all-reduce of which each rank keeps its slice (twice the
// traffic of a reduce-scatter).
//
// Every rank must run the same forward and backward passes in the same order
// (each gathers with collectives). Not thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "posttrain/distributed/process_group.h"
#include "posttrain/model/causal_lm.h"

namespace posttrain {

class ShardedModel : public LayerRunner {
 public:
  enum class Strategy { kFullShard, kShardGradOp };
  // InvalidArgument naming the value unless "full_shard" or "shard_grad_op".
  static absl::StatusOr<Strategy> ParseStrategy(const std::string& name);

  // Shards `model` in place (its parameter tensors become empty) and installs
  // itself as its layer runner. `trainable`: the shards take gradients (the
  // policy); otherwise (a reference model) only forward passes run. `model` and
  // `group` must outlive the ShardedModel; destroying it leaves the model empty.
  static absl::StatusOr<std::unique_ptr<ShardedModel>> Shard(CausalLM* model, ProcessGroup* group, Strategy strategy,
                                                             bool trainable);
  ~ShardedModel() override;

  // This rank's shards, "fsdp.root" and "fsdp.layers.<i>": 1-D, the model's dtype.
  const std::vector<std::pair<std::string, at::Tensor>>& shards() const { return shards_; }
  // Elements of unit `name` before padding (the length of its whole flat buffer).
  std::int64_t UnitNumel(const std::string& name) const;
  // For each shard (as shards()), this rank's slice of a flat mask: 1 over the
  // elements of the parameters `keep` names, 0 elsewhere (padding included).
  std::vector<std::pair<std::string, at::Tensor>> ShardMasks(const std::function<bool(const std::string&)>& keep) const;

  // The root unit whole for one step (the root's parameters then take gradients
  // when trainable); EndStep reduce-scatters them into fsdp.root's gradient and
  // frees the root.
  absl::Status BeginStep();
  absl::Status EndStep();
  // Every unit whole (its runner off) until ReleaseAll: for generation,
  // evaluation and saving.
  absl::Status GatherAll();
  absl::Status ReleaseAll();

  // This rank's slice of a whole flat buffer of unit `name` (e.g. a unit's shards
  // of a checkpoint written by any number of ranks, concatenated: their padding
  // beyond the unit's elements is dropped).
  at::Tensor SliceFlat(const std::string& name, const at::Tensor& whole) const;
  // Copies whole parameters (by HF name, e.g. from a checkpoint) into the shards.
  absl::Status LoadWhole(const std::map<std::string, at::Tensor>& tensors);

  // The units' parameter names, in unit order (layers, then the root), and one
  // unit made whole / released: for saving a model a unit at a time
  // (SaveOptions::tensor_groups). Collectives: every rank calls them alike.
  std::vector<std::vector<std::string>> UnitParameterNames() const;
  absl::Status GatherUnit(size_t index);
  absl::Status ReleaseUnit(size_t index);

  // Bytes this rank holds in shards (and, after a backward, shard gradients).
  std::int64_t ShardBytes() const;

  // An adapter over a frozen sharded base (Shard(..., trainable = false)): per
  // decoder layer, the tensors outside the shards that the layer's forward reads and
  // that take gradients (the adapter's parameters of that layer). The layer's
  // backward (a recomputation) gives them their gradients; dropout draws the same
  // random numbers as in the forward. Layers beyond the list have none.
  void SetLayerExtras(std::vector<std::vector<at::Tensor>> per_layer);
  // A runner for a view of the same weights without the adapter (CausalLM::BaseView,
  // the reference of an adapter run): the same units, no extra tensors. Owned here.
  LayerRunner* BaseRunner();

  at::Tensor Run(std::int64_t index, const at::Tensor& input, std::function<at::Tensor(const at::Tensor&)> layer) override;

  // For the autograd function (fsdp.cc).
  struct Unit;
  Unit& unit(size_t i) { return *units_[i]; }
  at::Tensor Gather(Unit& u);
  void Release(Unit& u);
  at::Tensor ReduceScatter(Unit& u, const std::vector<at::Tensor>& grads);
  Strategy strategy() const { return strategy_; }
  bool trainable() const { return trainable_; }
  const std::vector<at::Tensor>& extras(size_t index) const;

 private:
  ShardedModel() = default;
  CausalLM* model_ = nullptr;
  ProcessGroup* group_ = nullptr;
  Strategy strategy_ = Strategy::kFullShard;
  bool trainable_ = false;
  bool all_gathered_ = false;
  std::vector<std::unique_ptr<Unit>> units_;  // layers 0..L-1, then the root
  std::vector<std::pair<std::string, at::Tensor>> shards_;
  std::vector<std::vector<at::Tensor>> extras_;  // per decoder layer
  class BaseLayerRunner;
  std::unique_ptr<BaseLayerRunner> base_runner_;
  at::Tensor RunLayer(std::int64_t index, const at::Tensor& input, std::function<at::Tensor(const at::Tensor&)> layer,
                      bool with_extras);
};

}  // namespace posttrain

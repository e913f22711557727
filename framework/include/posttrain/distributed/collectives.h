// What a trainer sees of the run's ranks: sums and gathers over the whole batch.
//
// With data parallelism each rank's StepInput holds its share of the global batch;
// a statistic over the batch (GRPO's scale_rewards = "batch", DAPO's token count,
// SFT's token count, PPO's whitening, KTO's KL estimate, running means) must be
// computed over every rank's share, as TRL does by gathering across processes.
// The engine hands every trainer one Collectives (TrainerContext::collectives);
// with one rank, and during evaluation (whose metrics the engine weighs and
// reduces itself), every call is the identity, so a trainer is written once.
//
// The engine averages gradients over ranks. A loss that is a mean over a global
// count N (tokens, sequences) is therefore Σ_local / (N / world_size):
//
//   POSTTRAIN_ASSIGN_OR_RETURN(double total, collectives.Sum(local_tokens));
//   loss = local_sum / (total / collectives.world_size());
//
// Every rank must make the same calls in the same order (they are collectives);
// errors (a lost rank, a timeout) are Unavailable and end the step. Not
// thread-safe. No autograd: results are detached.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"

namespace posttrain {

class ProcessGroup;

class Collectives {
 public:
  // `group` may be null: one rank.
  explicit Collectives(ProcessGroup* group = nullptr) : group_(group) {}
  // One rank (the default of TrainerContext).
  static const Collectives& SingleRank();

  int rank() const;
  int world_size() const;

  // Σ over ranks of a host value.
  absl::StatusOr<double> Sum(double value) const;
  // Σ over ranks, element-wise (same shape and dtype on every rank), as a new tensor.
  absl::StatusOr<at::Tensor> Sum(const at::Tensor& tensor) const;
  // Every rank's `tensor` concatenated along dim 0 in rank order; sizes along dim 0
  // may differ, the other dims must agree. `offset` (optional) receives where this
  // rank's rows start in the result.
  absl::StatusOr<at::Tensor> Gather(const at::Tensor& tensor, std::int64_t* offset = nullptr) const;

  // The engine's switch: while local, every call is the identity (evaluation).
  void set_local(bool local) { local_ = local; }

 private:
  bool Identity() const;
  ProcessGroup* group_;
  bool local_ = false;
};

}  // namespace posttrain

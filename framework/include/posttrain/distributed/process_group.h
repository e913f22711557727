// The engine's process group (c10d): gradients are averaged across ranks here.
//
// This round runs one process (world size 1): a Gloo process group over an
// in-process HashStore on the loopback device. The engine already sends every
// step's gradients through AllReduceMean, so data-parallel and FSDP-style sharding
// (which keeps parameters, gradients and AdamW state by name) attach here without
// touching any trainer. NCCL replaces Gloo where libtorch has CUDA.
//
//   POSTTRAIN_ASSIGN_OR_RETURN(auto group, ProcessGroup::CreateLocal());
//   POSTTRAIN_RETURN_IF_ERROR(group->AllReduceMean(grads));   // in place
#pragma once

#include <memory>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"

namespace posttrain {

class ProcessGroup {
 public:
  // A single-rank Gloo group (rank 0 of 1).
  static absl::StatusOr<std::unique_ptr<ProcessGroup>> CreateLocal();
  ~ProcessGroup();

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }

  // Replaces each tensor by its mean over the ranks (one flattened bucket per
  // dtype). Tensors must be contiguous, on CPU; undefined ones are skipped.
  absl::Status AllReduceMean(std::vector<at::Tensor>& tensors);

 private:
  struct Impl;
  ProcessGroup() = default;
  std::unique_ptr<Impl> impl_;
  int rank_ = 0;
  int world_size_ = 1;
};

}  // namespace posttrain

// The engine's process group (c10d): the ranks of a run and their collectives.
//
// A run is one process per device. The process learns its place from the
// environment, as torchrun (and `posttrain launch`) set it — RANK, WORLD_SIZE,
// LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT — or as Slurm's srun
// does (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NTASKS_PER_NODE; the
// batch script exports MASTER_ADDR/MASTER_PORT). Ranks meet through c10d's
// TCPStore (rank 0 hosts it; under torchrun with TORCHELASTIC_USE_AGENT_STORE the
// agent already does) and talk over Gloo on CPU (NCCL on CUDA builds). Without
// those variables the group is one rank, and every collective is the identity.
//
//   POSTTRAIN_ASSIGN_OR_RETURN(DistributedEnv env, DistributedEnv::FromEnvironment());
//   POSTTRAIN_ASSIGN_OR_RETURN(auto group, ProcessGroup::Create(env, std::chrono::seconds(1800)));
//   POSTTRAIN_RETURN_IF_ERROR(group->AllReduceMean(grads));   // in place
//
// Every collective has the timeout given at creation. A rank that dies makes the
// next collective of every other rank fail (Gloo sees its sockets close); the
// error then names the lost ranks, found by their heartbeats in the store (each
// rank bumps a counter every 0.5 s from a thread of its own). Collectives must be
// called by every rank in the same order; they are not thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "absl/status/statusor.h"

namespace posttrain {

// Where this process stands among the run's processes.
struct DistributedEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  // torchrun's agent hosts the store (TORCHELASTIC_USE_AGENT_STORE=True): connect
  // to it instead of starting one; keys go under its restart attempt.
  bool agent_store = false;
  int restart_count = 0;
  // "single process", "torchrun-style environment" or "Slurm".
  std::string source = "single process";

  // InvalidArgument naming the variable when one is malformed (not an integer,
  // RANK outside [0, WORLD_SIZE), WORLD_SIZE > 1 without MASTER_ADDR/MASTER_PORT).
  static absl::StatusOr<DistributedEnv> FromEnvironment();
  std::string Describe() const;
};

class ProcessGroup {
 public:
  // A single-rank Gloo group (rank 0 of 1), no store server.
  static absl::StatusOr<std::unique_ptr<ProcessGroup>> CreateLocal();
  // Rendezvous of env.world_size ranks; Unavailable when the store or a peer
  // cannot be reached within `timeout` (which also bounds every collective).
  // `device` is the rank's: Gloo for cpu, NCCL for cuda (in a build with a CUDA
  // libtorch; FailedPrecondition otherwise).
  static absl::StatusOr<std::unique_ptr<ProcessGroup>> Create(const DistributedEnv& env,
                                                              std::chrono::milliseconds timeout,
                                                              at::Device device = at::Device(at::kCPU));
  ~ProcessGroup();

  int rank() const { return env_.rank; }
  int world_size() const { return env_.world_size; }
  const DistributedEnv& env() const { return env_; }

  // Where the collectives run (cpu for Gloo, the rank's GPU for NCCL); tensors
  // on another device are staged through it.
  at::Device device() const { return device_; }

  // Replaces each tensor by its sum (mean) over the ranks, one flattened bucket
  // per dtype. Undefined tensors are skipped. No autograd.
  absl::Status AllReduceSum(std::vector<at::Tensor>& tensors);
  absl::Status AllReduceMean(std::vector<at::Tensor>& tensors);
  // Replaces each tensor by root's (same shapes on every rank).
  absl::Status Broadcast(std::vector<at::Tensor>& tensors, int root = 0);
  // Every rank's `tensor` (same shape and dtype everywhere), in rank order.
  absl::StatusOr<std::vector<at::Tensor>> AllGather(const at::Tensor& tensor);
  // Every rank's 1-D `shard` (the same length n everywhere) end to end, in rank
  // order: [world · n]. NCCL's one-buffer all-gather; Gloo gathers a list.
  absl::StatusOr<at::Tensor> AllGatherFlat(const at::Tensor& shard);
  // `flat` ([world · n], 1-D, the same shape everywhere) summed over the ranks and
  // divided by the world size; this rank's slice [rank · n, (rank + 1) · n). NCCL's
  // reduce-scatter; Gloo (none in libtorch 1.13) all-reduces and slices.
  // InvalidArgument for another shape. `flat` may be overwritten (a scratch buffer).
  absl::StatusOr<at::Tensor> ReduceScatterMean(const at::Tensor& flat);
  // Every rank's string (any lengths), in rank order.
  absl::StatusOr<std::vector<std::string>> AllGatherStrings(const std::string& text);
  absl::Status Barrier();

 private:
  struct Impl;
  ProcessGroup() = default;
  // The error of a failed collective: what failed, and which ranks stopped beating.
  absl::Status CollectiveError(const char* what, const std::exception& e);
  std::unique_ptr<Impl> impl_;
  DistributedEnv env_;
  at::Device device_ = at::Device(at::kCPU);
};

}  // namespace posttrain

// Where tensors live. Every tensor in posttrain is created with explicit options:
//   - tensors that meet the model (masks, positions, targets, rewards, caches)
//     take the model's (CausalLM::options(), or an input tensor's), so they follow
//     the run's device;
//   - host tensors are built on the CPU from host data — token ids being batched,
//     file contents, checkpoint state, values sent through the process group —
//     with HostOptions, and moved (.to(device)) where they meet the model.
// The run's device is `cpu`, or `cuda:<LOCAL_RANK>` where libtorch has CUDA
// (RunDevice).
//
//   at::Tensor ids = at::tensor(token_ids, HostOptions(at::kLong)).to(model.device());
//   at::Tensor mask = at::zeros({n, t}, model.options().dtype(at::kBool));
#pragma once

#include <ATen/ATen.h>

#include "absl/status/statusor.h"

namespace posttrain {

// Options of a host (CPU) tensor of `dtype`.
inline at::TensorOptions HostOptions(at::ScalarType dtype) {
  return at::TensorOptions().device(at::kCPU).dtype(dtype);
}

// The device of the process with `local_rank` of `local_world_size` on its node:
// cuda:<local_rank> when libtorch has CUDA, a GPU is present and `use_cpu` is false
// (HF TrainingArguments' use_cpu), else cpu. An error when a node's ranks outnumber
// its GPUs (NCCL takes one GPU per rank): the message says what to do.
absl::StatusOr<at::Device> RunDevice(int local_rank, int local_world_size, bool use_cpu);

// HF's enable_full_determinism for this process, before its first CUDA work:
// libtorch's deterministic algorithms (an op that has none raises an error naming
// it), CUBLAS_WORKSPACE_CONFIG=:4096:8 unless already set (cuBLAS is deterministic
// only with a fixed workspace), cuDNN deterministic and not benchmarking. Atomic
// accumulation in CUDA backward kernels (embedding, gather, index_add) otherwise
// sums in a varying order, so two runs of the same steps differ in the last bits.
void EnableFullDeterminism();

}  // namespace posttrain

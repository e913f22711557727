#include "posttrain/core/device.h"

#include <ATen/Context.h>
#include <stdlib.h>

#include "absl/strings/str_cat.h"

namespace posttrain {

absl::StatusOr<at::Device> RunDevice(int local_rank, int local_world_size, bool use_cpu) {
  if (use_cpu || !at::hasCUDA() || at::getNumGPUs() == 0) return at::Device(at::kCPU);
  const int gpus = static_cast<int>(at::getNumGPUs());
  if (local_world_size > gpus) {
    return absl::FailedPreconditionError(absl::StrCat(
        local_world_size, " ranks on this node but ", gpus, gpus == 1 ? " GPU" : " GPUs",
        " visible: each rank takes a GPU of its own (NCCL); start at most ", gpus,
        " per node (--nproc-per-node), or set use_cpu = true in [trainer] (Gloo on the CPU)"));
  }
  return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(local_rank));
}

void EnableFullDeterminism() {
  ::setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8", /*overwrite=*/0);
  at::globalContext().setDeterministicAlgorithms(true, /*warn_only=*/false);
  at::globalContext().setDeterministicCuDNN(true);
  at::globalContext().setBenchmarkCuDNN(false);
}

}  // namespace posttrain

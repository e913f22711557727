#include "posttrain/core/device.h"

#include <ATen/Context.h>

namespace posttrain {

at::Device RunDevice(int local_rank) {
  if (at::hasCUDA() && at::getNumGPUs() > 0) {
    return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(local_rank % static_cast<int>(at::getNumGPUs())));
  }
  return at::Device(at::kCPU);
}

}  // namespace posttrain

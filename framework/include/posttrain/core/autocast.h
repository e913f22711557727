// Autocast state, per device type, through one API across libtorch versions:
// libtorch 1.x to 2.3 names it per device (set_cpu_enabled, set_autocast_gpu_dtype),
// 2.4 made it device-generic (set_autocast_enabled(device_type, ...)) and deprecated
// the per-device names.
#pragma once

#include <ATen/autocast_mode.h>
#include <torch/version.h>

namespace posttrain {

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)

inline bool AutocastEnabled(at::DeviceType device_type) { return at::autocast::is_autocast_enabled(device_type); }
inline at::ScalarType AutocastDtype(at::DeviceType device_type) { return at::autocast::get_autocast_dtype(device_type); }

// Turns autocast on (to `dtype`) or off for `device_type` (kCPU or kCUDA).
inline void SetAutocast(at::DeviceType device_type, bool enabled, at::ScalarType dtype = at::kBFloat16) {
  if (enabled) at::autocast::set_autocast_dtype(device_type, dtype);
  at::autocast::set_autocast_enabled(device_type, enabled);
}

#else

inline bool AutocastEnabled(at::DeviceType device_type) {
  return device_type == at::kCUDA ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
}
inline at::ScalarType AutocastDtype(at::DeviceType device_type) {
  return device_type == at::kCUDA ? at::autocast::get_autocast_gpu_dtype() : at::autocast::get_autocast_cpu_dtype();
}

inline void SetAutocast(at::DeviceType device_type, bool enabled, at::ScalarType dtype = at::kBFloat16) {
  if (device_type == at::kCUDA) {
    if (enabled) at::autocast::set_autocast_gpu_dtype(dtype);
    at::autocast::set_enabled(enabled);
  } else {
    if (enabled) at::autocast::set_autocast_cpu_dtype(dtype);
    at::autocast::set_cpu_enabled(enabled);
  }
}

#endif

// Autocast off for the CPU and CUDA in a scope, then as it was (on or off, and its
// dtype).
class NoAutocastScope {
 public:
  NoAutocastScope() {
    SetAutocast(at::kCPU, false);
    SetAutocast(at::kCUDA, false);
  }
  ~NoAutocastScope() {
    SetAutocast(at::kCPU, cpu_, cpu_dtype_);
    SetAutocast(at::kCUDA, cuda_, cuda_dtype_);
  }
  NoAutocastScope(const NoAutocastScope&) = delete;
  NoAutocastScope& operator=(const NoAutocastScope&) = delete;

 private:
  bool cpu_ = AutocastEnabled(at::kCPU), cuda_ = AutocastEnabled(at::kCUDA);
  at::ScalarType cpu_dtype_ = AutocastDtype(at::kCPU), cuda_dtype_ = AutocastDtype(at::kCUDA);
};

// Whether autocast is on for the CPU or any GPU: a kernel that bypasses the
// dispatcher must not run then.
inline bool AnyAutocast() { return AutocastEnabled(at::kCPU) || AutocastEnabled(at::kCUDA); }

}  // namespace posttrain

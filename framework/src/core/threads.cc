#include "posttrain/core/threads.h"

#include <cstdlib>
#include <thread>

#include <ATen/Parallel.h>

namespace posttrain {

int ConfigureThreads(at::ScalarType compute_dtype) {
  if (std::getenv("OMP_NUM_THREADS") == nullptr) {
    const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    at::set_num_threads(compute_dtype == at::kBFloat16 || compute_dtype == at::kHalf ? cores : 1);
  }
  return at::get_num_threads();
}

}  // namespace posttrain

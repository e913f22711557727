#include "posttrain/core/threads.h"

#include <algorithm>
#include <cstdlib>
#include <thread>
#include <vector>

#include <ATen/Parallel.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace posttrain {

const CpuInfo& DetectCpu() {
  static const CpuInfo info = [] {
    CpuInfo c;
    c.cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
#if defined(__x86_64__) || defined(__i386__)
    unsigned a = 0, b = 0, cx = 0, d = 0;
    if (__get_cpuid_count(7, 0, &a, &b, &cx, &d)) {
      c.avx2 = (b >> 5) & 1;
      c.avx512f = (b >> 16) & 1;
      c.amx_bf16 = (d >> 22) & 1;
      unsigned a1 = 0, b1 = 0, c1 = 0, d1 = 0;
      if (a >= 1 && __get_cpuid_count(7, 1, &a1, &b1, &c1, &d1)) c.avx512_bf16 = (a1 >> 5) & 1;
    }
#endif
    return c;
  }();
  return info;
}

std::string CpuInfo::Describe() const {
  std::vector<std::string> features;
  if (avx2) features.push_back("avx2");
  if (avx512f) features.push_back("avx512f");
  if (avx512_bf16) features.push_back("avx512_bf16");
  if (amx_bf16) features.push_back("amx_bf16");
  return absl::StrCat(cores, " cores; ", features.empty() ? "no avx2" : absl::StrJoin(features, " "),
                      "; bf16 matmul: ", native_bf16() ? "native (bf16 autocast is the fast path)"
                                                       : "emulated (use fp32: bf16 autocast is slower here)");
}

int ConfigureThreads(at::ScalarType compute_dtype) {
  if (std::getenv("OMP_NUM_THREADS") == nullptr) {
    const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    at::set_num_threads(compute_dtype == at::kBFloat16 || compute_dtype == at::kHalf ? cores : 1);
  }
  return at::get_num_threads();
}

}  // namespace posttrain

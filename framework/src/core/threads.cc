#include "posttrain/core/threads.h"

#include <dlfcn.h>
#include <sys/types.h>

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

namespace {

// OpenBLAS's pool, looked up rather than linked: libtorch links whichever BLAS the
// system provides, and only OpenBLAS has this entry point.
void SetBlasThreads(int threads) {
  using SetNumThreads = void (*)(int);
  auto set = reinterpret_cast<SetNumThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  if (set != nullptr) set(threads);
}

}  // namespace

int ConfigureThreads(at::ScalarType compute_dtype, ThreadUse use) {
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const bool half = compute_dtype == at::kBFloat16 || compute_dtype == at::kHalf;
#if defined(POSTTRAIN_WITH_ONEDNN)
  constexpr bool linear_in_onednn = true;
#else
  constexpr bool linear_in_onednn = false;
#endif
  if (std::getenv("OMP_NUM_THREADS") == nullptr) {
    // Without oneDNN, fp32 linear layers run in OpenBLAS's pool: OpenMP stays at one.
    const bool all_cores = half || (linear_in_onednn && use == ThreadUse::kTraining);
    at::set_num_threads(all_cores ? cores : 1);
  }
  if (linear_in_onednn && std::getenv("OPENBLAS_NUM_THREADS") == nullptr) SetBlasThreads(1);
  return at::get_num_threads();
}

std::string DescribeBlasThreads() {
  using GetNumThreads = int (*)();
  auto get = reinterpret_cast<GetNumThreads>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  if (get == nullptr) return "not OpenBLAS (its threads are its own)";
  const int threads = get();
  return absl::StrCat("OpenBLAS, ", threads, threads == 1 ? " thread" : " threads");
}

std::string DescribeAllocator(bool* keeps_freed_pages) {
  if (keeps_freed_pages != nullptr) *keeps_freed_pages = false;
  // jemalloc's control interface, looked up rather than linked: the framework must
  // not pull jemalloc into programs that chose another allocator (sanitizer builds).
  using Mallctl = int (*)(const char*, void*, size_t*, void*, size_t);
  auto mallctl = reinterpret_cast<Mallctl>(dlsym(RTLD_DEFAULT, "mallctl"));
  if (mallctl == nullptr) {
    return "glibc malloc (large tensors are mapped and zeroed anew every step: link jemalloc, "
           "posttrain_program() in CMakeLists.txt)";
  }
  ssize_t dirty = 0, muzzy = 0;
  size_t size = sizeof(ssize_t);
  if (mallctl("opt.dirty_decay_ms", &dirty, &size, nullptr, 0) != 0) return "jemalloc (settings unreadable)";
  size = sizeof(ssize_t);
  if (mallctl("opt.muzzy_decay_ms", &muzzy, &size, nullptr, 0) != 0) muzzy = 0;
  const bool kept = dirty == -1 && muzzy == -1;
  if (keeps_freed_pages != nullptr) *keeps_freed_pages = kept;
  return absl::StrCat("jemalloc, ", kept ? "freed pages kept" : "freed pages returned to the kernel",
                      " (dirty_decay_ms ", dirty, ", muzzy_decay_ms ", muzzy, ")");
}

}  // namespace posttrain

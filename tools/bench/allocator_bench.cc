// Allocation cost of a training step's large tensors: allocate a buffer of --mib
// MiB as libtorch does, write every page, free it; --repeat times. Reported: the
// allocator in use, milliseconds and minor page faults per cycle after the first.
//
//   build/bin/allocator_bench [--mib 256] [--repeat 20]
//
// With glibc's malloc every cycle maps fresh pages (one fault per 4 KiB page, and
// the kernel zeroes each one); with the caching allocator posttrain links
// (jemalloc, see CMakeLists.txt) the freed extent is reused: ~0 faults per cycle.
#include <dlfcn.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <ATen/ATen.h>

namespace {

long MinorFaults() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_minflt;
}

}  // namespace

int main(int argc, char** argv) {
  long mib = 256, repeat = 20;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--mib") mib = std::atol(argv[i + 1]);
    else if (flag == "--repeat") repeat = std::atol(argv[i + 1]);
    else {
      std::fprintf(stderr, "usage: allocator_bench [--mib N] [--repeat N]\n");
      return 2;
    }
  }
  if (mib < 1 || repeat < 2) {
    std::fprintf(stderr, "allocator_bench: --mib >= 1 and --repeat >= 2\n");
    return 2;
  }
  const bool jemalloc = dlsym(RTLD_DEFAULT, "mallctl") != nullptr;
  const std::int64_t elements = mib * 1024 * 1024 / 4;
  double seconds = 0;
  long faults = 0;
  for (long r = 0; r < repeat; ++r) {
    const long f0 = MinorFaults();
    const auto t0 = std::chrono::steady_clock::now();
    {
      at::Tensor t = at::empty({elements}, at::kFloat);
      t.fill_(1.0f);
    }
    const auto t1 = std::chrono::steady_clock::now();
    if (r == 0) continue;  // the first cycle maps the memory once
    seconds += std::chrono::duration<double>(t1 - t0).count();
    faults += MinorFaults() - f0;
  }
  const double cycles = static_cast<double>(repeat - 1);
  std::printf("allocator %s: %ld MiB buffer, %.2f ms and %.0f minor page faults per cycle (%ld cycles)\n",
              jemalloc ? "jemalloc" : "glibc", mib, 1e3 * seconds / cycles, faults / cycles, repeat - 1);
  return 0;
}

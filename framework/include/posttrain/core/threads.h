// Intra-op threads for libtorch, chosen by the compute dtype.
//
// fp32 matmuls run in OpenBLAS, which keeps its own thread pool; extra OpenMP
// threads only spin beside it (measured: stories15M-shaped generation 6.4 s with one
// OpenMP thread vs 10.1 s with two). bf16 matmuls run in oneDNN on OpenMP threads,
// which want every core (4.2 s vs 3.4 s). libgomp here starts with one thread.
// OMP_NUM_THREADS, when set, always wins.
#pragma once

#include <string>

#include <c10/core/ScalarType.h>

namespace posttrain {

// What the CPU offers the compute paths, detected at run time (cpuid).
struct CpuInfo {
  bool avx2 = false;
  bool avx512f = false;
  bool avx512_bf16 = false;  // native bf16 dot products (oneDNN's fast bf16 matmul)
  bool amx_bf16 = false;     // Intel AMX tiles
  int cores = 1;             // hardware threads available to this process

  // bf16 matmuls run in hardware; without it oneDNN emulates them and bf16
  // autocast is slower than fp32 (measured on an AVX2-only EPYC: SFT 21 tokens/s
  // in bf16 against 600+ in fp32).
  bool native_bf16() const { return avx512_bf16 || amx_bf16; }
  // One line for logs and `posttrain env`.
  std::string Describe() const;
};

const CpuInfo& DetectCpu();

// Returns the number of OpenMP threads in use.
int ConfigureThreads(at::ScalarType compute_dtype);

// The malloc this process runs on, for logs and `posttrain env`: "jemalloc, freed
// pages kept (dirty_decay_ms -1)" when posttrain_program() linked it with
// cmake/allocator_config.cc's setting, else what is missing (glibc's malloc maps and
// zeroes every large tensor anew each step). `keeps_freed_pages`, if given, is set.
std::string DescribeAllocator(bool* keeps_freed_pages = nullptr);

}  // namespace posttrain

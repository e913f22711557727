// Threads for libtorch's intra-op work (OpenMP) and for the system BLAS (OpenBLAS).
//
// Two pools wanting every core fight: OpenBLAS's pthreads spin in sched_yield between
// calls and take the cores from the OpenMP workers (measured on a 2-vCPU EPYC, SFT on
// the stories15M shape at fp32: 1,054-1,139 tokens/s with OpenBLAS at 2 threads beside
// one OpenMP thread, 821-932 with both pools at 2, 1,326-1,524 with OpenBLAS at 1 and
// OpenMP at 2). Where posttrain's linear layers run in oneDNN's sgemm (gemm.h: every
// linear layer and the LM head), OpenBLAS keeps only small products and runs on one
// thread; OpenMP then gets every core for training. Generation of small models is
// faster on one OpenMP thread at fp32 (stories260K, 16 x 128 tokens: 17,500-21,300
// tokens/s on one, 11,400-12,800 on two: parallel regions cost more than they share
// out). bf16 matmuls run in oneDNN on OpenMP threads and want every core.
// OMP_NUM_THREADS, when set, wins for OpenMP; OPENBLAS_NUM_THREADS for OpenBLAS.
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

// What the threads are set for: a training loop (forward, backward, optimizer; online
// trainers' generation included) or generation alone (`posttrain generate`).
enum class ThreadUse { kTraining, kGeneration };

// Sets both pools as the header comment says. Returns the number of OpenMP threads.
int ConfigureThreads(at::ScalarType compute_dtype, ThreadUse use = ThreadUse::kTraining);

// "OpenBLAS, 1 thread", or "not OpenBLAS (its threads are its own)": for `posttrain env`.
std::string DescribeBlasThreads();

// The malloc this process runs on, for logs and `posttrain env`: "jemalloc, freed
// pages kept (dirty_decay_ms -1)" when posttrain_program() linked it with
// cmake/allocator_config.cc's setting, else what is missing (glibc's malloc maps and
// zeroes every large tensor anew each step). `keeps_freed_pages`, if given, is set.
std::string DescribeAllocator(bool* keeps_freed_pages = nullptr);

}  // namespace posttrain

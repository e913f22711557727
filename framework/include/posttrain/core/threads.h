// Intra-op threads for libtorch, chosen by the compute dtype.
//
// fp32 matmuls run in OpenBLAS, which keeps its own thread pool; extra OpenMP
// threads only spin beside it (measured: stories15M-shaped generation 6.4 s with one
// OpenMP thread vs 10.1 s with two). bf16 matmuls run in oneDNN on OpenMP threads,
// which want every core (4.2 s vs 3.4 s). libgomp here starts with one thread.
// OMP_NUM_THREADS, when set, always wins.
#pragma once

#include <c10/core/ScalarType.h>

namespace posttrain {

// Returns the number of OpenMP threads in use.
int ConfigureThreads(at::ScalarType compute_dtype);

}  // namespace posttrain

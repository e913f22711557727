// jemalloc's configuration for every posttrain program (linked into each
// executable by posttrain_use_allocator; jemalloc reads this global at start-up,
// MALLOC_CONF in the environment still overrides it).
//
// dirty_decay_ms:-1 keeps freed pages for reuse instead of returning them to the
// kernel: a training step frees and re-allocates the same large tensors every
// step, and with any finite decay jemalloc purges large extents (its oversize
// arena) so that each step page-faults and zeroes them again — measured with
// build/bin/allocator_bench (128 MiB buffers): 114 ms and 32,769 faults per cycle
// with the defaults or a 30 s decay, 15 ms and 0 faults with this setting. The
// process keeps its peak footprint, as a caching allocator does.
extern "C" {
__attribute__((visibility("default"), used)) const char* malloc_conf = "dirty_decay_ms:-1,muzzy_decay_ms:-1";
}

#pragma once
// Memory bandwidth of this machine, measured with all threads of a pool. The decode speed of a
// memory-bound model is judged against these figures (bytes of weights read per second as a
// fraction of the copy bandwidth).
#include <cstddef>

#include "core/thread_pool.h"

namespace farsight::cpu {

// Copy bandwidth: memcpy between two buffers of `bytes` each (split across the pool's threads),
// several repetitions, best one. Returns GB/s (1e9 bytes/s) counting bytes read + bytes
// written (2 * bytes per copy). Throws Error when bytes < 1 MiB or the buffers cannot be
// allocated.
double measure_copy_bandwidth(ThreadPool& pool, size_t bytes = size_t(1) << 30);

// Read bandwidth: summing a buffer of `bytes` (split across the pool's threads), several
// repetitions, best one. GB/s of bytes read. Throws Error when bytes < 1 MiB.
double measure_read_bandwidth(ThreadPool& pool, size_t bytes = size_t(1) << 30);

}  // namespace farsight::cpu

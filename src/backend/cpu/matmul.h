#pragma once
#include <cstddef>
#include <cstdint>

#include "core/dtype.h"
#include "core/thread_pool.h"

namespace farsight::cpu {

// out[t, n] = sum_k x[t, k] * W[n, k] (+ bias[n]).  x: f32 [T, K] row-major; W: [N, K] row-major
// in F32, F16 or BF16; bias: f32 [N] or nullptr; out: f32 [T, N].
void matmul(const float* x, int64_t T, int64_t K, const void* W, DType wtype, int64_t N,
            const float* bias, float* out, ThreadPool& pool);

// GB/s of a large memcpy, counting bytes read + bytes written.
double measure_copy_bandwidth(ThreadPool& pool, size_t bytes = size_t(1) << 30);
double measure_read_bandwidth(ThreadPool& pool, size_t bytes = size_t(1) << 30);

}  // namespace farsight::cpu

// TEMPORARY naive implementation (replaced by the optimised kernels).
#include "backend/cpu/matmul.h"

#include <chrono>
#include <cstring>
#include <vector>

namespace farsight::cpu {

void matmul(const float* x, int64_t T, int64_t K, const void* W, DType wtype, int64_t N,
            const float* bias, float* out, ThreadPool& pool) {
    pool.parallel_for(N, [&](int64_t n0, int64_t n1, int) {
        std::vector<float> row(static_cast<size_t>(K));
        for (int64_t n = n0; n < n1; ++n) {
            convert_to_f32(wtype, static_cast<const char*>(W) + n * K * dtype_size(wtype), row.data(),
                           static_cast<size_t>(K));
            for (int64_t t = 0; t < T; ++t) {
                float acc = 0;
                for (int64_t k = 0; k < K; ++k) acc += x[t * K + k] * row[static_cast<size_t>(k)];
                out[t * N + n] = acc + (bias ? bias[n] : 0.0f);
            }
        }
    });
}

double measure_copy_bandwidth(ThreadPool& pool, size_t bytes) {
    std::vector<char> a(bytes, 1), b(bytes, 2);
    auto t0 = std::chrono::steady_clock::now();
    std::memcpy(b.data(), a.data(), bytes);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return 2.0 * static_cast<double>(bytes) / s / 1e9;
}
double measure_read_bandwidth(ThreadPool& pool, size_t bytes) { return measure_copy_bandwidth(pool, bytes); }

}  // namespace farsight::cpu

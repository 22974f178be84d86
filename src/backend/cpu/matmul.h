#pragma once
// CPU matrix kernels: out = x @ W^T (+ bias) with f32 activations and f32/f16/bf16 weights.
//
// Accumulation is in f32. Every output element out[t, n] is computed with the same sequence of
// operations whatever T, the thread count or the blocking: lane j of a vector accumulator sums
// x[t, k] * W[n, k] (fused multiply-add) for k = j, j + L, j + 2L, ... in increasing k (L = the
// vector width of the selected path; the last partial vector is zero-padded), then the L lanes
// are added in a fixed tree and the bias is added last. Hence a row of a batched call is bitwise
// identical to the same row computed alone (for a given kernel path).
#include <cstdint>
#include <string_view>

#include "backend/cpu/bandwidth.h"  // measure_copy_bandwidth, measure_read_bandwidth
#include "core/dtype.h"
#include "core/thread_pool.h"

namespace farsight::cpu {

// out[t, n] = sum_k x[t, k] * W[n, k] (+ bias[n]).
//   x: f32 [T, K] row-major; W: [N, K] row-major in F32, F16 or BF16; bias: f32 [N] or nullptr;
//   out: f32 [T, N] (must not overlap x, W or bias). Multi-threaded over N (and T when N is
//   small) with pool. Throws Error for an unsupported weight dtype or negative sizes.
//   For T >= 4 each thread keeps thread_local scratch (f32 copies of >= 12 weight rows, i.e.
//   max(256 KiB, 48 * K bytes), plus <= 150 KiB of accumulator tiles) between calls.
//   Safe to call concurrently from several threads.
void matmul(const float* x, int64_t T, int64_t K, const void* W, DType wtype, int64_t N,
            const float* bias, float* out, ThreadPool& pool);

// The instruction-set path matmul uses. Auto picks the best one compiled in (AVX-512 when the
// build targets it, else AVX2+FMA, else portable scalar code). Paths give slightly different
// rounding (different vector widths) but each one is deterministic.
enum class MatmulIsa { Auto, Avx512, Avx2, Scalar };

std::string_view matmul_isa_name(MatmulIsa isa);
// Whether a path is compiled into this build (Auto and Scalar always are).
bool matmul_isa_available(MatmulIsa isa);
// The path matmul uses now (never Auto).
MatmulIsa matmul_active_isa();
// Forces a path for every later matmul call in the process (tests, benchmarks); Auto restores
// the default. Throws Error when the path is not compiled in. Not meant to be changed while
// another thread runs matmul.
void set_matmul_isa(MatmulIsa isa);

// Sets a path for the lifetime of the object and restores the previous one afterwards.
class ScopedMatmulIsa {
  public:
    explicit ScopedMatmulIsa(MatmulIsa isa);
    ~ScopedMatmulIsa();
    ScopedMatmulIsa(const ScopedMatmulIsa&) = delete;
    ScopedMatmulIsa& operator=(const ScopedMatmulIsa&) = delete;

  private:
    MatmulIsa previous_;
};

}  // namespace farsight::cpu

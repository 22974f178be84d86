// Skinny GEMM for decode (T = 1..16 rows): out[T,N] = x[T,K] @ W[N,K]^T (+ bias).
// Memory-bound on W: every warp streams W rows with 16-byte non-caching loads, several in flight
// per thread; x (a few KB) is served from L1/L2. When N is small, the warps of a block split K
// between them and reduce through shared memory, so that the grid still fills the device.
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/kernels.cuh"

namespace farsight::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kUnroll = 4;

__device__ __forceinline__ uint4 ld_stream(const void* p) {
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                 : "l"(p));
    return r;
}

template <typename T>
__device__ __forceinline__ void unpack8(const uint4& v, float (&f)[8]) {
    const T* e = reinterpret_cast<const T*>(&v);
#pragma unroll
    for (int i = 0; i < 8; ++i) f[i] = to_f(e[i]);
}

// Block: kWarps warps; rows_per_block = kWarps / ksplit rows, ksplit warps per row.
template <typename T, int TT>
__global__ void __launch_bounds__(kThreads)
    gemv_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                T* __restrict__ out, int N, int K, int ksplit) {
    __shared__ float red[kWarps][TT];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int rows_per_block = kWarps / ksplit;
    const int row = blockIdx.x * rows_per_block + warp / ksplit;
    const int part = warp % ksplit;
    float acc[TT];
#pragma unroll
    for (int t = 0; t < TT; ++t) acc[t] = 0.0f;
    if (row < N) {
        const int nchunks = K / 8;
        const uint4* wr = reinterpret_cast<const uint4*>(w + static_cast<size_t>(row) * K);
        const uint4* xr = reinterpret_cast<const uint4*>(x);
        const int stride = 32 * ksplit;
        int c = part * 32 + lane;
        for (; c + (kUnroll - 1) * stride < nchunks; c += kUnroll * stride) {
            uint4 wv[kUnroll];
#pragma unroll
            for (int u = 0; u < kUnroll; ++u) wv[u] = ld_stream(wr + c + u * stride);
#pragma unroll
            for (int u = 0; u < kUnroll; ++u) {
                float wf[8];
                unpack8<T>(wv[u], wf);
#pragma unroll
                for (int t = 0; t < TT; ++t) {
                    float xf[8];
                    unpack8<T>(__ldg(xr + static_cast<size_t>(t) * nchunks + c + u * stride), xf);
#pragma unroll
                    for (int i = 0; i < 8; ++i) acc[t] = fmaf(wf[i], xf[i], acc[t]);
                }
            }
        }
        for (; c < nchunks; c += stride) {
            float wf[8];
            unpack8<T>(ld_stream(wr + c), wf);
#pragma unroll
            for (int t = 0; t < TT; ++t) {
                float xf[8];
                unpack8<T>(__ldg(xr + static_cast<size_t>(t) * nchunks + c), xf);
#pragma unroll
                for (int i = 0; i < 8; ++i) acc[t] = fmaf(wf[i], xf[i], acc[t]);
            }
        }
    }
#pragma unroll
    for (int t = 0; t < TT; ++t) {
        float v = acc[t];
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0) red[warp][t] = v;
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < rows_per_block * TT; idx += kThreads) {
        int r = idx / TT, t = idx % TT;
        int n = blockIdx.x * rows_per_block + r;
        if (n >= N) continue;
        float s = 0.0f;
        for (int p = 0; p < ksplit; ++p) s += red[r * ksplit + p][t];
        if (bias) s += to_f(bias[n]);
        out[static_cast<size_t>(t) * N + n] = from_f<T>(s);
    }
}

template <typename T, int TT>
void launch_tt(const void* x, const void* w, const void* bias, void* out, int64_t T_, int64_t N,
               int64_t K, int num_sms, cudaStream_t st) {
    if constexpr (TT > 1) {
        if (T_ < TT) return launch_tt<T, TT - 1>(x, w, bias, out, T_, N, K, num_sms, st);
    }
    int ksplit = 1;
    const int64_t chunks = K / 8;
    while (ksplit < kWarps && (N * ksplit) / (kWarps) < 2 * num_sms && chunks >= 32 * 2 * ksplit)
        ksplit *= 2;
    const int rows_per_block = kWarps / ksplit;
    unsigned grid = ceil_div(static_cast<size_t>(N), rows_per_block);
    gemv_kernel<T, TT><<<grid, kThreads, 0, st>>>(
        static_cast<const T*>(x), static_cast<const T*>(w), static_cast<const T*>(bias),
        static_cast<T*>(out), static_cast<int>(N), static_cast<int>(K), ksplit);
    FS_CUDA_LAUNCH("gemv_kernel");
}

}  // namespace

bool gemv_supported(int64_t T, int64_t N, int64_t K) {
    return T >= 1 && T <= 16 && K % 8 == 0 && K > 0 && N > 0 && N < (1ll << 31) && K < (1ll << 31);
}

void launch_gemv(DType dt, const void* x, const void* w, const void* bias, void* out, int64_t T,
                 int64_t N, int64_t K, int num_sms, cudaStream_t st) {
    FS_CHECK(gemv_supported(T, N, K), "gemv: unsupported shape T={} N={} K={}", T, N, K);
    if (dt == DType::BF16)
        launch_tt<__nv_bfloat16, 16>(x, w, bias, out, T, N, K, num_sms, st);
    else if (dt == DType::F16)
        launch_tt<__half, 16>(x, w, bias, out, T, N, K, num_sms, st);
    else
        fail("gemv: dtype {} not supported", dtype_name(dt));
}

}  // namespace farsight::cuda

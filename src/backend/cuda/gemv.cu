// Skinny GEMM for decode (T = 1..16 rows): out[T,N] = x[T,K] @ W[N,K]^T (+ bias).
// Memory-bound on W: every warp streams W rows with 16-byte non-caching loads, several in flight
// per thread; x (a few KB) is served from L1/L2. When N is small, the warps of a block split K
// between them and reduce through shared memory, so that the grid still fills the device.
#include <algorithm>

#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/kernels.cuh"

namespace farsight::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kUnroll = 4;

// Block: kWarps warps; rows_per_block = kWarps / ksplit rows, ksplit warps per row. Software
// pipelined: each lane keeps the next kUnroll weight loads in flight while it multiplies the
// current ones. The first batch of weight loads is issued before pdl_wait() (weights are
// constant), so with programmatic dependent launch the kernel streams weights while the
// kernel before it (which produces x) finishes.
// GATED (a [2N, K] gate_up weight, one row of x): output n = silu(T(x . w[n])) * T(x . w[N + n])
// with silu_mul_kernel's roundings; each warp streams the gate row, then the up row.
template <typename T, int TT, bool GATED = false>
__global__ void __launch_bounds__(kThreads)
    gemv_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                T* __restrict__ out, int N, int K, int ksplit) {
    constexpr int NR = GATED ? 2 : 1;  // weight rows per output
    __shared__ float red[NR][kWarps][TT];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int rows_per_block = kWarps / ksplit;
    const int row = blockIdx.x * rows_per_block + warp / ksplit;
    const int part = warp % ksplit;
    const int nchunks = K / 8;
    const int stride = 32 * ksplit;
    const uint4* xr = reinterpret_cast<const uint4*>(x);
    const int c0 = part * 32 + lane;
    const bool full0 = row < N && c0 + (kUnroll - 1) * stride < nchunks;
    uint4 wv[NR][kUnroll];
#pragma unroll
    for (int r = 0; r < NR; ++r) {
        const uint4* wr =
            reinterpret_cast<const uint4*>(w + static_cast<size_t>(row < N ? row + r * N : 0) * K);
        if (full0) {
#pragma unroll
            for (int u = 0; u < kUnroll; ++u) wv[r][u] = ld_nc_stream(wr + c0 + u * stride);
        }
    }
    pdl_trigger();
    pdl_wait();  // x is the previous kernel's output
    float acc[NR][TT];
#pragma unroll
    for (int r = 0; r < NR; ++r)
#pragma unroll
        for (int t = 0; t < TT; ++t) acc[r][t] = 0.0f;
    if (row < N) {
#pragma unroll
        for (int r = 0; r < NR; ++r) {
            const uint4* wr = reinterpret_cast<const uint4*>(w + static_cast<size_t>(row + r * N) * K);
            int c = c0;
            bool full = full0;
            while (full) {
                const int cn = c + kUnroll * stride;
                const bool nfull = cn + (kUnroll - 1) * stride < nchunks;
                uint4 nx[kUnroll];
                if (nfull) {
#pragma unroll
                    for (int u = 0; u < kUnroll; ++u) nx[u] = ld_nc_stream(wr + cn + u * stride);
                }
#pragma unroll
                for (int u = 0; u < kUnroll; ++u) {
                    float wf[8];
                    unpack8<T>(wv[r][u], wf);
#pragma unroll
                    for (int t = 0; t < TT; ++t) {
                        float xf[8];
                        unpack8<T>(__ldg(xr + static_cast<size_t>(t) * nchunks + c + u * stride), xf);
#pragma unroll
                        for (int i = 0; i < 8; ++i) acc[r][t] = fmaf(wf[i], xf[i], acc[r][t]);
                    }
                }
                if (nfull) {
#pragma unroll
                    for (int u = 0; u < kUnroll; ++u) wv[r][u] = nx[u];
                }
                c = cn;
                full = nfull;
            }
            for (; c < nchunks; c += stride) {
                float wf[8];
                unpack8<T>(ld_nc_stream(wr + c), wf);
#pragma unroll
                for (int t = 0; t < TT; ++t) {
                    float xf[8];
                    unpack8<T>(__ldg(xr + static_cast<size_t>(t) * nchunks + c), xf);
#pragma unroll
                    for (int i = 0; i < 8; ++i) acc[r][t] = fmaf(wf[i], xf[i], acc[r][t]);
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < NR; ++r)
#pragma unroll
        for (int t = 0; t < TT; ++t) {
            float v = acc[r][t];
            for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
            if (lane == 0) red[r][warp][t] = v;
        }
    __syncthreads();
    for (int idx = threadIdx.x; idx < rows_per_block * TT; idx += kThreads) {
        int rr = idx / TT, t = idx % TT;
        int n = blockIdx.x * rows_per_block + rr;
        if (n >= N) continue;
        float s = 0.0f;
        for (int p = 0; p < ksplit; ++p) s += red[0][rr * ksplit + p][t];
        if (bias) s += to_f(bias[n]);
        if constexpr (GATED) {
            float su = 0.0f;
            for (int p = 0; p < ksplit; ++p) su += red[NR - 1][rr * ksplit + p][t];
            if (bias) su += to_f(bias[N + n]);
            const float g = round_to<T>(s), u = round_to<T>(su);  // linear() output, in T
            const float sg = round_to<T>(g / (1.0f + expf(-g)));
            out[static_cast<size_t>(t) * N + n] = from_f<T>(sg * u);
        } else {
            out[static_cast<size_t>(t) * N + n] = from_f<T>(s);
        }
    }
}

// Warps per output row: split K until the grid holds about two blocks per SM (keeping at least
// 64 chunks of 8 per warp).
int gemv_ksplit(int64_t N, int64_t K, int num_sms) {
    int ksplit = 1;
    const int64_t chunks = K / 8;
    while (ksplit < kWarps && (N * ksplit) / (kWarps) < 2 * num_sms && chunks >= 32 * 2 * ksplit)
        ksplit *= 2;
    return ksplit;
}

template <typename T, int TT>
void launch_tt(const void* x, const void* w, const void* bias, void* out, int64_t T_, int64_t N,
               int64_t K, int num_sms, cudaStream_t st) {
    if constexpr (TT > 1) {
        if (T_ < TT) return launch_tt<T, TT - 1>(x, w, bias, out, T_, N, K, num_sms, st);
    }
    const int ksplit = gemv_ksplit(N, K, num_sms);
    const int rows_per_block = kWarps / ksplit;
    unsigned grid = ceil_div(static_cast<size_t>(N), rows_per_block);
    launch_pdl(gemv_kernel<T, TT>, dim3(grid), dim3(kThreads), 0, st, "gemv_kernel",
               static_cast<const T*>(x), static_cast<const T*>(w), static_cast<const T*>(bias),
               static_cast<T*>(out), static_cast<int>(N), static_cast<int>(K), ksplit);
}

// ---- one-row GEMV with a fused prologue / epilogue (batch-1 decode) ----
// Prologue (what the block stages in shared memory as the input row x, K elements of T):
//   kPlain: x itself; kNorm: rmsnorm(residual) * ln, exactly as rmsnorm_kernel rounds it
//   (residual f32 or T); kSilu: silu(gate) * up of a [2K] gate_up row, as silu_mul_kernel.
// Epilogue: kStore: out[n] = T(dot + bias); kAddResidual: residual[n] += T(dot + bias) (the
//   rounding of linear() followed by add_rmsnorm's add).
// Block: 8 warps, rows [blockIdx.x * rpb, +rpb), warp w takes rows w, w + 8, ...; each lane
// streams chunks lane, lane + 32, ... of a row with kUnroll 16-byte loads in flight, pipelined
// across the warp's rows; the first batch is issued before pdl_wait().
enum { kPlain = 0, kNorm = 1, kSilu = 2 };
constexpr int kGemv1MaxK = 32768;  // the staged row: 64 KB of shared memory
enum { kStore = 0, kAddResidual = 1 };

struct Gemv1Args {
    const void* x;     // kPlain: T[K]; kNorm: residual (f32 or T)[K]; kSilu: T[2K]
    const void* ln;    // kNorm: norm weight [K] (type LN)
    const void* w;     // [N, K]
    const void* bias;  // [N] or null
    void* out;         // kStore: T[N]; kAddResidual: residual (f32 or T)[N]
    float eps;
    int N, K, rpb;
};

__device__ __forceinline__ uint4 ld_shared16(const uint4* p) {
    return *p;
}

template <typename T, typename R, typename LN, int PRO, int EPI>
__global__ void __launch_bounds__(kThreads) gemv1_kernel(Gemv1Args a) {
    extern __shared__ uint4 xs[];  // K / 8 chunks of T
    __shared__ float red[kWarps];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int nch = a.K / 8;               // 16-byte chunks per row
    const int nj = (nch + 31) / 32;        // chunks per lane per row (last ones predicated)
    const int bpr = (nj + kUnroll - 1) / kUnroll;  // load batches per row
    const int row0 = blockIdx.x * a.rpb + warp;
    const int row_end = min(a.N, static_cast<int>(blockIdx.x) * a.rpb + a.rpb);
    const int nrows = row0 < row_end ? (row_end - row0 + kWarps - 1) / kWarps : 0;
    const int total = nrows * bpr;
    const uint4* w = static_cast<const uint4*>(a.w);

    auto load_batch = [&](int b, uint4 (&r)[kUnroll]) {
        const int ri = b / bpr, j0 = (b % bpr) * kUnroll;
        const uint4* wr = w + static_cast<size_t>(row0 + ri * kWarps) * nch;
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
            const int c = lane + 32 * (j0 + u);
            r[u] = c < nch ? ld_nc_stream(wr + c) : make_uint4(0, 0, 0, 0);
        }
    };
    uint4 wv[kUnroll];
    if (total > 0) load_batch(0, wv);  // weights are constant: before the wait
    pdl_trigger();
    pdl_wait();

    // ---- prologue: the input row into shared memory ----
    if constexpr (PRO == kPlain) {
        const uint4* x = static_cast<const uint4*>(a.x);
        for (int c = threadIdx.x; c < nch; c += kThreads) xs[c] = x[c];
    } else if constexpr (PRO == kSilu) {
        const uint4* gu = static_cast<const uint4*>(a.x);
        for (int c = threadIdx.x; c < nch; c += kThreads) {
            float gf[8], uf[8];
            unpack8<T>(gu[c], gf);
            unpack8<T>(gu[nch + c], uf);
            uint4 o;
            T* oe = reinterpret_cast<T*>(&o);
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                const float g = gf[i], u = uf[i];
                const float sg = round_to<T>(g / (1.0f + expf(-g)));
                oe[i] = from_f<T>(sg * u);
            }
            xs[c] = o;
        }
    } else {  // kNorm
        const R* res = static_cast<const R*>(a.x);
        const LN* lw = static_cast<const LN*>(a.ln);
        float ss = 0.0f;
        for (int i = threadIdx.x; i < a.K; i += kThreads) {
            const float f = to_f(res[i]);
            ss += f * f;
        }
        for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
        if (lane == 0) red[warp] = ss;
        __syncthreads();
        float tot = 0.0f;
#pragma unroll
        for (int i = 0; i < kWarps; ++i) tot += red[i];
        const float inv = rsqrtf(tot / static_cast<float>(a.K) + a.eps);
        for (int c = threadIdx.x; c < nch; c += kThreads) {
            uint4 o;
            T* oe = reinterpret_cast<T*>(&o);
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                const float h = round_to<T>(to_f(res[c * 8 + i]) * inv);
                oe[i] = from_f<T>(to_f(lw[c * 8 + i]) * h);
            }
            xs[c] = o;
        }
    }
    __syncthreads();

    // ---- rows ----
    float acc = 0.0f;
    for (int b = 0; b < total; ++b) {
        uint4 nx[kUnroll];
        if (b + 1 < total) load_batch(b + 1, nx);
        const int j0 = (b % bpr) * kUnroll;
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
            const int c = lane + 32 * (j0 + u);
            if (c < nch) {
                float wf[8], xf[8];
                unpack8<T>(wv[u], wf);
                unpack8<T>(ld_shared16(xs + c), xf);
#pragma unroll
                for (int i = 0; i < 8; ++i) acc = fmaf(wf[i], xf[i], acc);
            }
        }
        if (b % bpr == bpr - 1) {  // row done
            for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
            if (lane == 0) {
                const int n = row0 + (b / bpr) * kWarps;
                float sum = acc;
                if (a.bias) sum += to_f(static_cast<const T*>(a.bias)[n]);
                const T v = from_f<T>(sum);
                if constexpr (EPI == kStore) {
                    static_cast<T*>(a.out)[n] = v;
                } else {
                    R* r = static_cast<R*>(a.out);
                    r[n] = from_f<R>(to_f(r[n]) + to_f(v));
                }
            }
            acc = 0.0f;
        }
        if (b + 1 < total) {
#pragma unroll
            for (int u = 0; u < kUnroll; ++u) wv[u] = nx[u];
        }
    }
}

template <typename T, typename R, typename LN, int PRO, int EPI>
void launch_gemv1_t(const Gemv1Args& a, int num_sms, cudaStream_t st) {
    const size_t smem = static_cast<size_t>(a.K) * sizeof(T);
    static bool attr_set = false;  // per instantiation
    if (!attr_set) {
        FS_CUDA(cudaFuncSetAttribute(gemv1_kernel<T, R, LN, PRO, EPI>,
                                     cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(kGemv1MaxK * sizeof(T))));
        attr_set = true;
    }
    Gemv1Args g = a;
    // about two blocks per SM or more, whole warps of rows per block
    g.rpb = kWarps * std::max(1, a.N / (kWarps * 2 * num_sms));
    const unsigned grid = static_cast<unsigned>((a.N + g.rpb - 1) / g.rpb);
    launch_pdl(gemv1_kernel<T, R, LN, PRO, EPI>, dim3(grid), dim3(kThreads), smem, st,
               "gemv1_kernel", g);
}

template <typename T>
void launch_gemv1_d(int pro, int epi, DType res_dt, DType ln_dt, const Gemv1Args& a, int num_sms,
                    cudaStream_t st) {
    const bool rf = res_dt == DType::F32;
    if (pro == kPlain && epi == kStore) return launch_gemv1_t<T, T, T, kPlain, kStore>(a, num_sms, st);
    if (pro == kPlain && epi == kAddResidual)
        return rf ? launch_gemv1_t<T, float, T, kPlain, kAddResidual>(a, num_sms, st)
                  : launch_gemv1_t<T, T, T, kPlain, kAddResidual>(a, num_sms, st);
    if (pro == kSilu && epi == kAddResidual)
        return rf ? launch_gemv1_t<T, float, T, kSilu, kAddResidual>(a, num_sms, st)
                  : launch_gemv1_t<T, T, T, kSilu, kAddResidual>(a, num_sms, st);
    if (pro == kNorm && epi == kStore) {
        if (ln_dt == DType::F32)
            return rf ? launch_gemv1_t<T, float, float, kNorm, kStore>(a, num_sms, st)
                      : launch_gemv1_t<T, T, float, kNorm, kStore>(a, num_sms, st);
        FS_CHECK(ln_dt == DType::BF16 || ln_dt == DType::F16, "gemv1: norm weight dtype {}",
                 dtype_name(ln_dt));
        if (ln_dt == DType::BF16)
            return rf ? launch_gemv1_t<T, float, __nv_bfloat16, kNorm, kStore>(a, num_sms, st)
                      : launch_gemv1_t<T, T, __nv_bfloat16, kNorm, kStore>(a, num_sms, st);
        return rf ? launch_gemv1_t<T, float, __half, kNorm, kStore>(a, num_sms, st)
                  : launch_gemv1_t<T, T, __half, kNorm, kStore>(a, num_sms, st);
    }
    fail("gemv1: unsupported prologue/epilogue {}/{}", pro, epi);
}

}  // namespace

template <typename T>
void launch_gated(const void* x, const void* w, const void* bias, void* out, int64_t N, int64_t K,
                  int num_sms, cudaStream_t st) {
    const int ksplit = gemv_ksplit(N, K, num_sms);
    const int rows_per_block = kWarps / ksplit;
    unsigned grid = ceil_div(static_cast<size_t>(N), rows_per_block);
    launch_pdl(gemv_kernel<T, 1, true>, dim3(grid), dim3(kThreads), 0, st, "gemv_gated_kernel",
               static_cast<const T*>(x), static_cast<const T*>(w), static_cast<const T*>(bias),
               static_cast<T*>(out), static_cast<int>(N), static_cast<int>(K), ksplit);
}

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

void launch_gemv_silu(DType dt, const void* x, const void* w, const void* bias, void* out,
                      int64_t I, int64_t K, int num_sms, cudaStream_t st) {
    FS_CHECK(gemv_supported(1, 2 * I, K), "gemv_silu: unsupported shape I={} K={}", I, K);
    if (dt == DType::BF16)
        launch_gated<__nv_bfloat16>(x, w, bias, out, I, K, num_sms, st);
    else if (dt == DType::F16)
        launch_gated<__half>(x, w, bias, out, I, K, num_sms, st);
    else
        fail("gemv_silu: dtype {} not supported", dtype_name(dt));
}

}  // namespace farsight::cuda

namespace farsight::cuda {

bool gemv1_supported(int64_t N, int64_t K) {
    return K % 8 == 0 && K > 0 && K <= kGemv1MaxK && N > 0 && N < (1ll << 30);
}

void launch_gemv1(DType dt, Gemv1Op op, DType res_dt, DType ln_dt, const void* x, const void* ln,
                  float eps, const void* w, const void* bias, void* out, int64_t N, int64_t K,
                  int num_sms, cudaStream_t st) {
    FS_CHECK(gemv1_supported(N, K), "gemv1: unsupported shape N={} K={}", N, K);
    Gemv1Args a{x, ln, w, bias, out, eps, static_cast<int>(N), static_cast<int>(K), 0};
    int pro = kPlain, epi = kStore;
    switch (op) {
        case Gemv1Op::Plain: break;
        case Gemv1Op::NormIn: pro = kNorm; break;
        case Gemv1Op::AddToResidual: epi = kAddResidual; break;
        case Gemv1Op::SiluInAddToResidual: pro = kSilu; epi = kAddResidual; break;
    }
    if (dt == DType::BF16)
        launch_gemv1_d<__nv_bfloat16>(pro, epi, res_dt, ln_dt, a, num_sms, st);
    else if (dt == DType::F16)
        launch_gemv1_d<__half>(pro, epi, res_dt, ln_dt, a, num_sms, st);
    else
        fail("gemv1: dtype {} not supported", dtype_name(dt));
}

}  // namespace farsight::cuda

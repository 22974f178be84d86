// Tensor-core skinny GEMM for batched decode (T = 1..64 rows, meant for 17..64):
// out[T,N] = x[T,K] @ W[N,K]^T (+ bias), fp32 accumulation, deterministic.
//
// Memory-bound on W. mma.sync m16n8k16 with the WEIGHTS as the A operand (16 output features
// per m-tile) and the tokens as n. A dot product does not depend on the order of k, so k is
// permuted inside every 32-element block: thread (g = lane / 4, t = lane % 4) loads elements
// 8t..8t+7 of rows g and g+8 with one 16-byte non-caching load each, and that chunk is its
// A fragment for two k16 steps: mma #0 takes elements 8t..8t+3 as logical k {2t, 2t+1, 2t+8,
// 2t+9}, mma #1 takes 8t+4..8t+7 likewise. The B fragment (x, col-major k x n) then needs
// x[token g][8t..8t+7] of the same 32-block: one 16-byte chunk per thread per n8 group, read
// through L1 (__ldg): the 8 warps of a block stream the same k-range of x at the same time, so
// L1 serves most of it.
//
// Block: 8 warps, 128 output features (one m16 tile per warp), one K-range. Split-K across a
// thread-block cluster of ks blocks (blockIdx.y): each block leaves its fp32 partial tile in
// shared memory, and after a cluster barrier every block sums a slice of the tile over the ks
// partials in rank order through distributed shared memory (no atomics: run-to-run identical).
// Weights: U k32-blocks of loads in flight per thread, the next batch issued before the current
// one is multiplied; the first batch is issued before pdl_wait() (weights are constant).
#include <cooperative_groups.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <type_traits>

#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/kernels.cuh"

namespace farsight::cuda {
namespace {

namespace cg = cooperative_groups;

constexpr int kSkThreads = 256;
constexpr int kSkWarps = kSkThreads / 32;
constexpr int kSkRows = kSkWarps * 16;  // output features per block
constexpr int kSkMaxT = 64;
constexpr int kSkMaxSplit = 8;  // portable cluster size

std::atomic<int64_t> g_skinny_launches{0};
std::atomic<bool> g_skinny_pdl{true};

template <typename T>
__device__ __forceinline__ void mma16816(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                         uint32_t a3, uint32_t b0, uint32_t b1) {
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
            "{%8,%9}, {%0,%1,%2,%3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    } else {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
            "{%8,%9}, {%0,%1,%2,%3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    }
}

// NT: n8 groups (tokens padded to 8 * NT), U: k32-blocks per load batch, OT: output type (T,
// or float for logits).
template <typename T, typename OT, int NT, int U>
__global__ void __launch_bounds__(kSkThreads, 2)
    skinny_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                  OT* __restrict__ out, int Tn, int N, int K, int kbs) {
    constexpr int TP = 8 * NT + 1;  // partial-tile row pitch (floats), odd: fewer bank conflicts
    __shared__ float part[kSkRows * TP];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int g = lane / 4, tq = lane % 4;
    const int m0 = blockIdx.x * kSkRows;
    const int r0 = m0 + warp * 16 + g, r1 = r0 + 8;
    const int nkb = (K + 31) / 32;
    const int kb0 = blockIdx.y * kbs;
    const int kb1 = min(nkb, kb0 + kbs);
    const int nb = max(0, kb1 - kb0);
    const int nbatch = (nb + U - 1) / U;
    const T* w0 = w + static_cast<size_t>(r0 < N ? r0 : 0) * K + 8 * tq;
    const T* w1 = w + static_cast<size_t>(r1 < N ? r1 : 0) * K + 8 * tq;
    const bool v0 = r0 < N, v1 = r1 < N;

    auto load_batch = [&](int bi, uint4 (&r)[U][2]) {
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int kb = kb0 + bi * U + u;
            const int c = 32 * kb;  // element offset of the block (the lane's 8t is in w0/w1)
            const bool ok = kb < kb1 && c + 8 * tq < K;
            r[u][0] = ok && v0 ? ld_nc_stream(w0 + c) : make_uint4(0, 0, 0, 0);
            r[u][1] = ok && v1 ? ld_nc_stream(w1 + c) : make_uint4(0, 0, 0, 0);
        }
    };

    uint4 wv[U][2];
    if (nbatch > 0) load_batch(0, wv);
    pdl_trigger();
    pdl_wait();  // x is the previous kernel's output

    float acc[NT][4];
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[n][i] = 0.0f;

    // x rows of this lane (token 8n + g); rows past Tn read nothing
    const T* xl = x + 8 * tq;
    for (int bi = 0; bi < nbatch; ++bi) {
        uint4 nx[U][2];
        const bool more = bi + 1 < nbatch;
        if (more) load_batch(bi + 1, nx);
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int kb = kb0 + bi * U + u;
            if (kb < kb1) {  // warp-uniform
                const int c = 32 * kb;
                const bool kok = c + 8 * tq < K;
                uint4 xv[NT];
#pragma unroll
                for (int n = 0; n < NT; ++n) {
                    const int tok = 8 * n + g;
                    xv[n] = kok && tok < Tn
                                ? __ldg(reinterpret_cast<const uint4*>(
                                      xl + static_cast<size_t>(tok) * K + c))
                                : make_uint4(0, 0, 0, 0);
                }
                const uint4 a = wv[u][0], b = wv[u][1];
#pragma unroll
                for (int n = 0; n < NT; ++n) {
                    mma16816<T>(acc[n], a.x, b.x, a.y, b.y, xv[n].x, xv[n].y);
                    mma16816<T>(acc[n], a.z, b.z, a.w, b.w, xv[n].z, xv[n].w);
                }
            }
        }
        if (more) {
#pragma unroll
            for (int u = 0; u < U; ++u) {
                wv[u][0] = nx[u][0];
                wv[u][1] = nx[u][1];
            }
        }
    }

    // partial tile: C fragment rows g / g+8 (features), columns 2t, 2t+1 (tokens)
    {
        const int lr = warp * 16 + g;
#pragma unroll
        for (int n = 0; n < NT; ++n) {
            const int tok = 8 * n + 2 * tq;
            part[lr * TP + tok] = acc[n][0];
            part[lr * TP + tok + 1] = acc[n][1];
            part[(lr + 8) * TP + tok] = acc[n][2];
            part[(lr + 8) * TP + tok + 1] = acc[n][3];
        }
    }
    const int total = kSkRows * Tn;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    cg::cluster_group cluster = cg::this_cluster();
    cluster.sync();  // every block's partial tile is complete and visible to the cluster
    const int ks = static_cast<int>(cluster.num_blocks());
    const int rank = static_cast<int>(cluster.block_rank());
    for (int idx = rank * kSkThreads + threadIdx.x; idx < total; idx += ks * kSkThreads) {
        const int t = idx / kSkRows, r = idx % kSkRows;
        const int n = m0 + r;
        if (n >= N) continue;
        float s = 0.0f;
        for (int q = 0; q < ks; ++q) s += cluster.map_shared_rank(part, q)[r * TP + t];
        if (bias) s += to_f(bias[n]);
        out[static_cast<size_t>(t) * N + n] = from_f<OT>(s);
    }
    cluster.sync();  // no block leaves while another still reads its shared memory
#else
    // before sm_90 (no clusters): launched with one block per K-range (gridDim.y == 1)
    __syncthreads();
    for (int idx = threadIdx.x; idx < total; idx += kSkThreads) {
        const int t = idx / kSkRows, r = idx % kSkRows;
        const int n = m0 + r;
        if (n >= N) continue;
        float s = part[r * TP + t];
        if (bias) s += to_f(bias[n]);
        out[static_cast<size_t>(t) * N + n] = from_f<OT>(s);
    }
#endif
}

// Thread-block clusters (compute capability 9.0+) on the current device, probed once.
bool has_clusters() {
    static const bool yes = [] {
        int dev = 0, major = 0;
        if (cudaGetDevice(&dev) != cudaSuccess ||
            cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
            (void)cudaGetLastError();
            return false;
        }
        return major >= 9;
    }();
    return yes;
}

// Clusters of ks blocks that can be resident at once (cudaOccupancyMaxActiveClusters: a cluster
// must fit in one GPC, so this can be less than SMs * blocks per SM / ks), per kernel and ks,
// queried once.
template <typename T, typename OT, int NT, int U>
int skinny_cluster_cap(int ks, int num_sms) {
    static int cap[4] = {0, 0, 0, 0};  // ks = 1, 2, 4, 8 (per instantiation)
    const int i = ks == 1 ? 0 : ks == 2 ? 1 : ks == 4 ? 2 : 3;
    if (cap[i] == 0) {
        cudaLaunchConfig_t cfg{};
        cfg.gridDim = dim3(1, static_cast<unsigned>(ks), 1);
        cfg.blockDim = dim3(kSkThreads);
        cudaLaunchAttribute attr[1];
        attr[0].id = cudaLaunchAttributeClusterDimension;
        attr[0].val.clusterDim.x = 1;
        attr[0].val.clusterDim.y = static_cast<unsigned>(ks);
        attr[0].val.clusterDim.z = 1;
        cfg.attrs = attr;
        cfg.numAttrs = 1;
        int n = 0;
        if (cudaOccupancyMaxActiveClusters(&n, skinny_kernel<T, OT, NT, U>, &cfg) != cudaSuccess ||
            n <= 0) {
            (void)cudaGetLastError();
            n = std::max(1, 2 * num_sms / ks);  // two blocks per SM
        }
        cap[i] = n;
    }
    return cap[i];
}

// Blocks per cluster (K split ks ways, ks = 1, 2, 4, 8, at least 8 k32-blocks per block): the
// one of the least modelled time, fewest on ties. Memory-bound model: the blocks resident at
// once share the bandwidth, which needs about two blocks per SM (bytes in flight) to saturate;
// the grid runs in ceil(clusters / resident clusters) waves. FARSIGHT_SKINNY_SPLIT=1/2/4/8
// forces ks.
int skinny_split(int (*cluster_cap)(int ks, int num_sms), int64_t N, int64_t K, int num_sms) {
    const int64_t mb = (N + kSkRows - 1) / kSkRows;
    const int64_t nkb = (K + 31) / 32;
    if (!has_clusters()) return 1;
    if (const char* e = std::getenv("FARSIGHT_SKINNY_SPLIT")) {  // tests and tuning
        const int v = std::atoi(e);
        if (v == 1 || v == 2 || v == 4 || v == 8) return v;
    }
    const double sat = 1.9 * num_sms;
    int best_ks = 1;
    double best = 1e300;
    for (int ks = 1; ks <= kSkMaxSplit; ks *= 2) {
        if (ks > 1 && nkb < 8 * ks) break;
        const int64_t cap = cluster_cap(ks, num_sms);
        const int64_t waves = (mb + cap - 1) / cap;
        const int64_t resident = std::min(mb, cap) * ks;  // blocks
        const double t = static_cast<double>(waves) * std::max<double>(resident, sat) /
                         static_cast<double>(mb * ks);
        if (t < best * (1.0 - 1e-9)) {
            best = t;
            best_ks = ks;
        }
    }
    return best_ks;
}

template <typename T, typename OT, int NT>
void launch_nt(const void* x, const void* w, const void* bias, void* out, int64_t T_, int64_t N,
               int64_t K, int num_sms, cudaStream_t st) {
    if constexpr (NT > 1) {
        if (T_ <= 8 * (NT - 1))
            return launch_nt<T, OT, NT - 1>(x, w, bias, out, T_, N, K, num_sms, st);
    }
    constexpr int U = NT <= 4 ? 4 : 2;
    const int ks = skinny_split(skinny_cluster_cap<T, OT, NT, U>, N, K, num_sms);
    const int nkb = static_cast<int>((K + 31) / 32);
    const int kbs = (nkb + ks - 1) / ks;
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = dim3(ceil_div(static_cast<size_t>(N), kSkRows), static_cast<unsigned>(ks), 1);
    cfg.blockDim = dim3(kSkThreads);
    cfg.dynamicSmemBytes = 0;
    cfg.stream = st;
    cudaLaunchAttribute attr[2];
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = 1;
    attr[0].val.clusterDim.y = static_cast<unsigned>(ks);
    attr[0].val.clusterDim.z = 1;
    attr[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[1].val.programmaticStreamSerializationAllowed = 1;
    const bool pdl = pdl_enabled() && g_skinny_pdl.load(std::memory_order_relaxed);
    const bool cl = has_clusters();  // else ks == 1 and no cluster attribute
    cfg.attrs = cl ? attr : attr + 1;
    cfg.numAttrs = (cl ? 1 : 0) + (pdl ? 1 : 0);
    auto launch = [&] {
        return cudaLaunchKernelEx(&cfg, skinny_kernel<T, OT, NT, U>, static_cast<const T*>(x),
                                  static_cast<const T*>(w), static_cast<const T*>(bias),
                                  static_cast<OT*>(out), static_cast<int>(T_), static_cast<int>(N),
                                  static_cast<int>(K), kbs);
    };
    cudaError_t e = launch();
    if (e != cudaSuccess && cl && pdl) {
        // should a cluster launch refuse programmatic dependent launch: without it from now on
        (void)cudaGetLastError();
        g_skinny_pdl.store(false, std::memory_order_relaxed);
        cfg.numAttrs = 1;
        e = launch();
    }
    if (e != cudaSuccess) cuda_fail(e, "skinny_kernel", __FILE__, __LINE__);
    g_skinny_launches.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace

bool skinny_supported(int64_t T, int64_t N, int64_t K) {
    return T >= 1 && T <= kSkMaxT && K % 8 == 0 && K > 0 && N > 0 && N < (1ll << 31) &&
           K < (1ll << 30);
}

int64_t skinny_launches() {
    return g_skinny_launches.load(std::memory_order_relaxed);
}

void launch_skinny(DType dt, const void* x, const void* w, const void* bias, void* out, int64_t T,
                   int64_t N, int64_t K, int num_sms, cudaStream_t st, bool f32_out) {
    FS_CHECK(skinny_supported(T, N, K), "skinny: unsupported shape T={} N={} K={}", T, N, K);
    if (dt == DType::BF16 && f32_out)
        launch_nt<__nv_bfloat16, float, 8>(x, w, bias, out, T, N, K, num_sms, st);
    else if (dt == DType::BF16)
        launch_nt<__nv_bfloat16, __nv_bfloat16, 8>(x, w, bias, out, T, N, K, num_sms, st);
    else if (dt == DType::F16 && f32_out)
        launch_nt<__half, float, 8>(x, w, bias, out, T, N, K, num_sms, st);
    else if (dt == DType::F16)
        launch_nt<__half, __half, 8>(x, w, bias, out, T, N, K, num_sms, st);
    else
        fail("skinny: dtype {} not supported", dtype_name(dt));
}

}  // namespace farsight::cuda

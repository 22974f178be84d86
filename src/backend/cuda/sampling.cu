// Sampling of the step's logit rows on the device (Backend::sample_rows): one block per row,
// the algorithm of backend/sampling.h (the CPU reference is sample_rows_reference). Weights are
// 2^40-scaled integers, so every sum and every prefix decision is exact and deterministic.
// Passes over the row (L2-resident: the lm_head just wrote it): greedy 1 (+1 for the logprob);
// stochastic 2 + 4 per radix select (top-k by count, top-p by weight) + 2 for the draw (the
// second only over the chunk of the warp that holds the draw).
#include <climits>

#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/kernels.cuh"
#include "backend/sampling.h"

namespace farsight::cuda {

namespace {

constexpr int kSampleThreads = 1024;
constexpr int kSampleWarps = kSampleThreads / 32;
constexpr int kLoads = 4;  // elements each thread loads before using them (radix passes)
constexpr unsigned kFull = 0xffffffffu;
using u64 = unsigned long long;

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
    return v;
}

// The warp's maximum and the lowest id holding it (every lane gets both).
__device__ __forceinline__ void warp_argmax(float& best, int& bi) {
    for (int o = 16; o > 0; o >>= 1) {
        const float ob = __shfl_xor_sync(kFull, best, o);
        const int oi = __shfl_xor_sync(kFull, bi, o);
        if (ob > best || (ob == best && oi < bi)) {
            best = ob;
            bi = oi;
        }
    }
}

// Sum over the block, returned to every thread (fixed order: deterministic).
template <typename T>
__device__ T block_sum(T v, T* red) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    v = warp_sum(v);
    __syncthreads();  // red may still be read by a previous call
    if (lane == 0) red[w] = v;
    __syncthreads();
    T r = lane < kSampleWarps ? red[lane] : T(0);
    return warp_sum(r);
}

// Exclusive prefix sum over threads in order; *total gets the block's sum.
template <typename T>
__device__ T block_exclusive_scan(T v, T* red, T* total) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    T inc = v;
    for (int o = 1; o < 32; o <<= 1) {
        const T n = __shfl_up_sync(kFull, inc, o);
        if (lane >= o) inc += n;
    }
    __syncthreads();
    if (lane == 31) red[w] = inc;
    __syncthreads();
    const T ws = lane < kSampleWarps ? red[lane] : T(0);
    T winc = ws;
    for (int o = 1; o < 32; o <<= 1) {
        const T n = __shfl_up_sync(kFull, winc, o);
        if (lane >= o) winc += n;
    }
    const T before_warp = __shfl_sync(kFull, winc - ws, w);
    *total = __shfl_sync(kFull, winc, kSampleWarps - 1);
    return before_warp + inc - v;
}

struct SampleShared {
    u64 hist[256];
    u64 red64[kSampleWarps];
    unsigned red32[kSampleWarps];
    float redf[kSampleWarps];
    int redi[kSampleWarps];
    int bin;
    u64 above;
    int id;
};

// Warp 0: the bin (scanning 255 down to 0) where the running sum reaches `need`, and the sum
// of the bins above it.
__device__ void select_bin(SampleShared& sh, u64 need) {
    const int lane = threadIdx.x & 31;
    u64 s = 0;
    for (int k = 0; k < 8; ++k) s += sh.hist[255 - 8 * lane - k];
    u64 inc = s;
    for (int o = 1; o < 32; o <<= 1) {
        const u64 n = __shfl_up_sync(kFull, inc, o);
        if (lane >= o) inc += n;
    }
    const unsigned ballot = __ballot_sync(kFull, inc >= need);
    const int L = ballot ? __ffs(ballot) - 1 : 31;
    if (lane == L) {
        u64 cum = inc - s;
        int b = 255 - 8 * L - 7;
        for (int k = 0; k < 8; ++k) {
            const int bin = 255 - 8 * L - k;
            if (cum + sh.hist[bin] >= need) {
                b = bin;
                break;
            }
            cum += sh.hist[bin];
        }
        sh.bin = b;
        sh.above = cum;
    }
}

// The key t (8 bits per pass, most significant first) where the running count (kMass: weight)
// of the keys in descending order reaches `need`; *left = need minus the count/weight of the
// keys above t (1 <= *left <= count/weight of the keys equal to t).
// The histogram adds are aggregated per warp first: logits share a handful of exponent bins,
// and one shared-memory atomic per element serialised the first pass on those few addresses
// (H200: 4.7 ms for 32 rows of 128256 at T 0.8 top-k 50 top-p 0.9). A loop of warp sums over
// every distinct bin (1.7-1.8 ms) was as slow in the later passes, where a warp's elements fall
// in many bins; now __match_any_sync groups the lanes by bin: counts add the group size once per
// bin, weights are warp-summed only for groups of 4 or more lanes. Integer sums: the result
// does not depend on the order.
template <bool kMass>
__device__ uint32_t radix_select(const float* __restrict__ x, int V, float M, float inv_t, u64 need,
                                 SampleShared& sh, u64* left) {
    const int lane = threadIdx.x & 31;
    uint32_t prefix = 0, mask = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int b = threadIdx.x; b < 256; b += blockDim.x) sh.hist[b] = 0;
        __syncthreads();
        // every lane of a warp runs the same number of rounds (the shuffles need them all);
        // kLoads elements per lane are loaded before any is used (loads in flight: the row
        // comes from L2 and one block per row has few warps to hide the latency)
        const int step = static_cast<int>(blockDim.x) * kLoads;
        for (int i0 = threadIdx.x - lane; i0 < V; i0 += step) {
            float v[kLoads];
#pragma unroll
            for (int k = 0; k < kLoads; ++k) {
                const int i = i0 + k * static_cast<int>(blockDim.x) + lane;
                v[k] = i < V ? x[i] : -INFINITY;
            }
#pragma unroll
            for (int k = 0; k < kLoads; ++k) {
                const int i = i0 + k * static_cast<int>(blockDim.x) + lane;
                u64 w = 0;
                uint32_t bin = 0;
                const uint32_t key = sampling::order_key(v[k]);
                if (i < V && (key & mask) == prefix) {
                    w = kMass ? sampling::weight(v[k], M, inv_t) : 1ull;
                    bin = (key >> shift) & 255u;
                }
                const unsigned active = __ballot_sync(kFull, w != 0);
                unsigned peers = 0;  // the active lanes with this lane's bin
                if (w != 0) peers = __match_any_sync(active, bin);
                const bool leader = w != 0 && lane == __ffs(peers) - 1;
                if constexpr (!kMass) {  // counts: the group's size, one add per distinct bin
                    if (leader) atomicAdd(&sh.hist[bin], static_cast<u64>(__popc(peers)));
                } else {
                    // groups of 4 or more lanes: one warp-summed add each (the concentrated
                    // first passes); smaller groups add their own weights (diverse bins)
                    const bool big = __popc(peers) >= 4;
                    if (w != 0 && !big) atomicAdd(&sh.hist[bin], w);
                    unsigned todo = __ballot_sync(kFull, leader && big);
                    while (todo) {
                        const int l = __ffs(todo) - 1;
                        const uint32_t lb = __shfl_sync(kFull, bin, l);
                        const u64 sum = warp_sum(w != 0 && bin == lb ? w : 0ull);
                        if (lane == l) atomicAdd(&sh.hist[lb], sum);
                        todo &= todo - 1;
                    }
                }
            }
        }
        __syncthreads();
        if (threadIdx.x < 32) select_bin(sh, need);
        __syncthreads();
        prefix |= static_cast<uint32_t>(sh.bin) << shift;
        mask |= 0xffu << shift;
        need -= sh.above;
    }
    *left = need;
    return prefix;
}

__global__ void __launch_bounds__(kSampleThreads)
    sample_rows_kernel(const float* __restrict__ logits, int V,
                       const RowSampling* __restrict__ params, int32_t* __restrict__ ids,
                       float* __restrict__ logprobs) {
    __shared__ SampleShared sh;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const float* __restrict__ x = logits + static_cast<size_t>(blockIdx.x) * static_cast<size_t>(V);
    const RowSampling p = params[blockIdx.x];

    // max and the lowest id holding it (NaN never wins)
    float best = -INFINITY;
    int bi = INT_MAX;
#pragma unroll 4
    for (int i = tid; i < V; i += blockDim.x) {
        const float v = x[i];
        if (v > best || (v == best && bi == INT_MAX)) {
            best = v;
            bi = i;
        }
    }
    warp_argmax(best, bi);
    if (lane == 0) {
        sh.redf[warp] = best;
        sh.redi[warp] = bi;
    }
    __syncthreads();
    best = lane < kSampleWarps ? sh.redf[lane] : -INFINITY;
    bi = lane < kSampleWarps ? sh.redi[lane] : INT_MAX;
    warp_argmax(best, bi);
    const float M = best;
    int id = bi == INT_MAX ? 0 : bi;

    float s1 = 1.0f;
    if (logprobs) {
        float s = 0.0f;
#pragma unroll 4
        for (int i = tid; i < V; i += blockDim.x) s += expf(x[i] - M);
        s1 = block_sum(s, sh.redf);
    }

    if (!p.greedy()) {
        const float inv_t = 1.0f / p.temperature;
        bool all = true;
        uint32_t t = 0;
        u64 j = 0, K = 0;
        if (p.top_k > 0 && p.top_k < V) {
            u64 left = 0;
            t = radix_select<false>(x, V, M, inv_t, static_cast<u64>(p.top_k), sh, &left);
            j = left;
            all = false;
            u64 m = 0;
#pragma unroll 4
            for (int i = tid; i < V; i += blockDim.x) {
                const float v = x[i];
                if (sampling::order_key(v) > t) m += sampling::weight(v, M, inv_t);
            }
            K = block_sum(m, sh.red64) + j * sampling::weight(sampling::key_value(t), M, inv_t);
        } else {
            u64 m = 0;
#pragma unroll 4
            for (int i = tid; i < V; i += blockDim.x) m += sampling::weight(x[i], M, inv_t);
            K = block_sum(m, sh.red64);
        }
        if (p.top_p < 1.0f) {
            u64 target = static_cast<u64>(static_cast<double>(p.top_p) * static_cast<double>(K));
            if (target == 0) target = 1;
            u64 left = 0;
            const uint32_t tp = radix_select<true>(x, V, M, inv_t, target, sh, &left);
            const u64 wt = sampling::weight(sampling::key_value(tp), M, inv_t);
            const u64 jp = wt ? (left + wt - 1) / wt : 1;
            if (all || tp > t || (tp == t && jp < j)) {
                t = tp;
                j = jp;
                all = false;
            }
        }
        // the draw: kept weights summed in id order. Warp w owns the ids [w * wchunk,
        // (w + 1) * wchunk) and reads them 32 consecutive ids at a time (coalesced; lane order is
        // id order inside a group); warps are in id order, so block scans over one value per
        // warp give each warp what comes before it.
        const int wchunk = (V + kSampleWarps * 32 - 1) / (kSampleWarps * 32) * 32;
        const int wlo = min(V, warp * wchunk), whi = min(V, wlo + wchunk);
        const u64 wt = all ? 0ull : sampling::weight(sampling::key_value(t), M, inv_t);
        unsigned ties = 0;
        u64 gt = 0;
#pragma unroll 4
        for (int i = wlo + lane; i < whi; i += 32) {
            const float v = x[i];
            const uint32_t key = sampling::order_key(v);
            if (all || key > t)
                gt += sampling::weight(v, M, inv_t);
            else if (key == t)
                ++ties;
        }
        ties = warp_sum(ties);
        gt = warp_sum(gt);
        unsigned tie_total = 0;
        const unsigned tie_before = __shfl_sync(
            kFull, block_exclusive_scan(lane == 0 ? ties : 0u, sh.red32, &tie_total), 0);
        const u64 take =
            (!all && j > tie_before) ? min(static_cast<u64>(ties), j - tie_before) : 0ull;
        const u64 mine = gt + take * wt;
        u64 F = 0;
        const u64 before =
            __shfl_sync(kFull, block_exclusive_scan(lane == 0 ? mine : 0ull, sh.red64, &F), 0);
        const u64 r = sampling::mulhi64(sampling::draw_bits(p.seed, p.counter), F);
        if (tid == 0) sh.id = -1;
        __syncthreads();
        if (mine > 0 && before <= r && r < before + mine) {  // the same for every lane of the warp
            u64 cum = before;
            unsigned rank = tie_before;
            for (int i0 = wlo; i0 < whi; i0 += 32) {
                const int i = i0 + lane;
                const bool in = i < whi;
                const float v = in ? x[i] : 0.0f;
                const uint32_t key = sampling::order_key(v);
                const bool above = in && (all || key > t);
                const bool tie = in && !all && key == t;
                const unsigned tb = __ballot_sync(kFull, tie);
                const unsigned my_rank = rank + __popc(tb & ((1u << lane) - 1u));
                const bool kept = above || (tie && my_rank < j);
                u64 inc = kept ? sampling::weight(v, M, inv_t) : 0ull;
                for (int o = 1; o < 32; o <<= 1) {
                    const u64 n = __shfl_up_sync(kFull, inc, o);
                    if (lane >= o) inc += n;
                }
                const u64 total = __shfl_sync(kFull, inc, 31);
                if (cum + total > r) {
                    // the first id where the running kept weight exceeds r
                    const unsigned hit = __ballot_sync(kFull, cum + inc > r);
                    if (lane == 0) sh.id = i0 + __ffs(hit) - 1;
                    break;
                }
                cum += total;
                rank += static_cast<unsigned>(__popc(tb));
            }
        }
        __syncthreads();
        if (sh.id >= 0) id = sh.id;
    }
    if (tid == 0) {
        ids[blockIdx.x] = id;
        if (logprobs) logprobs[blockIdx.x] = x[id] - M - logf(s1);
    }
}

}  // namespace

void launch_sample_rows(const float* logits, int64_t rows, int64_t vocab, const RowSampling* params,
                        int32_t* ids, float* logprobs, cudaStream_t st) {
    if (rows <= 0) return;
    sample_rows_kernel<<<static_cast<unsigned>(rows), kSampleThreads, 0, st>>>(
        logits, static_cast<int>(vocab), params, ids, logprobs);
    FS_CUDA_LAUNCH("sample_rows_kernel");
}

}  // namespace farsight::cuda

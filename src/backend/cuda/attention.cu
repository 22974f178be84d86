// Attention over the paged KV cache.
//  * split-K flash-decoding: one block per (query token, kv head, group of up to 8 q heads,
//    key partition); partial softmax states are merged by the last block of a (token, kv head)
//    to finish (head_dim 64/128) or by a second kernel (other head dims). Used for q_len == 1
//    (decode) and short chunks; correct for any batch (each token is its own query). The
//    launch fixes only the number of partitions; each block derives its key range from the
//    device-side sequence lengths (so a recorded CUDA graph stays valid as contexts grow).
//    head_dim 64/128: decode_kernel (16-byte loads, D/8 lanes per key row, all q heads of a
//    KV group per block, several K/V rows in flight per lane); other head dims: splitk_kernel.
//  * prefill: FlashAttention-2 style tiles of 64 queries x 64 keys of one head on tensor cores
//    (mma.sync m16n8k16, fp32 accumulate, online softmax in fp32), K/V gathered from the paged
//    cache, causal + sliding window, variable-length batches with n_past (chunked prefill).
#include <algorithm>
#include <atomic>
#include <cfloat>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>

#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/kernels.cuh"

namespace farsight::cuda {
namespace {

constexpr int kGMax = 8;         // q heads per split-K block
constexpr int kSkWarps = 4;      // warps per split-K block
constexpr int kMaxSplits = 128;  // most partitions per (token, kv head)

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

struct TokenRange {
    int32_t seq, p, lo, hi;  // query position p; visible keys [lo, hi)
};
__device__ __forceinline__ TokenRange token_range(const DevMeta& m, int32_t t, int64_t window) {
    TokenRange r;
    r.seq = m.token_seq[t];
    const SeqSlice& s = m.seqs[r.seq];
    r.p = s.n_past + (t - s.q_start);
    r.hi = r.p + 1;
    r.lo = window > 0 ? max(0, r.hi - static_cast<int32_t>(window)) : 0;
    return r;
}

// Fewest keys per decode partition: 16 (H200 llama2-7b batch 1 ctx 128: 84.4 -> 85.5% of
// roofline from 64 to 32 keys in session 4, 85.3-85.7 -> 86.1-86.2% from 32 to 16 in session 5;
// ctx 32K unchanged: the partition count is then set by occupancy), or FARSIGHT_DECODE_MIN_PART
// (16..1024, a multiple of 16) for measurements.
int decode_min_partition() {
    static const int v = [] {
        const char* e = std::getenv("FARSIGHT_DECODE_MIN_PART");
        const int n = e ? std::atoi(e) : 0;
        return n >= 16 && n <= 1024 && n % 16 == 0 ? n : 16;
    }();
    return v;
}

// Keys per partition when n visible keys are cut into at most `splits` partitions.
__device__ __forceinline__ int32_t split_part(int32_t n, int64_t splits, int32_t min_part) {
    int32_t p = static_cast<int32_t>((n + splits - 1) / splits);
    p = (p + 15) / 16 * 16;
    return p > min_part ? p : min_part;
}

__device__ __forceinline__ size_t kv_row(const DevMeta& m, const SeqSlice& s, int32_t i, int64_t bs,
                                         int64_t KVH, int64_t kvh) {
    int32_t blk = m.block_tables[s.block_table_offset + i / bs];
    return ((static_cast<size_t>(blk) * bs + i % bs) * KVH + kvh);
}

// This lane's DPL consecutive elements [lane*DPL, lane*DPL + DPL) of a row of D (zeros past D);
// one vector load when the row is exactly 32*DPL long.
template <typename T, int DPL>
__device__ __forceinline__ void load_lane(const T* row, int lane, int64_t D, float (&out)[DPL]) {
    if (D == 32 * DPL && DPL >= 2) {
        constexpr int BYTES = DPL * static_cast<int>(sizeof(T));
        const char* p = reinterpret_cast<const char*>(row + lane * DPL);
        alignas(16) T tmp[DPL];
        if constexpr (BYTES == 16) {
            *reinterpret_cast<uint4*>(tmp) = *reinterpret_cast<const uint4*>(p);
        } else if constexpr (BYTES == 8) {
            *reinterpret_cast<uint2*>(tmp) = *reinterpret_cast<const uint2*>(p);
        } else if constexpr (BYTES == 4) {
            *reinterpret_cast<uint32_t*>(tmp) = *reinterpret_cast<const uint32_t*>(p);
        } else {
#pragma unroll
            for (int e = 0; e < DPL; ++e) tmp[e] = row[lane * DPL + e];
        }
#pragma unroll
        for (int e = 0; e < DPL; ++e) out[e] = to_f(tmp[e]);
    } else {
#pragma unroll
        for (int e = 0; e < DPL; ++e) {
            int64_t d = lane * DPL + e;
            out[e] = d < D ? to_f(row[d]) : 0.0f;
        }
    }
}

// grid (splits, KVH * qgroups, n_tokens), kSkWarps*32 threads. DPL: head dims per lane.
template <typename T, int DPL>
__global__ void __launch_bounds__(kSkWarps * 32)
    splitk_kernel(AttnLaunch a, DevMeta m, int64_t splits, float* ml, float* accw) {
    pdl_trigger();
    pdl_wait();
    constexpr int DMAX = DPL * 32;
    __shared__ float q_s[kGMax][DMAX];
    __shared__ float p_s[kSkWarps][kGMax][32];
    __shared__ float acc_s[kSkWarps][kGMax][DMAX];
    __shared__ float m_s[kSkWarps][kGMax], l_s[kSkWarps][kGMax];

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t D = a.D, G = a.H / a.KVH;
    const int64_t qgroups = (G + kGMax - 1) / kGMax;
    const int64_t kvh = blockIdx.y / qgroups;
    const int64_t g0 = (blockIdx.y % qgroups) * kGMax;
    const int ng = static_cast<int>((G - g0 < kGMax ? G - g0 : int64_t(kGMax)));
    const int64_t tok_idx = blockIdx.z;
    const int32_t t = m.decode_tokens[tok_idx];
    const int64_t split = blockIdx.x;
    const TokenRange tr = token_range(m, t, a.window);
    const SeqSlice& seq = m.seqs[tr.seq];
    const int32_t partition = split_part(tr.hi - tr.lo, splits, a.min_part);
    const int32_t lo = tr.lo + static_cast<int32_t>(split) * partition;
    const int32_t hi = min(tr.hi, lo + partition);

    const T* qkv = static_cast<const T*>(a.qkv);
    const T* kp = static_cast<const T*>(a.k_pool);
    const T* vp = static_cast<const T*>(a.v_pool);

    for (int idx = threadIdx.x; idx < kGMax * DMAX; idx += blockDim.x) {
        int g = idx / DMAX, d = idx % DMAX;
        float v = 0.0f;
        if (g < ng && d < D) {
            int64_t h = kvh * G + g0 + g;
            v = to_f(qkv[t * a.ld + h * D + d]) * a.scale;
        }
        q_s[g][d] = v;
    }
    __syncthreads();

    float mw[kGMax], lw[kGMax], acc[kGMax][DPL];
#pragma unroll
    for (int g = 0; g < kGMax; ++g) {
        mw[g] = -INFINITY;
        lw[g] = 0.0f;
#pragma unroll
        for (int j = 0; j < DPL; ++j) acc[g][j] = 0.0f;
    }

    for (int32_t base = lo + warp * 32; base < hi; base += kSkWarps * 32) {
        const int32_t i = base + lane;
        const bool valid = i < hi;
        float sc[kGMax];
#pragma unroll
        for (int g = 0; g < kGMax; ++g) sc[g] = 0.0f;
        if (valid) {
            const T* k = kp + kv_row(m, seq, i, a.block_size, a.KVH, kvh) * D;
            if (D % 8 == 0) {
                for (int64_t d0 = 0; d0 < D; d0 += 8) {
                    uint4 raw = *reinterpret_cast<const uint4*>(k + d0);
                    const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
                    for (int j = 0; j < 8; ++j) {
                        float kv = to_f(e[j]);
#pragma unroll
                        for (int g = 0; g < kGMax; ++g) sc[g] = fmaf(q_s[g][d0 + j], kv, sc[g]);
                    }
                }
            } else {
                for (int64_t d = 0; d < D; ++d) {
                    float kv = to_f(k[d]);
#pragma unroll
                    for (int g = 0; g < kGMax; ++g) sc[g] = fmaf(q_s[g][d], kv, sc[g]);
                }
            }
        }
#pragma unroll
        for (int g = 0; g < kGMax; ++g) {
            if (g >= ng) break;
            float s = valid ? sc[g] : -INFINITY;
            float mnew = fmaxf(mw[g], warp_max(s));  // finite: lane 0's key is always valid
            float p = valid ? __expf(s - mnew) : 0.0f;
            float alpha = __expf(mw[g] - mnew);
            lw[g] = lw[g] * alpha + warp_sum(p);
            mw[g] = mnew;
#pragma unroll
            for (int j = 0; j < DPL; ++j) acc[g][j] *= alpha;
            p_s[warp][g][lane] = p;
        }
        __syncwarp();
        const int nk = min(32, hi - base);
        constexpr int U = 4;  // V rows in flight per lane
        for (int j0 = 0; j0 < nk; j0 += U) {
            float vv[U][DPL];
#pragma unroll
            for (int u = 0; u < U; ++u) {
                if (j0 + u < nk) {
                    const T* v = vp + kv_row(m, seq, base + j0 + u, a.block_size, a.KVH, kvh) * D;
                    load_lane<T, DPL>(v, lane, D, vv[u]);
                } else {
#pragma unroll
                    for (int e = 0; e < DPL; ++e) vv[u][e] = 0.0f;
                }
            }
#pragma unroll
            for (int g = 0; g < kGMax; ++g) {
                if (g >= ng) break;
#pragma unroll
                for (int u = 0; u < U; ++u) {
                    float p = j0 + u < nk ? p_s[warp][g][j0 + u] : 0.0f;
#pragma unroll
                    for (int e = 0; e < DPL; ++e) acc[g][e] = fmaf(p, vv[u][e], acc[g][e]);
                }
            }
        }
        __syncwarp();
    }

    // merge the warps of this block
#pragma unroll
    for (int g = 0; g < kGMax; ++g) {
        if (lane == 0) {
            m_s[warp][g] = mw[g];
            l_s[warp][g] = lw[g];
        }
#pragma unroll
        for (int e = 0; e < DPL; ++e) acc_s[warp][g][lane * DPL + e] = acc[g][e];
    }
    __syncthreads();
    const int64_t H = a.H;
    for (int idx = threadIdx.x; idx < ng * (D + 1); idx += blockDim.x) {
        int g = idx / static_cast<int>(D + 1), d = idx % static_cast<int>(D + 1);
        float M = -INFINITY;
        for (int w = 0; w < kSkWarps; ++w) M = fmaxf(M, m_s[w][g]);
        int64_t h = kvh * G + g0 + g;
        size_t part = (static_cast<size_t>(tok_idx) * H + h) * splits + split;
        if (d == D) {  // the (m, l) pair
            float L = 0.0f;
            if (M != -INFINITY)
                for (int w = 0; w < kSkWarps; ++w) L += l_s[w][g] * __expf(m_s[w][g] - M);
            ml[part * 2] = M;
            ml[part * 2 + 1] = L;
        } else {
            float A = 0.0f;
            if (M != -INFINITY)
                for (int w = 0; w < kSkWarps; ++w) A += acc_s[w][g][d] * __expf(m_s[w][g] - M);
            accw[part * D + d] = A;
        }
    }
}

constexpr int kDecWarps = 4;

// grid (splits, KVH * qgroups, n_tokens), kDecWarps*32 threads. A key row (D elements) is read
// by D/8 lanes with one 16-byte load each, so a warp reads 32/(D/8) whole rows per load; each
// lane keeps U key and U value loads in flight per step. The GP query heads of one KV group
// share every K/V row. Scores are in base 2 (scale*log2(e) folded into q); the partial states
// are written with m in natural-log units for splitk_reduce_kernel.
// Partitions that hold keys are merged in this kernel: one partition writes the output itself;
// with several, each writes its partial state and the last to finish (a per-(token, block row)
// arrival counter in `cnt`, zero between launches: the last block resets it) merges them with
// splitk_reduce_kernel's formula in a fixed order (the result does not depend on which block
// is last).
// Resident blocks the register budget is set for (the session-2 kernel's occupancy: bytes in
// flight per SM are what a memory-bound decode needs).
template <int GP>
constexpr int decode_min_blocks() {
    return GP <= 2 ? 4 : GP == 4 ? 3 : 2;
}
template <typename T, int D, int GP>
__global__ void __launch_bounds__(kDecWarps * 32, decode_min_blocks<GP>())
    decode_kernel(AttnLaunch a, DevMeta m, int64_t splits, float* ml, float* accw, int* cnt) {
    pdl_trigger();                      // pdl_wait() comes after the first K/V loads (see below)
    constexpr int LPK = D / 8;          // lanes per key row
    constexpr int KPW = 32 / LPK;       // key rows per warp load
    constexpr int U = GP >= 8 ? 2 : 4;  // loads in flight per lane (registers)
    constexpr int KSTEP = KPW * U;      // keys per warp step
    __shared__ float m_s[kDecWarps][GP], l_s[kDecWarps][GP];
    __shared__ float acc_s[kDecWarps][GP][D];

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int sub = lane / LPK, cl = lane % LPK;
    const int64_t G = a.H / a.KVH;
    const int64_t qgroups = (G + GP - 1) / GP;
    const int64_t kvh = blockIdx.y / qgroups;
    const int64_t g0 = (blockIdx.y % qgroups) * GP;
    const int ng = static_cast<int>(G - g0 < GP ? G - g0 : int64_t(GP));
    const int64_t tok_idx = blockIdx.z;
    const int32_t t = m.decode_tokens[tok_idx];
    const TokenRange tr = token_range(m, t, a.window);
    const int32_t bt_off = m.seqs[tr.seq].block_table_offset;
    const int32_t n_keys = tr.hi - tr.lo;
    const int32_t part = split_part(n_keys, splits, a.min_part);
    // With the rope/store fold-in the query's own key comes from registers, not memory: the
    // last partition takes it on top of its `part` loaded keys (at context 128: 4 partitions
    // of 32 loaded keys, not a fifth for the one new key).
    const int32_t n_loaded = a.rope_store != 0 && n_keys > 1 ? n_keys - 1 : n_keys;
    const int32_t used = (n_loaded + part - 1) / part;  // partitions with keys (>= 1)
    if (static_cast<int32_t>(blockIdx.x) >= used) return;
    const int32_t lo = tr.lo + static_cast<int32_t>(blockIdx.x) * part;
    const int32_t hi = static_cast<int32_t>(blockIdx.x) == used - 1 ? tr.hi : min(tr.hi, lo + part);
    const int32_t bs = static_cast<int32_t>(a.block_size);
    const size_t slot_stride = static_cast<size_t>(a.KVH) * D;

    const T* qkv = static_cast<const T*>(a.qkv);
    const T* kp = static_cast<const T*>(a.k_pool) + kvh * D + cl * 8;
    const T* vp = static_cast<const T*>(a.v_pool) + kvh * D + cl * 8;
    const float qscale = a.scale * 1.4426950408889634f;

    // a.rope_store: rotate q and the new k here (rope_kernel's arithmetic: lane cl holds dims
    // cl*8 .. cl*8+7, its rotate_half partner is lane cl ^ LPK/2) and store the new k and v;
    // the partition holding the query's own key (the last) takes that key from registers.
    const bool fuse = a.rope_store != 0;
    const bool has_new = fuse && hi == tr.hi;
    const int32_t hi_loop = has_new ? hi - 1 : hi;
    float rc[8], rsn[8];
    if (fuse) {
        const int32_t var = m.seqs[tr.seq].rope_variant;
        const float* inv = m.inv_freq + m.rope_offset[var] + (cl % (LPK / 2)) * 8;
        const float scaling = m.rope_scaling[var];
        const float pos = static_cast<float>(m.positions[t]);
#pragma unroll
        for (int e = 0; e < 8; ++e) {
            float sn, cs;
            sincosf(__fmul_rn(pos, inv[e]), &sn, &cs);
            rc[e] = round_to<T>(cs * scaling);
            rsn[e] = round_to<T>(sn * scaling);
        }
    }
    const bool first_half = cl < LPK / 2;
    auto rope8 = [&](float(&x)[8]) {  // every lane of the warp calls it
#pragma unroll
        for (int e = 0; e < 8; ++e) {
            const float o = __shfl_xor_sync(0xffffffffu, x[e], LPK / 2);
            x[e] = first_half ? round_to<T>(round_to<T>(x[e] * rc[e]) + round_to<T>(-o * rsn[e]))
                              : round_to<T>(round_to<T>(x[e] * rc[e]) + round_to<T>(o * rsn[e]));
        }
    };
    auto pack8 = [](const float(&x)[8]) {
        uint4 r;
        T* e = reinterpret_cast<T*>(&r);
#pragma unroll
        for (int i = 0; i < 8; ++i) e[i] = from_f<T>(x[i]);
        return r;
    };
    const bool writer = warp == 0 && sub == 0;

    // The first K/V rows of this warp, loaded before waiting for the kernel before this one:
    // keys before the sequence's n_past were stored by earlier steps, and the metadata was
    // uploaded before the step (only q and this step's own keys come from that kernel).
    const int32_t n_past = m.seqs[tr.seq].n_past;
    uint4 kr[U], vr[U];
    bool ok[U], pre[U];
    auto key_off = [&](int32_t i, bool valid) {
        const int32_t blk = valid ? m.block_tables[bt_off + i / bs] : 0;
        return (static_cast<size_t>(blk) * bs + (valid ? i % bs : 0)) * slot_stride;
    };
    const int32_t kfirst = lo + warp * KSTEP;
#pragma unroll
    for (int u = 0; u < U; ++u) {
        const int32_t i = kfirst + u * KPW + sub;
        ok[u] = i < hi_loop;
        pre[u] = ok[u] && i < n_past;
        const size_t off = key_off(i, pre[u]);
        kr[u] = pre[u] ? ld_nc_stream(kp + off) : make_uint4(0, 0, 0, 0);
        vr[u] = pre[u] ? ld_nc_stream(vp + off) : make_uint4(0, 0, 0, 0);
    }
    pdl_wait();

    float q[GP][8];
#pragma unroll
    for (int g = 0; g < GP; ++g) {
        if (g < ng) {
            const T* qr = qkv + static_cast<size_t>(t) * a.ld + (kvh * G + g0 + g) * D + cl * 8;
            unpack8<T>(*reinterpret_cast<const uint4*>(qr), q[g]);
            if (fuse) rope8(q[g]);  // qkv keeps the unrotated q: other blocks read it
#pragma unroll
            for (int e = 0; e < 8; ++e) q[g][e] *= qscale;
        } else {
#pragma unroll
            for (int e = 0; e < 8; ++e) q[g][e] = 0.0f;
        }
    }
    float mx[GP], l[GP], acc[GP][8];
#pragma unroll
    for (int g = 0; g < GP; ++g) {
        mx[g] = -INFINITY;
        l[g] = 0.0f;
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[g][e] = 0.0f;
    }

    uint4 knew = make_uint4(0, 0, 0, 0), vnew = make_uint4(0, 0, 0, 0);
    if (has_new) {
        const T* krow = qkv + static_cast<size_t>(t) * a.ld + (a.H + kvh) * D + cl * 8;
        float kf[8];
        unpack8<T>(*reinterpret_cast<const uint4*>(krow), kf);
        rope8(kf);
        knew = pack8(kf);
        vnew = *reinterpret_cast<const uint4*>(krow + a.KVH * D);
        if (writer && g0 == 0) {  // one block per (token, kv head) stores the new row
            const int32_t slot = m.slot_mapping[t];
            if (slot >= 0) {  // eager padding rows have none (recorded ones: the scratch block)
                const size_t o = static_cast<size_t>(slot) * slot_stride + kvh * D + cl * 8;
                *reinterpret_cast<uint4*>(static_cast<T*>(const_cast<void*>(a.k_pool)) + o) = knew;
                *reinterpret_cast<uint4*>(static_cast<T*>(const_cast<void*>(a.v_pool)) + o) = vnew;
            }
        }
    }

    // one step of U key rows per lane group: scores, online softmax, accumulation
    auto consume = [&](const uint4(&kr)[U], const uint4(&vr)[U], const bool(&ok)[U]) {
        float sc[U][GP];
#pragma unroll
        for (int u = 0; u < U; ++u) {
            float kf[8];
            unpack8<T>(kr[u], kf);
#pragma unroll
            for (int g = 0; g < GP; ++g) {
                float s = 0.0f;
#pragma unroll
                for (int e = 0; e < 8; ++e) s = fmaf(q[g][e], kf[e], s);
#pragma unroll
                for (int o = LPK / 2; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
                sc[u][g] = s;
            }
        }
        float vf[U][8];
#pragma unroll
        for (int u = 0; u < U; ++u) unpack8<T>(vr[u], vf[u]);
#pragma unroll
        for (int g = 0; g < GP; ++g) {
            float bm = -INFINITY;
#pragma unroll
            for (int u = 0; u < U; ++u)
                if (ok[u]) bm = fmaxf(bm, sc[u][g]);
#pragma unroll
            for (int o = LPK; o < 32; o <<= 1) bm = fmaxf(bm, __shfl_xor_sync(0xffffffffu, bm, o));
            const float mnew = fmaxf(mx[g], bm);  // finite: key k0 is valid
            const float alpha = exp2f(mx[g] - mnew);
            float ps = 0.0f, p[U];
#pragma unroll
            for (int u = 0; u < U; ++u) {
                p[u] = ok[u] ? exp2f(sc[u][g] - mnew) : 0.0f;
                ps += p[u];
            }
            l[g] = l[g] * alpha + ps;
            mx[g] = mnew;
#pragma unroll
            for (int e = 0; e < 8; ++e) {
                float v = acc[g][e] * alpha;
#pragma unroll
                for (int u = 0; u < U; ++u) v = fmaf(p[u], vf[u][e], v);
                acc[g][e] = v;
            }
        }
    };
    for (int32_t k0 = kfirst; k0 < hi_loop; k0 += kDecWarps * KSTEP) {
        if (k0 == kfirst) {  // the rows not loaded before the wait
#pragma unroll
            for (int u = 0; u < U; ++u) {
                if (ok[u] && !pre[u]) {
                    const size_t off = key_off(k0 + u * KPW + sub, true);
                    kr[u] = ld_nc_stream(kp + off);
                    vr[u] = ld_nc_stream(vp + off);
                }
            }
        } else {
            size_t off[U];
#pragma unroll
            for (int u = 0; u < U; ++u) {
                const int32_t i = k0 + u * KPW + sub;
                ok[u] = i < hi_loop;
                off[u] = key_off(i, ok[u]);
            }
#pragma unroll
            for (int u = 0; u < U; ++u) {
                kr[u] = ok[u] ? ld_nc_stream(kp + off[u]) : make_uint4(0, 0, 0, 0);
                vr[u] = ok[u] ? ld_nc_stream(vp + off[u]) : make_uint4(0, 0, 0, 0);
            }
        }
        consume(kr, vr, ok);
    }
    if (has_new && warp == 0) {  // the query's own key, from registers
#pragma unroll
        for (int u = 0; u < U; ++u) {
            kr[u] = u == 0 ? knew : make_uint4(0, 0, 0, 0);
            vr[u] = u == 0 ? vnew : make_uint4(0, 0, 0, 0);
            ok[u] = u == 0 && sub == 0;
        }
        consume(kr, vr, ok);
    }

    // sum the key rows of the warp (lanes with the same cl), then merge the warps
#pragma unroll
    for (int g = 0; g < GP; ++g) {
#pragma unroll
        for (int o = LPK; o < 32; o <<= 1) {
            l[g] += __shfl_xor_sync(0xffffffffu, l[g], o);
#pragma unroll
            for (int e = 0; e < 8; ++e) acc[g][e] += __shfl_xor_sync(0xffffffffu, acc[g][e], o);
        }
        if (lane < LPK) {
#pragma unroll
            for (int e = 0; e < 8; ++e) acc_s[warp][g][cl * 8 + e] = acc[g][e];
        }
        if (lane == 0) {
            m_s[warp][g] = mx[g];
            l_s[warp][g] = l[g];
        }
    }
    __syncthreads();
    const int64_t H = a.H;
    if (used == 1) {  // the only partition: the output directly (what the merge of one gives)
        for (int idx = threadIdx.x; idx < ng * D; idx += blockDim.x) {
            const int g = idx / D, d = idx % D;
            float M = -INFINITY;
#pragma unroll
            for (int w = 0; w < kDecWarps; ++w) M = fmaxf(M, m_s[w][g]);
            float L = 0.0f, A = 0.0f;
            if (M != -INFINITY)
                for (int w = 0; w < kDecWarps; ++w) {
                    const float e = exp2f(m_s[w][g] - M);
                    L += l_s[w][g] * e;
                    A += acc_s[w][g][d] * e;
                }
            const int64_t h = kvh * G + g0 + g;
            static_cast<T*>(a.out)[t * a.out_ld + h * D + d] = from_f<T>(L > 0.0f ? A / L : 0.0f);
        }
        return;
    }
    const int64_t split = blockIdx.x;
    for (int idx = threadIdx.x; idx < ng * (D + 1); idx += blockDim.x) {
        const int g = idx / (D + 1), d = idx % (D + 1);
        float M = -INFINITY;
#pragma unroll
        for (int w = 0; w < kDecWarps; ++w) M = fmaxf(M, m_s[w][g]);
        const int64_t h = kvh * G + g0 + g;
        const size_t pidx = (static_cast<size_t>(tok_idx) * H + h) * splits + split;
        if (d == D) {
            float L = 0.0f;
            if (M != -INFINITY)
                for (int w = 0; w < kDecWarps; ++w) L += l_s[w][g] * exp2f(m_s[w][g] - M);
            ml[pidx * 2] = M == -INFINITY ? -INFINITY : M * 0.6931471805599453f;
            ml[pidx * 2 + 1] = L;
        } else {
            float A = 0.0f;
            if (M != -INFINITY)
                for (int w = 0; w < kDecWarps; ++w) A += acc_s[w][g][d] * exp2f(m_s[w][g] - M);
            accw[pidx * D + d] = A;
        }
    }
    // the last partition to arrive merges them all
    __shared__ int last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        int* c = cnt + tok_idx * gridDim.y + blockIdx.y;
        last = atomicAdd(c, 1) == used - 1;
        if (last) *c = 0;  // every partition has arrived: ready for the next launch
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    // per head: the maximum, each partition's weight exp(m_s - M) (shared memory) and the sum,
    // one warp per head with lanes over partitions; then every output element over partitions
    // (independent loads, unrolled). splitk_reduce_kernel's arithmetic, summed in another order.
    __shared__ float wsm[GP][kMaxSplits];
    __shared__ float lsm[GP];
    for (int g = warp; g < ng; g += kDecWarps) {
        const size_t part0 = (static_cast<size_t>(tok_idx) * H + kvh * G + g0 + g) * splits;
        float M = -INFINITY;
        for (int32_t s = lane; s < used; s += 32) M = fmaxf(M, __ldcg(ml + (part0 + s) * 2));
        M = warp_max(M);
        float L = 0.0f;
        for (int32_t s = lane; s < used; s += 32) {
            const float ms = __ldcg(ml + (part0 + s) * 2);
            const float e = ms == -INFINITY ? 0.0f : __expf(ms - M);
            wsm[g][s] = e;
            L += __ldcg(ml + (part0 + s) * 2 + 1) * e;
        }
        L = warp_sum(L);
        if (lane == 0) lsm[g] = L;
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < ng * D; idx += blockDim.x) {
        const int g = idx / D, d = idx % D;
        const int64_t h = kvh * G + g0 + g;
        const float* aw = accw + (static_cast<size_t>(tok_idx) * H + h) * splits * D + d;
        float A = 0.0f;
#pragma unroll 8
        for (int32_t s = 0; s < used; ++s) A += __ldcg(aw + static_cast<size_t>(s) * D) * wsm[g][s];
        const float L = lsm[g];
        static_cast<T*>(a.out)[t * a.out_ld + h * D + d] = from_f<T>(L > 0.0f ? A / L : 0.0f);
    }
}

// grid (n_tokens, H): merge the partitions of each (token, head).
template <typename T>
__global__ void splitk_reduce_kernel(AttnLaunch a, DevMeta m, int64_t splits, const float* ml,
                                     const float* accw) {
    pdl_trigger();
    pdl_wait();
    const int64_t tok_idx = blockIdx.x, h = blockIdx.y, D = a.D;
    const int32_t t = m.decode_tokens[tok_idx];
    const size_t part0 = (static_cast<size_t>(tok_idx) * a.H + h) * splits;
    float M = -INFINITY;
    for (int64_t s = 0; s < splits; ++s) M = fmaxf(M, ml[(part0 + s) * 2]);
    float L = 0.0f;
    if (M != -INFINITY)
        for (int64_t s = 0; s < splits; ++s) {
            float ms = ml[(part0 + s) * 2];
            if (ms != -INFINITY) L += ml[(part0 + s) * 2 + 1] * __expf(ms - M);
        }
    T* out = static_cast<T*>(a.out) + t * a.out_ld + h * D;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
        float A = 0.0f;
        for (int64_t s = 0; s < splits; ++s) {
            float ms = ml[(part0 + s) * 2];
            if (ms != -INFINITY) A += accw[(part0 + s) * D + d] * __expf(ms - M);
        }
        out[d] = from_f<T>(L > 0.0f ? A / L : 0.0f);
    }
}

// ---------------------------------------------------------------- tensor-core prefill
template <typename T>
struct MmaOp;
template <>
struct MmaOp<__nv_bfloat16> {
    static __device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                               uint32_t b1) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
            "{%8,%9}, {%0,%1,%2,%3};"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
        __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
        return *reinterpret_cast<uint32_t*>(&v);
    }
};
template <>
struct MmaOp<__half> {
    static __device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                               uint32_t b1) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
            "{%8,%9}, {%0,%1,%2,%3};"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
        __half2 v = __floats2half2_rn(lo, hi);
        return *reinterpret_cast<uint32_t*>(&v);
    }
};

constexpr int kPfWarps = 4;
constexpr int kPfKeys = 64;

// 64-row sub-tile i (0 .. num_prefill_tiles * sub - 1, sub = prefill_tile_q / 64) of the tile
// list: (sequence, first row). False when the sub-tile is past the sequence's rows (the tail of
// a 128-row tile built for the sm90 kernel).
__device__ __forceinline__ bool pf_subtile(const DevMeta& m, int i, int32_t& sidx, int32_t& q0) {
    const int sub = m.prefill_tile_q / kPrefillTileQ;
    const int tile = i / sub;
    sidx = m.prefill_tiles[2 * tile];
    q0 = m.prefill_tiles[2 * tile + 1] + (i - tile * sub) * kPrefillTileQ;
    return q0 < m.seqs[sidx].q_len;
}

// ---------------------------------------------------------------- prefill (mma.sync)
// Tiles of 64 query rows of one head x 64 keys, 4 warps of 16 rows each, with the K/V tiles
// double-buffered through cp.async (the next tile's loads overlap this tile's math), K and V
// fragments read with ldmatrix / ldmatrix.trans (one instruction per two mma), masks computed
// only on tiles that cross the diagonal or a window edge, and the heaviest (last) query tiles
// scheduled first.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
    farsight::cuda::cp_async16(static_cast<uint32_t>(__cvta_generic_to_shared(smem)), gmem, valid);
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem) {
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem) {
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
}

template <int D>
constexpr int prefill2_smem_bytes() {
    return 2 * 2 * kPfKeys * (D + 8) * 2;  // 2 stages x (K, V) x 64 rows x padded row
}

// grid (num_prefill_tiles, H), kPfWarps*32 threads, prefill2_smem_bytes<D>() dynamic smem.
template <typename T, int D>
__global__ void __launch_bounds__(kPfWarps * 32) prefill2_kernel(AttnLaunch a, DevMeta m) {
    constexpr int LDS = D + 8;  // padded row: ldmatrix rows fall in distinct banks
    constexpr int TILE = kPfKeys * LDS;
    constexpr int CH = D / 8;  // 16-byte chunks per row
    extern __shared__ __align__(16) uint16_t smem[];
    using Op = MmaOp<T>;

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int gq = lane / 4, tig = lane % 4;
    int32_t sidx, q0;  // heaviest first
    if (!pf_subtile(m, static_cast<int>(gridDim.x - 1 - blockIdx.x), sidx, q0)) return;
    const SeqSlice seq = m.seqs[sidx];
    const int64_t h = blockIdx.y;
    const int64_t kvh = h / (a.H / a.KVH);

    const int32_t q_last = min(q0 + kPrefillTileQ, seq.q_len) - 1;
    const int32_t p_min = seq.n_past + q0, p_max = seq.n_past + q_last;
    const int32_t hi = p_max + 1;
    const int32_t lo = a.window > 0 ? max(0, p_min - static_cast<int32_t>(a.window) + 1) : 0;

    const int32_t r0 = q0 + warp * 16 + gq, r1 = r0 + 8;
    const bool v0 = r0 < seq.q_len, v1 = r1 < seq.q_len;
    const int32_t pos0 = seq.n_past + r0, pos1 = seq.n_past + r1;

    uint32_t qf[D / 16][4];
    {
        const uint16_t* qkv = static_cast<const uint16_t*>(a.qkv);
        const uint16_t* q0p = qkv + (seq.q_start + r0) * a.ld + h * D;
        const uint16_t* q1p = qkv + (seq.q_start + r1) * a.ld + h * D;
#pragma unroll
        for (int kc = 0; kc < D / 16; ++kc) {
            int c = kc * 16 + tig * 2;
            qf[kc][0] = v0 ? *reinterpret_cast<const uint32_t*>(q0p + c) : 0u;
            qf[kc][1] = v1 ? *reinterpret_cast<const uint32_t*>(q1p + c) : 0u;
            qf[kc][2] = v0 ? *reinterpret_cast<const uint32_t*>(q0p + c + 8) : 0u;
            qf[kc][3] = v1 ? *reinterpret_cast<const uint32_t*>(q1p + c + 8) : 0u;
        }
    }
    const float sl2 = a.scale * 1.4426950408889634f;  // softmax in base 2

    float o[D / 8][4];
#pragma unroll
    for (int nd = 0; nd < D / 8; ++nd) o[nd][0] = o[nd][1] = o[nd][2] = o[nd][3] = 0.0f;
    float mr[2] = {-INFINITY, -INFINITY}, lr[2] = {0.0f, 0.0f};

    const uint16_t* kpool = static_cast<const uint16_t*>(a.k_pool) + kvh * D;
    const uint16_t* vpool = static_cast<const uint16_t*>(a.v_pool) + kvh * D;
    const size_t slot_stride = static_cast<size_t>(a.KVH) * D;
    const int32_t bs = static_cast<int32_t>(a.block_size);
    const int32_t* btab = m.block_tables + seq.block_table_offset;

    auto load_tile = [&](int stage, int32_t kt) {
        uint16_t* ks = smem + stage * 2 * TILE;
        uint16_t* vs = ks + TILE;
        for (int idx = threadIdx.x; idx < kPfKeys * CH; idx += kPfWarps * 32) {
            const int r = idx / CH, c = idx % CH;
            const int32_t i = kt + r;
            const bool ok = i < hi;
            size_t off = 0;
            if (ok) off = (static_cast<size_t>(btab[i / bs]) * bs + i % bs) * slot_stride + c * 8;
            cp_async16(&ks[r * LDS + c * 8], kpool + off, ok);
            cp_async16(&vs[r * LDS + c * 8], vpool + off, ok);
        }
    };

    int stage = 0;
    load_tile(0, lo);
    cp_async_commit();
    for (int32_t kt = lo; kt < hi; kt += kPfKeys, stage ^= 1) {
        if (kt + kPfKeys < hi) load_tile(stage ^ 1, kt + kPfKeys);
        cp_async_commit();   // possibly empty: keeps the group count uniform
        cp_async_wait<1>();  // this stage's tile has landed (for this thread) ...
        __syncthreads();     // ... and for every thread
        const uint16_t* ks = smem + stage * 2 * TILE;
        const uint16_t* vs = ks + TILE;

        // S = Q K^T for this warp's 16 rows x 64 keys
        float s[kPfKeys / 8][4];
#pragma unroll
        for (int nt = 0; nt < kPfKeys / 8; ++nt) {
            s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
            const uint16_t* krow = ks + (nt * 8 + (lane & 7)) * LDS + (lane >> 3) * 8;
#pragma unroll
            for (int kc = 0; kc < D / 16; kc += 2) {
                uint32_t b[4];
                ldmatrix_x4(b, krow + kc * 16);
                Op::mma(s[nt], qf[kc], b[0], b[1]);
                Op::mma(s[nt], qf[kc + 1], b[2], b[3]);
            }
        }
        const bool need_mask = a.window > 0 || kt + kPfKeys - 1 > p_min || !v0 || !v1;
        float mx[2] = {-INFINITY, -INFINITY};
        if (need_mask) {
#pragma unroll
            for (int nt = 0; nt < kPfKeys / 8; ++nt) {
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int32_t key = kt + nt * 8 + tig * 2 + (e & 1);
                    const bool rv = e < 2 ? v0 : v1;
                    const int32_t pos = e < 2 ? pos0 : pos1;
                    const bool ok = rv && key <= pos && (a.window <= 0 || pos - key < a.window);
                    s[nt][e] = ok ? s[nt][e] * sl2 : -INFINITY;
                    mx[e / 2] = fmaxf(mx[e / 2], s[nt][e]);
                }
            }
        } else {
#pragma unroll
            for (int nt = 0; nt < kPfKeys / 8; ++nt) {
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    s[nt][e] *= sl2;
                    mx[e / 2] = fmaxf(mx[e / 2], s[nt][e]);
                }
            }
        }
        float alpha[2], muse[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
            const float mnew = fmaxf(mr[r], mx[r]);
            muse[r] = mnew == -INFINITY ? 0.0f : mnew;
            alpha[r] = exp2f(mr[r] - muse[r]);  // 0 when mr was -inf
            mr[r] = mnew;
        }
        float rs[2] = {0.0f, 0.0f};
#pragma unroll
        for (int nt = 0; nt < kPfKeys / 8; ++nt) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const float p = exp2f(s[nt][e] - muse[e / 2]);
                s[nt][e] = p;
                rs[e / 2] += p;
            }
        }
#pragma unroll
        for (int r = 0; r < 2; ++r) lr[r] = lr[r] * alpha[r] + rs[r];
#pragma unroll
        for (int nd = 0; nd < D / 8; ++nd) {
            o[nd][0] *= alpha[0];
            o[nd][1] *= alpha[0];
            o[nd][2] *= alpha[1];
            o[nd][3] *= alpha[1];
        }
        // O += P V
        const uint16_t* vrow = vs + (((lane >> 3) & 1) * 8 + (lane & 7)) * LDS + ((lane >> 4) * 8);
#pragma unroll
        for (int kc = 0; kc < kPfKeys / 16; ++kc) {
            uint32_t pa[4];
            pa[0] = Op::pack(s[2 * kc][0], s[2 * kc][1]);
            pa[1] = Op::pack(s[2 * kc][2], s[2 * kc][3]);
            pa[2] = Op::pack(s[2 * kc + 1][0], s[2 * kc + 1][1]);
            pa[3] = Op::pack(s[2 * kc + 1][2], s[2 * kc + 1][3]);
#pragma unroll
            for (int nd = 0; nd < D / 8; nd += 2) {
                uint32_t b[4];
                ldmatrix_x4_trans(b, vrow + kc * 16 * LDS + nd * 8);
                Op::mma(o[nd], pa, b[0], b[1]);
                Op::mma(o[nd + 1], pa, b[2], b[3]);
            }
        }
        __syncthreads();  // the loads two tiles on overwrite this stage
    }

#pragma unroll
    for (int r = 0; r < 2; ++r) {
        lr[r] += __shfl_xor_sync(0xffffffffu, lr[r], 1);
        lr[r] += __shfl_xor_sync(0xffffffffu, lr[r], 2);
        lr[r] = lr[r] > 0.0f ? 1.0f / lr[r] : 0.0f;
    }
    T* out = static_cast<T*>(a.out);
#pragma unroll
    for (int nd = 0; nd < D / 8; ++nd) {
        const int c = nd * 8 + tig * 2;
        if (v0)
            *reinterpret_cast<uint32_t*>(out + (seq.q_start + r0) * a.out_ld + h * D + c) =
                Op::pack(o[nd][0] * lr[0], o[nd][1] * lr[0]);
        if (v1)
            *reinterpret_cast<uint32_t*>(out + (seq.q_start + r1) * a.out_ld + h * D + c) =
                Op::pack(o[nd][2] * lr[1], o[nd][3] * lr[1]);
    }
}

template <typename T, int D>
void launch_prefill2(const AttnLaunch& a, const DevMeta& m, cudaStream_t st) {
    constexpr int smem = prefill2_smem_bytes<D>();
    static bool attr_set = false;  // per instantiation; the attribute is per device function
    if (!attr_set) {
        FS_CUDA(cudaFuncSetAttribute(prefill2_kernel<T, D>,
                                     cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
        attr_set = true;
    }
    dim3 grid(static_cast<unsigned>(m.num_prefill_tiles * (m.prefill_tile_q / kPrefillTileQ)),
              static_cast<unsigned>(a.H));
    prefill2_kernel<T, D><<<grid, kPfWarps * 32, smem, st>>>(a, m);
    FS_CUDA_LAUNCH("prefill2_kernel");
}

// ---------------------------------------------------------------- decode on tensor cores
// decode_tc_kernel (FARSIGHT_DECODE=tc / tc_norope; GQA with 2..8 q heads per kv head,
// head_dim 64/128; a.rope_store folds rope and the k/v store in, see below): one block per
// (token, kv head, key partition), the partitions of
// decode_kernel (split_part / a.min_part, merged by the last block to arrive). Each of the
// kTcWarps warps takes every kTcWarps-th tile of 16 keys of the partition and streams its
// tiles' K and V rows into its own NST-deep shared-memory ring with cp.async (no CTA
// barrier in the loop; the block-table entries of the next tile are read one tile ahead).
// Per tile: S^T = K Q^T (mma.sync m16n8k16, A = 16 keys x 16 dims of K by ldmatrix, B = Q^T:
// 16 dims x the group's q heads, zero-padded to 8 columns, kept in registers), online softmax
// in base 2 on the S^T fragments (each thread owns heads 2*(lane%4), +1 for keys lane/4 and
// lane/4 + 8), P^T rounded to T and moved into the B layout with movmatrix.trans, and
// O^T += V^T P^T (A = 16 dims x 16 keys of V by ldmatrix.trans).
constexpr int kTcWarps = 4;
constexpr int kTcKeys = 16;   // keys per warp tile (the mma M dimension)
// per-warp ring depth NST (template; FARSIGHT_DECODE_TC_STAGES=2/3/4, default 3): NST-1 tiles
// in flight while one is computed
constexpr int kTcCols = 8;    // mma N: q heads of the group, zero-padded

template <int D, int NST>
constexpr int decode_tc_smem_bytes() {  // padded rows: ldmatrix rows fall in distinct banks
    return kTcWarps * NST * 2 * kTcKeys * (D + 8) * 2;
}
static_assert(decode_tc_smem_bytes<64, 2>() >= kTcWarps * kTcCols * 64 * 4, "acc_s must fit");
static_assert(decode_tc_smem_bytes<128, 2>() >= kTcWarps * kTcCols * 128 * 4, "acc_s must fit");

__device__ __forceinline__ uint32_t movmatrix_trans(uint32_t x) {
    uint32_t r;
    asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(r) : "r"(x));
    return r;
}

// grid (splits, KVH, n_tokens), kTcWarps*32 threads, decode_tc_smem_bytes<D, NST>() dynamic smem.
template <typename T, int D, int NST>
__global__ void __launch_bounds__(kTcWarps * 32)
    decode_tc_kernel(AttnLaunch a, DevMeta m, int64_t splits, float* ml, float* accw, int* cnt) {
    pdl_trigger();
    constexpr int LDS = D + 8;
    constexpr int TILE = kTcKeys * LDS;  // elements of one K (or V) tile
    constexpr int CH = D / 8;            // 16-byte chunks per row
    constexpr int RPI = 32 / CH;         // rows per warp-wide cp.async
    constexpr int NI = kTcKeys / RPI;    // cp.async per lane per tensor per tile
    constexpr int NG = kTcCols;
    constexpr int32_t WSTEP = kTcWarps * kTcKeys;
    extern __shared__ __align__(16) uint16_t smem[];
    using Op = MmaOp<T>;

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int gq = lane / 4, tg = lane % 4;
    const int64_t G = a.H / a.KVH;
    const int64_t kvh = blockIdx.y;
    const int64_t tok_idx = blockIdx.z;
    const int32_t t = m.decode_tokens[tok_idx];
    const TokenRange tr = token_range(m, t, a.window);
    const int32_t* btab = m.block_tables + m.seqs[tr.seq].block_table_offset;
    const int32_t n_keys = tr.hi - tr.lo;
    const int32_t part = split_part(n_keys, splits, a.min_part);
    const int32_t used = (n_keys + part - 1) / part;  // partitions with keys (>= 1)
    if (static_cast<int32_t>(blockIdx.x) >= used) return;
    const int32_t lo = tr.lo + static_cast<int32_t>(blockIdx.x) * part;
    const int32_t hi = min(tr.hi, lo + part);
    const int32_t bs = static_cast<int32_t>(a.block_size);
    const size_t slot_stride = static_cast<size_t>(a.KVH) * D;
    const uint16_t* kp = static_cast<const uint16_t*>(a.k_pool) + kvh * D;
    const uint16_t* vp = static_cast<const uint16_t*>(a.v_pool) + kvh * D;
    uint16_t* ring = smem + warp * (NST * 2 * TILE);

    // this warp's tiles j = 0 .. ntiles-1: keys [wfirst + j * WSTEP, +16) (clipped at hi)
    const int32_t wfirst = lo + warp * kTcKeys;
    const int32_t ntiles = wfirst < hi ? (hi - wfirst + WSTEP - 1) / WSTEP : 0;
    // KV slot of row lane % 16 of tile j (-1: past the partition; lanes 16..31 repeat 0..15)
    auto row_slot = [&](int32_t j) -> int32_t {
        const int32_t i = wfirst + j * WSTEP + (lane & 15);
        if (j >= ntiles || i >= hi) return -1;
        return btab[i / bs] * bs + i % bs;
    };
    // tile j's K and V rows into stage j % NST (rows past hi zero-filled)
    auto issue = [&](int32_t j, int32_t myslot) {
        uint16_t* ks = ring + (j % NST) * 2 * TILE;
        uint16_t* vs = ks + TILE;
#pragma unroll
        for (int k = 0; k < NI; ++k) {
            const int r = k * RPI + lane / CH, c = lane % CH;
            const int32_t slot = __shfl_sync(0xffffffffu, myslot, r);
            const bool ok = slot >= 0;
            const size_t off = ok ? static_cast<size_t>(slot) * slot_stride + c * 8 : 0;
            cp_async16(&ks[r * LDS + c * 8], kp + off, ok);
            cp_async16(&vs[r * LDS + c * 8], vp + off, ok);
        }
    };

    // The block table and the keys of earlier steps do not depend on the kernel before this
    // one, but this step's own keys (stored by rope_store / kv_store, or below) do: wait first.
    int32_t pslot[NST];
#pragma unroll
    for (int j = 0; j < NST; ++j) pslot[j] = row_slot(j);
    pdl_wait();

    // a.rope_store (single-token steps): rotate q (below) and the new k as rope_kernel does
    // (qkv keeps the unrotated values: other blocks read them) and store the new k and v at
    // slot_mapping[t]; the last partition, the one whose keys include the query's own, stores
    // them before its copies start and then reads them back like every other key.
    const bool fuse = a.rope_store != 0;
    const uint16_t* qkv16 = static_cast<const uint16_t*>(a.qkv) + static_cast<size_t>(t) * a.ld;
    int32_t rvar = 0;
    float rpos = 0.0f, rscale = 1.0f;
    if (fuse) {
        rvar = m.seqs[tr.seq].rope_variant;
        rpos = static_cast<float>(m.positions[t]);
        rscale = m.rope_scaling[rvar];
    }
    const float* rinv = fuse ? m.inv_freq + m.rope_offset[rvar] : nullptr;
    auto rope_cs = [&](int f, float& c, float& sn) {  // rope_kernel's rounded cos / sin
        float sv, cv;
        sincosf(__fmul_rn(rpos, rinv[f]), &sv, &cv);
        c = round_to<T>(cv * rscale);
        sn = round_to<T>(sv * rscale);
    };
    if (fuse && static_cast<int32_t>(blockIdx.x) == used - 1) {
        if (warp == 0) {
            constexpr int LPK = D / 8;  // lane cl: dims cl*8 .. +7, rotate_half partner cl ^ LPK/2
            const int cl = lane % LPK;
            const uint16_t* krow = qkv16 + (a.H + kvh) * D + cl * 8;
            const uint4 vnew = *reinterpret_cast<const uint4*>(krow + a.KVH * D);
            float kf[8];
            unpack8<T>(*reinterpret_cast<const uint4*>(krow), kf);
            const bool first_half = cl < LPK / 2;
            uint4 knew;
            T* ke = reinterpret_cast<T*>(&knew);
#pragma unroll
            for (int e = 0; e < 8; ++e) {
                float c, sn;
                rope_cs((cl % (LPK / 2)) * 8 + e, c, sn);
                const float o = __shfl_xor_sync(0xffffffffu, kf[e], LPK / 2);
                const float kc = round_to<T>(kf[e] * c);
                const float r = first_half ? round_to<T>(kc + round_to<T>(-o * sn))
                                           : round_to<T>(kc + round_to<T>(o * sn));
                ke[e] = from_f<T>(r);
            }
            const int32_t slot = m.slot_mapping[t];
            if (lane < LPK && slot >= 0) {  // eager padding rows have none
                const size_t off = static_cast<size_t>(slot) * slot_stride + kvh * D + cl * 8;
                T* kw = static_cast<T*>(const_cast<void*>(a.k_pool));
                T* vw = static_cast<T*>(const_cast<void*>(a.v_pool));
                *reinterpret_cast<uint4*>(kw + off) = knew;
                *reinterpret_cast<uint4*>(vw + off) = vnew;
            }
        }
        __syncthreads();  // the new row is in memory before any warp's copies of it
    }
#pragma unroll
    for (int j = 0; j < NST - 1; ++j) {
        if (j < ntiles) issue(j, pslot[j]);
        cp_async_commit();
    }
    int32_t nslot = pslot[NST - 1];  // rows of tile NST-1, issued in iteration 0

    // B = Q^T: b0 = q[head gq][kc*16 + 2tg, +1], b1 = the same 8 dims on (heads >= G: zeros)
    uint32_t qb[D / 16][2];
    {
        const bool hv = gq < G;
        const uint16_t* qr = qkv16 + (kvh * G + (hv ? gq : 0)) * D + 2 * tg;
#pragma unroll
        for (int kc = 0; kc < D / 16; ++kc) {
            qb[kc][0] = hv ? *reinterpret_cast<const uint32_t*>(qr + kc * 16) : 0u;
            qb[kc][1] = hv ? *reinterpret_cast<const uint32_t*>(qr + kc * 16 + 8) : 0u;
        }
        if (fuse) {  // dims d and d + D/2 (rotate_half pairs) sit in qb[kc] and qb[kc + D/32]
#pragma unroll
            for (int kc = 0; kc < D / 32; ++kc) {
#pragma unroll
                for (int hh = 0; hh < 2; ++hh) {
                    const T* x1 = reinterpret_cast<const T*>(&qb[kc][hh]);
                    const T* x2 = reinterpret_cast<const T*>(&qb[kc + D / 32][hh]);
                    float y1[2], y2[2];
#pragma unroll
                    for (int e = 0; e < 2; ++e) {
                        float c, sn;
                        rope_cs(kc * 16 + hh * 8 + 2 * tg + e, c, sn);
                        const float a1 = to_f(x1[e]), a2 = to_f(x2[e]);
                        y1[e] = round_to<T>(round_to<T>(a1 * c) + round_to<T>(-a2 * sn));
                        y2[e] = round_to<T>(round_to<T>(a2 * c) + round_to<T>(a1 * sn));
                    }
                    qb[kc][hh] = Op::pack(y1[0], y1[1]);
                    qb[kc + D / 32][hh] = Op::pack(y2[0], y2[1]);
                }
            }
        }
    }
    const float qscale = a.scale * 1.4426950408889634f;  // scores in base 2

    // O^T fragments: o[mt] = dims mt*16 + gq (0, 1) and + 8 (2, 3), heads 2tg (0, 2), 2tg+1
    float o[D / 16][4];
#pragma unroll
    for (int mt = 0; mt < D / 16; ++mt) o[mt][0] = o[mt][1] = o[mt][2] = o[mt][3] = 0.0f;
    float mx0 = -INFINITY, mx1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;  // heads 2tg, 2tg+1

    const int krow_off = ((lane & 7) + ((lane >> 3) & 1) * 8) * LDS + (lane >> 4) * 8;
    const int vrow_off = ((lane & 7) + (lane >> 4) * 8) * LDS + ((lane >> 3) & 1) * 8;
    for (int32_t j = 0; j < ntiles; ++j) {
        __syncwarp();  // every lane is done with tile j-1's stage, which tile j+NST-1 takes
        if (j + NST - 1 < ntiles) issue(j + NST - 1, nslot);
        cp_async_commit();  // possibly empty: keeps the group count uniform
        nslot = row_slot(j + NST);  // the block table one tile ahead
        cp_async_wait<NST - 1>();   // tile j has landed (this lane's copies) ...
        __syncwarp();                     // ... and every lane's
        const uint16_t* ks = ring + (j % NST) * 2 * TILE;
        const uint16_t* vs = ks + TILE;
        const int32_t base = wfirst + j * WSTEP;

        // S^T (16 keys x 8 heads) = K Q^T, two accumulators (even / odd dim steps)
        float sa[4] = {0.0f, 0.0f, 0.0f, 0.0f}, sb[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
        for (int kc = 0; kc < D / 16; kc += 2) {
            uint32_t ka[4], kb[4];
            ldmatrix_x4(ka, ks + krow_off + kc * 16);
            ldmatrix_x4(kb, ks + krow_off + (kc + 1) * 16);
            Op::mma(sa, ka, qb[kc][0], qb[kc][1]);
            Op::mma(sb, kb, qb[kc + 1][0], qb[kc + 1][1]);
        }
        // s[0], s[1]: key base+gq, heads 2tg, 2tg+1; s[2], s[3]: key base+gq+8
        float s[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) s[e] = (sa[e] + sb[e]) * qscale;
        if (base + gq >= hi) s[0] = s[1] = -INFINITY;
        if (base + gq + 8 >= hi) s[2] = s[3] = -INFINITY;
        float t0 = fmaxf(s[0], s[2]), t1 = fmaxf(s[1], s[3]);
#pragma unroll
        for (int of = 4; of < 32; of <<= 1) {
            t0 = fmaxf(t0, __shfl_xor_sync(0xffffffffu, t0, of));
            t1 = fmaxf(t1, __shfl_xor_sync(0xffffffffu, t1, of));
        }
        const float mn0 = fmaxf(mx0, t0), mn1 = fmaxf(mx1, t1);  // finite: key base is valid
        const float al0 = exp2f(mx0 - mn0), al1 = exp2f(mx1 - mn1);
        mx0 = mn0;
        mx1 = mn1;
        const float p0 = exp2f(s[0] - mn0), p1 = exp2f(s[1] - mn1);
        const float p2 = exp2f(s[2] - mn0), p3 = exp2f(s[3] - mn1);
        l0 = l0 * al0 + (p0 + p2);
        l1 = l1 * al1 + (p1 + p3);
        // P^T as the B operand: b0 = keys 2tg, 2tg+1 of head gq; b1 = keys 2tg+8, 2tg+9
        const uint32_t pb0 = movmatrix_trans(Op::pack(p0, p1));
        const uint32_t pb1 = movmatrix_trans(Op::pack(p2, p3));
#pragma unroll
        for (int mt = 0; mt < D / 16; ++mt) {
            o[mt][0] *= al0;
            o[mt][1] *= al1;
            o[mt][2] *= al0;
            o[mt][3] *= al1;
            uint32_t va[4];
            ldmatrix_x4_trans(va, vs + vrow_off + mt * 16);
            Op::mma(o[mt], va, pb0, pb1);
        }
    }
    cp_async_wait<0>();  // only empty groups can be pending

    // sum the lanes with the same heads (the keys gq), then merge the warps
#pragma unroll
    for (int of = 4; of < 32; of <<= 1) {
        l0 += __shfl_xor_sync(0xffffffffu, l0, of);
        l1 += __shfl_xor_sync(0xffffffffu, l1, of);
    }
    __shared__ float m_s[kTcWarps][NG], l_s[kTcWarps][NG];
    float* acc_s = reinterpret_cast<float*>(smem);  // [kTcWarps][NG][D], over the rings
    __syncthreads();                                // every warp is done with its ring
    {
        float* a0 = acc_s + (warp * NG + 2 * tg) * D;  // head 2tg; head 2tg+1 at + D
#pragma unroll
        for (int mt = 0; mt < D / 16; ++mt) {
            const int d = mt * 16 + gq;
            a0[d] = o[mt][0];
            a0[D + d] = o[mt][1];
            a0[d + 8] = o[mt][2];
            a0[D + d + 8] = o[mt][3];
        }
        if (gq == 0) {
            m_s[warp][2 * tg] = mx0;
            m_s[warp][2 * tg + 1] = mx1;
            l_s[warp][2 * tg] = l0;
            l_s[warp][2 * tg + 1] = l1;
        }
    }
    __syncthreads();
    const int ng = static_cast<int>(G);
    const int64_t H = a.H;
    if (used == 1) {  // the only partition: the output directly
        for (int idx = threadIdx.x; idx < ng * D; idx += blockDim.x) {
            const int g = idx / D, d = idx % D;
            float M = -INFINITY;
#pragma unroll
            for (int w = 0; w < kTcWarps; ++w) M = fmaxf(M, m_s[w][g]);
            float L = 0.0f, A = 0.0f;
            if (M != -INFINITY)
#pragma unroll
                for (int w = 0; w < kTcWarps; ++w) {
                    const float e = exp2f(m_s[w][g] - M);
                    L += l_s[w][g] * e;
                    A += acc_s[(w * NG + g) * D + d] * e;
                }
            const int64_t h = kvh * G + g;
            static_cast<T*>(a.out)[t * a.out_ld + h * D + d] = from_f<T>(L > 0.0f ? A / L : 0.0f);
        }
        return;
    }
    const int64_t split = blockIdx.x;
    for (int idx = threadIdx.x; idx < ng * (D + 1); idx += blockDim.x) {
        const int g = idx / (D + 1), d = idx % (D + 1);
        float M = -INFINITY;
#pragma unroll
        for (int w = 0; w < kTcWarps; ++w) M = fmaxf(M, m_s[w][g]);
        const int64_t h = kvh * G + g;
        const size_t pidx = (static_cast<size_t>(tok_idx) * H + h) * splits + split;
        if (d == D) {
            float L = 0.0f;
            if (M != -INFINITY)
                for (int w = 0; w < kTcWarps; ++w) L += l_s[w][g] * exp2f(m_s[w][g] - M);
            ml[pidx * 2] = M == -INFINITY ? -INFINITY : M * 0.6931471805599453f;
            ml[pidx * 2 + 1] = L;
        } else {
            float A = 0.0f;
            if (M != -INFINITY)
                for (int w = 0; w < kTcWarps; ++w)
                    A += acc_s[(w * NG + g) * D + d] * exp2f(m_s[w][g] - M);
            accw[pidx * D + d] = A;
        }
    }
    // the last partition to arrive merges them all (decode_kernel's merge)
    __shared__ int last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        int* c = cnt + tok_idx * gridDim.y + blockIdx.y;
        last = atomicAdd(c, 1) == used - 1;
        if (last) *c = 0;  // every partition has arrived: ready for the next launch
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    __shared__ float wsm[NG][kMaxSplits];
    __shared__ float lsm[NG];
    for (int g = warp; g < ng; g += kTcWarps) {
        const size_t part0 = (static_cast<size_t>(tok_idx) * H + kvh * G + g) * splits;
        float M = -INFINITY;
        for (int32_t s = lane; s < used; s += 32) M = fmaxf(M, __ldcg(ml + (part0 + s) * 2));
        M = warp_max(M);
        float L = 0.0f;
        for (int32_t s = lane; s < used; s += 32) {
            const float ms = __ldcg(ml + (part0 + s) * 2);
            const float e = ms == -INFINITY ? 0.0f : __expf(ms - M);
            wsm[g][s] = e;
            L += __ldcg(ml + (part0 + s) * 2 + 1) * e;
        }
        L = warp_sum(L);
        if (lane == 0) lsm[g] = L;
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < ng * D; idx += blockDim.x) {
        const int g = idx / D, d = idx % D;
        const int64_t h = kvh * G + g;
        const float* aw = accw + (static_cast<size_t>(tok_idx) * H + h) * splits * D + d;
        float A = 0.0f;
#pragma unroll 8
        for (int32_t s = 0; s < used; ++s) A += __ldcg(aw + static_cast<size_t>(s) * D) * wsm[g][s];
        const float L = lsm[g];
        static_cast<T*>(a.out)[t * a.out_ld + h * D + d] = from_f<T>(L > 0.0f ? A / L : 0.0f);
    }
}

std::atomic<int64_t> g_decode_tc_launches{0};

int decode_tc_stages() {
    const char* e = std::getenv("FARSIGHT_DECODE_TC_STAGES");
    const int n = e ? std::atoi(e) : 3;
    return n >= 2 && n <= 4 ? n : 3;
}

template <typename T, int D, int NST>
void decode_tc_prepare() {
    static const bool done = [] {
        FS_CUDA(cudaFuncSetAttribute(decode_tc_kernel<T, D, NST>,
                                     cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     decode_tc_smem_bytes<D, NST>()));
        return true;
    }();
    (void)done;
}

template <typename T, int D, int NST>
void launch_decode_tc_s(const AttnLaunch& a, const DevMeta& m, int64_t n_tokens, int64_t splits,
                        float* ml, float* accw, int* cnt, cudaStream_t st) {
    decode_tc_prepare<T, D, NST>();
    dim3 grid(static_cast<unsigned>(splits), static_cast<unsigned>(a.KVH),
              static_cast<unsigned>(n_tokens));
    launch_pdl(decode_tc_kernel<T, D, NST>, grid, dim3(kTcWarps * 32),
               static_cast<size_t>(decode_tc_smem_bytes<D, NST>()), st, "decode_tc_kernel", a,
               m, splits, ml, accw, cnt);
    FS_CUDA_LAUNCH("decode_tc_kernel");
    g_decode_tc_launches.fetch_add(1, std::memory_order_relaxed);
}

template <typename T, int D>
void launch_decode_tc(const AttnLaunch& a, const DevMeta& m, int64_t n_tokens, int64_t splits,
                      float* ml, float* accw, int* cnt, cudaStream_t st) {
    const int nst = decode_tc_stages();
    if (nst == 2) return launch_decode_tc_s<T, D, 2>(a, m, n_tokens, splits, ml, accw, cnt, st);
    if (nst == 4) return launch_decode_tc_s<T, D, 4>(a, m, n_tokens, splits, ml, accw, cnt, st);
    launch_decode_tc_s<T, D, 3>(a, m, n_tokens, splits, ml, accw, cnt, st);
}

template <typename T, int DPL>
void launch_splitk_t(const AttnLaunch& a, const DevMeta& m, int64_t n_tokens, int64_t splits,
                     float* ml, float* accw, cudaStream_t st) {
    const int64_t G = a.H / a.KVH;
    const int64_t qgroups = (G + kGMax - 1) / kGMax;
    dim3 grid(static_cast<unsigned>(splits), static_cast<unsigned>(a.KVH * qgroups),
              static_cast<unsigned>(n_tokens));
    launch_pdl(splitk_kernel<T, DPL>, grid, dim3(kSkWarps * 32), 0, st, "splitk_kernel", a, m,
               splits, ml, accw);
    FS_CUDA_LAUNCH("splitk_kernel");
}

template <typename T, int D, int GP>
void launch_decode_t(const AttnLaunch& a, const DevMeta& m, int64_t n_tokens, int64_t splits,
                     float* ml, float* accw, int* cnt, cudaStream_t st) {
    const int64_t G = a.H / a.KVH;
    const int64_t qgroups = (G + GP - 1) / GP;
    dim3 grid(static_cast<unsigned>(splits), static_cast<unsigned>(a.KVH * qgroups),
              static_cast<unsigned>(n_tokens));
    launch_pdl(decode_kernel<T, D, GP>, grid, dim3(kDecWarps * 32), 0, st, "decode_kernel", a, m,
               splits, ml, accw, cnt);
    FS_CUDA_LAUNCH("decode_kernel");
}

template <typename T, int D>
void launch_decode_g(const AttnLaunch& a, const DevMeta& m, int64_t n_tokens, int64_t splits,
                     float* ml, float* accw, int* cnt, cudaStream_t st) {
    const int64_t G = a.H / a.KVH;
    if (G == 1)
        launch_decode_t<T, D, 1>(a, m, n_tokens, splits, ml, accw, cnt, st);
    else if (G == 2)
        launch_decode_t<T, D, 2>(a, m, n_tokens, splits, ml, accw, cnt, st);
    else if (G <= 4)
        launch_decode_t<T, D, 4>(a, m, n_tokens, splits, ml, accw, cnt, st);
    else
        launch_decode_t<T, D, 8>(a, m, n_tokens, splits, ml, accw, cnt, st);
}

template <typename T>
void launch_splitk_d(const AttnLaunch& a, const DevMeta& m, int64_t n_tokens, int64_t splits,
                     void* work, int* cnt, cudaStream_t st) {
    float* ml = static_cast<float*>(work);
    float* accw = ml + n_tokens * a.H * splits * 2;
    if (a.tc) {  // decode_tc_applies() said so
        FS_CHECK(a.D == 64 || a.D == 128, "attention: the tc decode kernel needs head_dim 64/128");
        if (a.D == 64) return launch_decode_tc<T, 64>(a, m, n_tokens, splits, ml, accw, cnt, st);
        return launch_decode_tc<T, 128>(a, m, n_tokens, splits, ml, accw, cnt, st);
    }
    if (a.D == 64)  // merges its partitions itself
        return launch_decode_g<T, 64>(a, m, n_tokens, splits, ml, accw, cnt, st);
    if (a.D == 128) return launch_decode_g<T, 128>(a, m, n_tokens, splits, ml, accw, cnt, st);
    if (a.D <= 32)
        launch_splitk_t<T, 1>(a, m, n_tokens, splits, ml, accw, st);
    else if (a.D <= 64)
        launch_splitk_t<T, 2>(a, m, n_tokens, splits, ml, accw, st);
    else if (a.D <= 128)
        launch_splitk_t<T, 4>(a, m, n_tokens, splits, ml, accw, st);
    else if (a.D <= 256)
        launch_splitk_t<T, 8>(a, m, n_tokens, splits, ml, accw, st);
    else
        fail("attention: head_dim {} > 256 is not supported by the CUDA backend", a.D);
    dim3 g2(static_cast<unsigned>(n_tokens), static_cast<unsigned>(a.H));
    launch_pdl(splitk_reduce_kernel<T>, g2, dim3(a.D >= 128 ? 128 : 64), 0, st,
               "splitk_reduce_kernel", a, m, splits, static_cast<const float*>(ml),
               static_cast<const float*>(accw));
    FS_CUDA_LAUNCH("splitk_reduce_kernel");
}

}  // namespace

size_t splitk_workspace_bytes(int64_t n_tokens, int64_t H, int64_t D, int64_t splits) {
    return static_cast<size_t>(n_tokens * H * splits) * (D + 2) * sizeof(float);
}

int64_t splitk_counter_count(int64_t n_tokens, int64_t H) {
    return n_tokens * H;  // block rows per token: KVH * ceil(G / GP) <= H
}

namespace {
template <typename K>
int occupancy(K kernel, int threads, size_t smem = 0) {
    int n = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, threads, smem) != cudaSuccess) {
        cudaGetLastError();
        return 4;
    }
    return std::max(n, 1);
}
template <typename T>
int decode_occupancy_t(int64_t D, int64_t G, int tc) {  // tc: 0, else the ring depth
    constexpr int th = kDecWarps * 32;
    if (tc) {  // decode_tc_kernel (D 64/128, G 2..8): bounded by its shared-memory rings
        auto occ = [](auto kernel, int smem) { return occupancy(kernel, kTcWarps * 32, smem); };
        if (D == 64) {
            if (tc == 2) {
                decode_tc_prepare<T, 64, 2>();
                return occ(decode_tc_kernel<T, 64, 2>, decode_tc_smem_bytes<64, 2>());
            }
            if (tc == 4) {
                decode_tc_prepare<T, 64, 4>();
                return occ(decode_tc_kernel<T, 64, 4>, decode_tc_smem_bytes<64, 4>());
            }
            decode_tc_prepare<T, 64, 3>();
            return occ(decode_tc_kernel<T, 64, 3>, decode_tc_smem_bytes<64, 3>());
        }
        if (tc == 2) {
            decode_tc_prepare<T, 128, 2>();
            return occ(decode_tc_kernel<T, 128, 2>, decode_tc_smem_bytes<128, 2>());
        }
        if (tc == 4) {
            decode_tc_prepare<T, 128, 4>();
            return occ(decode_tc_kernel<T, 128, 4>, decode_tc_smem_bytes<128, 4>());
        }
        decode_tc_prepare<T, 128, 3>();
        return occ(decode_tc_kernel<T, 128, 3>, decode_tc_smem_bytes<128, 3>());
    }
    if (D == 64 || D == 128) {
        const bool d64 = D == 64;
        if (G == 1) return occupancy(d64 ? decode_kernel<T, 64, 1> : decode_kernel<T, 128, 1>, th);
        if (G == 2) return occupancy(d64 ? decode_kernel<T, 64, 2> : decode_kernel<T, 128, 2>, th);
        if (G <= 4) return occupancy(d64 ? decode_kernel<T, 64, 4> : decode_kernel<T, 128, 4>, th);
        return occupancy(d64 ? decode_kernel<T, 64, 8> : decode_kernel<T, 128, 8>, th);
    }
    const int s = kSkWarps * 32;
    if (D <= 32) return occupancy(splitk_kernel<T, 1>, s);
    if (D <= 64) return occupancy(splitk_kernel<T, 2>, s);
    if (D <= 128) return occupancy(splitk_kernel<T, 4>, s);
    return occupancy(splitk_kernel<T, 8>, s);
}
// Resident blocks per SM of the decode kernel that runs this geometry (cached).
int decode_occupancy(DType dt, int64_t D, int64_t G, int tc) {
    static std::mutex mu;
    static std::map<std::tuple<int, int64_t, int64_t, int>, int> cache;
    std::lock_guard<std::mutex> lk(mu);
    const auto key = std::make_tuple(static_cast<int>(dt), D, G, tc);
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
    const int n = dt == DType::BF16 ? decode_occupancy_t<__nv_bfloat16>(D, G, tc)
                                    : decode_occupancy_t<__half>(D, G, tc);
    cache.emplace(key, n);
    return n;
}
}  // namespace

namespace {
int64_t choose_splits_uncached(DType dt, int64_t n_tokens, int64_t H, int64_t KVH, int64_t D,
                               int64_t max_ctx, int num_sms, int tc);
}  // namespace

int64_t splitk_choose_splits(DType dt, int64_t n_tokens, int64_t H, int64_t KVH, int64_t D,
                             int64_t max_ctx, int num_sms, bool use_tc) {
    // Every layer of an eager step asks the same question: remember the last answer.
    using Key = std::tuple<int, int64_t, int64_t, int64_t, int64_t, int64_t, int, int>;
    thread_local Key last_key{-1, 0, 0, 0, 0, 0, 0, 0};
    thread_local int64_t last_splits = 1;
    // the kernel that will run: 0 decode_kernel, else the tc ring depth
    const int tc = use_tc ? decode_tc_stages() : 0;
    const auto key =
        std::make_tuple(static_cast<int>(dt), n_tokens, H, KVH, D, max_ctx, num_sms, tc);
    if (key == last_key) return last_splits;
    last_key = key;
    last_splits = choose_splits_uncached(dt, n_tokens, H, KVH, D, max_ctx, num_sms, tc);
    return last_splits;
}

namespace {
int64_t choose_splits_uncached(DType dt, int64_t n_tokens, int64_t H, int64_t KVH, int64_t D,
                               int64_t max_ctx, int num_sms, int tc) {
    const int64_t G = H / KVH;
    const int64_t base = std::max<int64_t>(1, n_tokens * KVH * ((G + kGMax - 1) / kGMax));
    const int64_t slots =
        std::max<int64_t>(1, static_cast<int64_t>(decode_occupancy(dt, D, G, tc)) * num_sms);
    int64_t cap = kMaxSplits;
    const int64_t min_part = decode_min_partition();
    if (max_ctx > 0) cap = std::min<int64_t>(cap, (max_ctx + min_part - 1) / min_part);
    cap = std::max<int64_t>(cap, 1);
    // Blocks of one launch do equal work (a full-length context each; shorter ones exit
    // early): time ~ waves / splits. Take the fewest partitions within 5% of the best.
    auto cost = [&](int64_t s) {
        return static_cast<double>((base * s + slots - 1) / slots) / static_cast<double>(s);
    };
    double best = 1e30;
    for (int64_t s = 1; s <= cap; ++s) best = std::min(best, cost(s));
    for (int64_t s = 1; s <= cap; ++s)
        if (cost(s) <= best * 1.05) return s;
    return 1;
}
}  // namespace

void launch_attention_splitk(const AttnLaunch& a, const DevMeta& m, int64_t n_tokens,
                             int64_t splits, void* work, int* counters, cudaStream_t st) {
    if (n_tokens == 0) return;
    FS_CHECK(n_tokens < 65536, "attention: too many decode tokens in one batch ({})", n_tokens);
    FS_CHECK(splits >= 1 && splits <= kMaxSplits, "attention: {} partitions", splits);
    AttnLaunch al = a;
    al.min_part = decode_min_partition();
    if (a.dt == DType::BF16)
        launch_splitk_d<__nv_bfloat16>(al, m, n_tokens, splits, work, counters, st);
    else
        launch_splitk_d<__half>(al, m, n_tokens, splits, work, counters, st);
}

namespace {
int64_t decode_tc_min_pairs() {
    const char* e = std::getenv("FARSIGHT_DECODE_TC_MIN");
    return e && e[0] ? std::atoll(e) : 16;
}
}  // namespace

int64_t decode_tc_min_ctx() {
    const char* e = std::getenv("FARSIGHT_DECODE_TC_MIN_CTX");
    return e && e[0] ? std::atoll(e) : 8192;
}

bool decode_tc_fold_rope() {
    const char* e = std::getenv("FARSIGHT_DECODE");
    return !(e != nullptr && std::string(e) == "tc_norope");
}

bool decode_tc_applies(int64_t H, int64_t KVH, int64_t D, int64_t n_tokens, int64_t max_ctx) {
    if (KVH <= 0 || H % KVH != 0) return false;
    const int64_t G = H / KVH;
    if (!(G >= 2 && G <= kTcCols && (D == 64 || D == 128))) return false;
    const char* e = std::getenv("FARSIGHT_DECODE");
    if (e && e[0]) return std::strcmp(e, "tc") == 0 || std::strcmp(e, "tc_norope") == 0;
    // automatic: few (token, kv head) pairs over short contexts leave the tc kernel's 4 warps
    // per partition short of tiles, and decode_kernel is faster there. H200, llama3-8b (8 kv
    // heads), ms per step decode_kernel / tc: ctx 1K batch 1 4.45 / 4.59, 2 4.94-5.06 /
    // 4.91-4.98, 4 5.43 / 5.14, 8 5.72 / 5.28, 16 6.28 / 5.53-5.58, 32 7.92-7.97 / 6.09-6.10;
    // batch 1 ctx 128 4.39 / 4.53, ctx 4K 4.77 / 4.78-4.80, ctx 32K 6.72 / 5.66.
    return n_tokens * KVH >= decode_tc_min_pairs() || max_ctx >= decode_tc_min_ctx();
}

int64_t decode_tc_launches() {
    return g_decode_tc_launches.load(std::memory_order_relaxed);
}

bool prefill_supported(int64_t D) {
    return D == 64 || D == 128;
}

namespace {
// Prefill kernel on Hopper: the warp-specialized sm90 kernel (attention_ws.cu) where it is
// supported (H200: 518 TFLOP/s on 16 x 4096 H32/KV8/D128 against 223 for the sm90 kernel),
// else the sm90 kernel (attention_sm90.cu). FARSIGHT_PREFILL=sm90 forces the sm90 kernel,
// FARSIGHT_PREFILL=v2 the mma.sync kernel (prefill2_kernel, the default before Hopper).
enum class PrefillEnv { Default, V2, Sm90 };
PrefillEnv prefill_env() {
    const char* pe = std::getenv("FARSIGHT_PREFILL");  // read per launch: tests switch it
    if (pe && std::strcmp(pe, "v2") == 0) return PrefillEnv::V2;
    if (pe && std::strcmp(pe, "sm90") == 0) return PrefillEnv::Sm90;
    return PrefillEnv::Default;  // unset, "", "ws"
}
// the sm90 kernel, or the ws kernel in its place (both take tiles of 128 rows)
bool prefill_takes_sm90(int64_t D, PrefillEnv env) {
    return env != PrefillEnv::V2 && (D == 64 || D == 128) && prefill_sm90_available();
}
}  // namespace

int prefill_tile_rows(int64_t D, DType /*dt: the sm90 kernel has bf16 and f16*/) {
    return prefill_takes_sm90(D, prefill_env()) ? 2 * kPrefillTileQ : kPrefillTileQ;
}

void launch_attention_prefill(const AttnLaunch& a, const DevMeta& m, cudaStream_t st) {
    if (m.num_prefill_tiles == 0) return;
    FS_CHECK(m.prefill_tile_q > 0 && m.prefill_tile_q % kPrefillTileQ == 0,
             "attention prefill: {} rows per tile", m.prefill_tile_q);
    const PrefillEnv env = prefill_env();
    if (prefill_takes_sm90(a.D, env)) {
        if (env == PrefillEnv::Default && prefill_ws_supported(a, m))
            launch_attention_prefill_ws(a, m, st);
        else
            launch_attention_prefill_sm90(a, m, st);
        return;
    }
    FS_CHECK(a.D == 64 || a.D == 128, "attention prefill: head_dim {} unsupported", a.D);
    if (a.dt == DType::BF16) {
        if (a.D == 64)
            launch_prefill2<__nv_bfloat16, 64>(a, m, st);
        else
            launch_prefill2<__nv_bfloat16, 128>(a, m, st);
    } else {
        if (a.D == 64)
            launch_prefill2<__half, 64>(a, m, st);
        else
            launch_prefill2<__half, 128>(a, m, st);
    }
}

}  // namespace farsight::cuda

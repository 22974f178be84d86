// Hopper (sm_90a) prefill attention on warpgroup MMA (wgmma). Same function as prefill2_kernel
// in attention.cu: tiles of 128 query rows of one head (m.prefill_tiles, grid (tiles, H)), keys
// and values gathered from the paged cache through the block tables, causal + sliding window,
// n_past (chunked prefill), variable-length batches; O accumulated in fp32, normalised, stored
// as T.
//
// One CTA = two consumer warpgroups (256 threads) on a tile of m.prefill_tile_q = 128 query rows
// (prefill_tile_rows): warpgroup g owns rows q0 + 64g .. q0 + 64g + 63 and both use every K/V
// tile in shared memory (loaded once per CTA by all 256 threads), which halves the L2 -> SM
// gather traffic per FLOP of 64-row tiles. The CTA walks the union of the two key ranges; a
// warpgroup skips (no wgmma, no softmax) the key tiles entirely above its last row or below its
// sliding window, but still issues its share of the copies and takes every barrier. With
// m.prefill_tile_q = 64 the kernel is still correct (warpgroup 1 then has no rows).
// In a warpgroup, warp w owns query rows 16w..16w+15, which is exactly
// the wgmma m64 register layout: per warp, the A fragment equals the mma.sync m16n8k16 A
// fragment and the f32 accumulator equals the m16n8 C fragments, n-block i in d[4i..4i+3].
//   S = Q K^T : D/16 x wgmma m64n64k16, A = Q (registers, loaded once), B = K tile (smem,
//               K-major: the head dims, i.e. the reduction dimension, are contiguous).
//   online softmax in fp32 on S (base 2, scale folded in), masks only on tiles that need them;
//   P is rounded to T and reused as the A operand in registers (the accumulator columns
//   16j..16j+15 form the A fragment of k-step j).
//   O += P V  : 4 x wgmma m64n{D}k16, A = P (registers), B = V tile (smem, MN-major: the head
//               dims, i.e. N, are contiguous) with imm-trans-b = 1.
// K/V tiles of 64 keys are copied with cp.async (16-byte chunks, zero-filled past `hi`) into
// three stages; tiles j+1, j+2 load while tile j computes.
//
// Shared-memory layout of a tile (the same for K and V): the "no swizzle" canonical layout is
// made of core matrices of 8 rows x 16 bytes (8 elements) stored as 128 contiguous bytes. A
// tile row is a key, a 16-byte chunk is 8 consecutive head dims. Chunk (key r, dim chunk c),
// r = 8g + rr, is stored at byte ((g * D/8 + c) * 8 + rr) * 16: core matrix (g, c) = keys
// 8g..8g+7 x dims 8c..8c+7 lies at (g * D/8 + c) * 128. So
//   - neighbouring core matrices along the head dims are 128 bytes apart,
//   - neighbouring core matrices along the keys are 16*D bytes apart,
// and the cp.async of chunk index idx simply writes bytes [16 idx, 16 idx + 16) (8 consecutive
// threads fill one core matrix: no bank conflicts).
//
// wgmma matrix descriptor (64 bit): bits 0-13 start address >> 4, 16-29 leading-dimension
// byte offset (LBO) >> 4, 32-45 stride-dimension byte offset (SBO) >> 4, 62-63 swizzle (0 =
// none). For the no-swizzle canonical layouts the PTX ISA writes them in CuTe notation as
//   K-major : ((8,m),(T,2k)):((1T,SBO),(1,LBO))     T = 8 elements (16 bytes)
//   MN-major: ((T,1,m),(8,k)):((1,T,SBO),(1T,LBO))
// i.e. (our "convention A") LBO = distance between core matrices adjacent along K (the
// reduction dimension), SBO = distance between core matrices adjacent along M/N, for both
// major-nesses. Hence
//   K (B of Q K^T, K = head dims, N = keys): LBO = 128,    SBO = 16*D
//   V (B of P V,   K = keys,      N = dims): LBO = 16*D,   SBO = 128
// k-step k of Q K^T starts at the K tile + 256 k (dim chunks 2k, 2k+1); k-step j of P V starts
// at the V tile + 32 D j (key groups 2j, 2j+1). The wording of the PTX tables for the MN-major
// interleaved case is ambiguous, so the (LBO, SBO) pairs are kernel arguments computed on the
// host; FARSIGHT_WGMMA_SWAP_K=1 / FARSIGHT_WGMMA_SWAP_V=1 swap them ("convention B"), and the
// GPU test CudaWgmma.DescriptorProbe checks both conventions on one wgmma against the CPU.
//
// Performance model (H200, D = 128, one 64x64 tile):
//   FLOPs per tile: 2 * 64*64*128 (S) + 2 * 64*64*128 (PV) = 2.1 MFLOP, about 512 tensor-core
//   clocks of one SM (~4096 dense bf16 FLOP/clk/SM); 4096 exp2 = 256 MUFU clocks.
//   shared memory per stage: K 16 KB + V 16 KB = 32 KB; three stages = 96 KB (D = 64: 48 KB).
//   registers per thread: O 64 + S 32 + Q 32 + P 16 = 144 live values; 256 threads at
//   __launch_bounds__(256, 1): 1 CTA (8 warps) per SM, the two warpgroups' softmax phases
//   overlap each other's wgmma (no producer warp / intra-warpgroup pipelining in this version).
//   L2 -> smem traffic: 128 FLOP per byte of K/V (64-row tiles: 64).
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <type_traits>
#include <utility>

#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/kernels.cuh"
#include "backend/cuda/wgmma.cuh"

namespace farsight::cuda {
namespace {

constexpr int kSm90Threads = 256;  // two consumer warpgroups, 64 query rows each
constexpr int kSm90Keys = 64;      // keys per tile (Bc)
constexpr int kSm90Stages = 3;     // K/V tiles in flight (1 CTA/SM: smem to spare)

// Byte strides of the two descriptors (see the header comment).
struct WgStrides {
    uint32_t k_lbo, k_sbo, v_lbo, v_sbo;
};

// Convention A: LBO = K-direction core-matrix stride, SBO = M/N-direction stride. Swapped:
// convention B. `D` is the row length of the tile in elements (the layout is the one above).
WgStrides wg_strides(int D, bool swap_k, bool swap_v) {
    const uint32_t along_dims = 128, along_keys = static_cast<uint32_t>(16 * D);
    WgStrides s{along_dims, along_keys, along_keys, along_dims};
    if (swap_k) std::swap(s.k_lbo, s.k_sbo);
    if (swap_v) std::swap(s.v_lbo, s.v_sbo);
    return s;
}

bool env_on(const char* name) {
    const char* v = std::getenv(name);
    return v && v[0] == '1';
}

// ---------------------------------------------------------------- device helpers
// wg_desc, wg_fence / wg_commit / wg_wait0, reg_fence, ex2_ftz, fence_proxy_async, Pack and
// wgmma_rs: backend/cuda/wgmma.cuh.

// ---------------------------------------------------------------- the prefill kernel
template <int D>
constexpr int sm90_tile_bytes() {
    return kSm90Keys * D * 2;
}
template <int D>
constexpr int sm90_smem_bytes() {
    return kSm90Stages * 2 * sm90_tile_bytes<D>();  // stages x (K, V)
}
template <int D>
constexpr int sm90_min_blocks() {
    return 1;
}

// grid (num_prefill_tiles, H), 256 threads, sm90_smem_bytes<D>() dynamic smem. Tiles of
// m.prefill_tile_q (128; 64 works too, warpgroup 1 then idles) query rows.
template <typename T, int D>
__global__ void __launch_bounds__(kSm90Threads, sm90_min_blocks<D>())
    prefill_sm90_kernel(AttnLaunch a, DevMeta m, WgStrides ws) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int CH = D / 8;  // 16-byte chunks per row
    constexpr int TILE = sm90_tile_bytes<D>();
    constexpr int BC = kSm90Keys;
    extern __shared__ __align__(128) uint8_t smem_raw[];

    const int wg = threadIdx.x / 128;  // warpgroup: rows q0 + 64 wg .. q0 + 64 wg + 63
    const int warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
    const int gq = lane / 4, tig = lane % 4;
    const int tile = m.num_prefill_tiles - 1 - static_cast<int>(blockIdx.x);  // heaviest first
    const int32_t sidx = m.prefill_tiles[2 * tile];
    const int32_t q0 = m.prefill_tiles[2 * tile + 1];
    const SeqSlice seq = m.seqs[sidx];
    const int64_t h = blockIdx.y;
    const int64_t kvh = h / (a.H / a.KVH);

    // key range [lo, hi) of the CTA: the union of the two warpgroups' ranges
    const int32_t q_end = min(q0 + m.prefill_tile_q, seq.q_len);  // rows [q0, q_end)
    const int32_t p_min = seq.n_past + q0, p_max = seq.n_past + q_end - 1;
    const int32_t hi = p_max + 1;
    const int32_t lo = a.window > 0 ? max(0, p_min - static_cast<int32_t>(a.window) + 1) : 0;
    // this warpgroup's rows [wq0, wq_end) and keys [w_lo, w_hi): key tiles outside are skipped
    // by the warpgroup (no wgmma, no softmax; it still loads and takes part in the barriers)
    const int32_t wq0 = q0 + 64 * wg, wq_end = min(wq0 + 64, q_end);
    const int32_t w_pmin = seq.n_past + wq0;
    const int32_t w_hi = wq_end > wq0 ? seq.n_past + wq_end : lo;  // empty: every tile skipped
    const int32_t w_lo = a.window > 0 ? max(0, w_pmin - static_cast<int32_t>(a.window) + 1) : 0;

    // this thread's two query rows (relative to the sequence's first computed token)
    const int32_t r0 = wq0 + warp * 16 + gq, r1 = r0 + 8;
    const bool v0 = r0 < q_end, v1 = r1 < q_end;
    const int32_t pos0 = seq.n_past + r0, pos1 = seq.n_past + r1;

    // Q as the wgmma A operand: per warp the mma.sync m16n8k16 A fragment of k-step kc
    uint32_t qf[D / 16][4];
    {
        const uint16_t* qkv = static_cast<const uint16_t*>(a.qkv);
        const uint16_t* q0p = qkv + (seq.q_start + r0) * a.ld + h * D;
        const uint16_t* q1p = qkv + (seq.q_start + r1) * a.ld + h * D;
#pragma unroll
        for (int kc = 0; kc < D / 16; ++kc) {
            const int c = kc * 16 + tig * 2;
            qf[kc][0] = v0 ? *reinterpret_cast<const uint32_t*>(q0p + c) : 0u;
            qf[kc][1] = v1 ? *reinterpret_cast<const uint32_t*>(q1p + c) : 0u;
            qf[kc][2] = v0 ? *reinterpret_cast<const uint32_t*>(q0p + c + 8) : 0u;
            qf[kc][3] = v1 ? *reinterpret_cast<const uint32_t*>(q1p + c + 8) : 0u;
        }
    }
    const float sl2 = a.scale * 1.4426950408889634f;  // softmax in base 2

    float o[D / 2];  // accumulator m64nD: n-block nd in o[4nd..4nd+3]
#pragma unroll
    for (int i = 0; i < D / 2; ++i) o[i] = 0.0f;
    float mr[2] = {-INFINITY, -INFINITY}, lr[2] = {0.0f, 0.0f};

    const uint16_t* kpool = static_cast<const uint16_t*>(a.k_pool) + kvh * D;
    const uint16_t* vpool = static_cast<const uint16_t*>(a.v_pool) + kvh * D;
    const size_t slot_stride = static_cast<size_t>(a.KVH) * D;
    const int32_t bs = static_cast<int32_t>(a.block_size);
    const int32_t* btab = m.block_tables + seq.block_table_offset;
    const uint32_t smem0 = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));

    // block sizes are powers of two in practice: shifts instead of integer divisions
    const bool bs_pow2 = (bs & (bs - 1)) == 0;
    const int bs_shift = __ffs(bs) - 1;

    // chunk idx -> key 8g + rr, dim chunk c; smem bytes [16 idx, 16 idx + 16) of the tile
    auto load_tile_t = [&](int stage, int32_t kt, auto pow2) {
        const uint32_t ks = smem0 + stage * 2 * TILE;
        const uint32_t vs = ks + TILE;
#pragma unroll
        for (int it = 0; it < BC * CH / kSm90Threads; ++it) {
            const int idx = it * kSm90Threads + static_cast<int>(threadIdx.x);
            const int rr = idx & 7, c = (idx >> 3) % CH, g = idx / (8 * CH);
            const int32_t i = kt + g * 8 + rr;
            const bool ok = i < hi;
            size_t off = 0;
            if (ok) {
                const int32_t blk = decltype(pow2)::value ? i >> bs_shift : i / bs;
                const int32_t in_blk = decltype(pow2)::value ? i & (bs - 1) : i % bs;
                off = (static_cast<size_t>(btab[blk]) * bs + in_blk) * slot_stride + c * 8;
            }
            cp_async16(ks + idx * 16, kpool + off, ok);
            cp_async16(vs + idx * 16, vpool + off, ok);
        }
    };
    auto load_tile = [&](int stage, int32_t kt) {
        if (bs_pow2)
            load_tile_t(stage, kt, std::true_type{});
        else
            load_tile_t(stage, kt, std::false_type{});
    };

    // kSm90Stages-stage ring: one commit group per tile (empty past hi), tile t in stage
    // t % kSm90Stages, tiles t+1 .. t+kSm90Stages-2 in flight while tile t computes
#pragma unroll
    for (int st = 0; st < kSm90Stages - 1; ++st) {
        if (lo + st * BC < hi) load_tile(st, lo + st * BC);
        cp_async_commit();
    }
    int stage = 0;
    for (int32_t kt = lo; kt < hi; kt += BC, stage = stage == kSm90Stages - 1 ? 0 : stage + 1) {
        cp_async_wait<kSm90Stages - 2>();  // this thread's copies of tile kt landed ...
        fence_proxy_async();               // ... and are visible to the async proxy (wgmma) ...
        __syncthreads();  // ... for every thread; and every thread has waited for the
                          // wgmmas of the previous tile: that tile's stage is free
        // tile kt + (kSm90Stages-1) BC into the stage of the previous tile (issued before the S
        // wgmmas: issuing them while the accumulators are in flight costs registers)
        {
            const int32_t kn = kt + (kSm90Stages - 1) * BC;
            const int ls = stage == 0 ? kSm90Stages - 1 : stage - 1;
            if (kn < hi) load_tile(ls, kn);
            cp_async_commit();
        }
        // warpgroup-uniform: tiles entirely above this warpgroup's last row or below its window
        if (kt >= w_hi || kt + BC <= w_lo) continue;
        const uint32_t ks = smem0 + stage * 2 * TILE;
        const uint32_t vs = ks + TILE;

        // S = Q K^T (64 rows x 64 keys), K-major B: k-step kc = dim chunks 2kc, 2kc+1. The
        // first k-step ignores the accumulator (scale-d = 0): s needs no initial value, so it
        // is not live between tiles.
        float s[BC / 2];  // accumulator m64n64: n-block nt in s[4nt..4nt+3]
        wg_fence();
#pragma unroll
        for (int kc = 0; kc < D / 16; ++kc)
            wgmma_rs<T, 64, 0>(s, qf[kc], wg_desc(ks + kc * 256, ws.k_lbo, ws.k_sbo), kc > 0);
        wg_commit();
        wg_wait0();
        reg_fence(s);

        // mask + online softmax (rows r0: s[4nt], s[4nt+1]; r1: s[4nt+2], s[4nt+3]). The row
        // maximum is taken on the raw scores (the scale is positive); p = 2^(s*sl2 - m) is
        // one FFMA and one MUFU.EX2 per score (ex2.approx.ftz: exp2f costs three more
        // instructions per score for denormal results). mr / muse are in scaled (base-2) units.
        const bool need_mask = a.window > 0 || kt + BC - 1 > w_pmin || !v0 || !v1;
        float mx[2] = {-INFINITY, -INFINITY};
        if (need_mask) {
#pragma unroll
            for (int nt = 0; nt < BC / 8; ++nt) {
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int32_t key = kt + nt * 8 + tig * 2 + (e & 1);
                    const bool rv = e < 2 ? v0 : v1;
                    const int32_t pos = e < 2 ? pos0 : pos1;
                    const bool ok = rv && key <= pos && (a.window <= 0 || pos - key < a.window);
                    s[4 * nt + e] = ok ? s[4 * nt + e] : -INFINITY;
                    mx[e / 2] = fmaxf(mx[e / 2], s[4 * nt + e]);
                }
            }
        } else {
#pragma unroll
            for (int i = 0; i < BC / 2; ++i) mx[(i >> 1) & 1] = fmaxf(mx[(i >> 1) & 1], s[i]);
        }
        float alpha[2], rs[2];
        online_softmax_tile(s, mx, mr, sl2, alpha, rs);
#pragma unroll
        for (int r = 0; r < 2; ++r) lr[r] = lr[r] * alpha[r] + rs[r];
#pragma unroll
        for (int i = 0; i < D / 2; ++i) o[i] *= alpha[(i >> 1) & 1];

        // P as the A operand of k-step j (keys 16j..16j+15) = accumulator n-blocks 2j, 2j+1
        uint32_t pa[BC / 16][4];
        pack_p<T>(s, pa);

        // O += P V, MN-major B (imm-trans-b = 1): k-step j = key groups 2j, 2j+1
        reg_fence(o);
#pragma unroll
        for (int j = 0; j < BC / 16; ++j) reg_fence(pa[j]);
        wg_fence();
#pragma unroll
        for (int j = 0; j < BC / 16; ++j)
            wgmma_rs<T, D, 1>(o, pa[j], wg_desc(vs + j * 32 * D, ws.v_lbo, ws.v_sbo), 1);
        wg_commit();
        wg_wait0();  // O is read next tile, and this stage is overwritten after the barrier
        reg_fence(o);
    }

    finish_row_sums(lr);
    // q_start read again (volatile): otherwise the compiler keeps the row index of the Q load
    // alive across the loop, which at 168 registers means a spill
    const int32_t q_start = *reinterpret_cast<const volatile int32_t*>(&m.seqs[sidx].q_start);
    T* out = static_cast<T*>(a.out);
    T* out0 = out + (q_start + r0) * a.out_ld + h * D + tig * 2;
    store_o_rows<T, D>(o, lr, out0, out0 + 8 * a.out_ld, v0, v1);
#else
    __trap();  // never launched: prefill_sm90_available() is false without sm_90a code
#endif
}

template <typename T, int D>
void launch_sm90(const AttnLaunch& a, const DevMeta& m, cudaStream_t st) {
    constexpr int smem = sm90_smem_bytes<D>();
    static std::once_flag attr_once;  // per instantiation; the attribute is per device function
    std::call_once(attr_once, [] {
        FS_CUDA(cudaFuncSetAttribute(prefill_sm90_kernel<T, D>,
                                     cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
        // the largest shared-memory carve-out, so that sm90_min_blocks<D>() CTAs fit an SM
        FS_CUDA(cudaFuncSetAttribute(prefill_sm90_kernel<T, D>,
                                     cudaFuncAttributePreferredSharedMemoryCarveout,
                                     cudaSharedmemCarveoutMaxShared));
    });
    const WgStrides ws =
        wg_strides(D, env_on("FARSIGHT_WGMMA_SWAP_K"), env_on("FARSIGHT_WGMMA_SWAP_V"));
    dim3 grid(static_cast<unsigned>(m.num_prefill_tiles), static_cast<unsigned>(a.H));
    prefill_sm90_kernel<T, D><<<grid, kSm90Threads, smem, st>>>(a, m, ws);
    FS_CUDA_LAUNCH("prefill_sm90_kernel");
}

// ---------------------------------------------------------------- probes
__global__ void sm90_feature_probe_kernel(int* out) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    *out = 1;
#else
    *out = 0;
#endif
}

// One wgmma m64n64k16 (bf16): A [64][16] row-major from registers, B [16][64] (k rows) stored
// in shared memory in the tile layout above, K-major (MN = false: as the K tile with D = 16,
// chunk = 8 consecutive k of one n) or MN-major (as the V tile with D = 64, chunk = 8
// consecutive n of one k). d: [64][64] row-major.
template <bool MN>
__global__ void __launch_bounds__(128)
    wgmma_probe_kernel(const uint16_t* a, const uint16_t* b, float* d, uint32_t lbo, uint32_t sbo) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    // 2 KB of data; 16 KB so that the wrong convention still reads inside the allocation
    __shared__ __align__(128) uint16_t bsm[8192];
    const int t = static_cast<int>(threadIdx.x);
    const int warp = t / 32, lane = t % 32, gq = lane / 4, tig = lane % 4;
    for (int i = t; i < 8192; i += 128) bsm[i] = 0;
    __syncthreads();
    {
        const int idx = t;  // 128 chunks of 8 elements
        const int rr = idx & 7;
        for (int e = 0; e < 8; ++e) {
            if (!MN) {  // chunk (n = 8g + rr, k chunk c), CH = 2
                const int c = (idx >> 3) & 1, g = idx >> 4, n = g * 8 + rr;
                bsm[idx * 8 + e] = b[(c * 8 + e) * 64 + n];
            } else {  // chunk (k = 8g + rr, n chunk c), CH = 8
                const int c = (idx >> 3) & 7, g = idx >> 6, k = g * 8 + rr;
                bsm[idx * 8 + e] = b[k * 64 + c * 8 + e];
            }
        }
    }
    uint32_t af[4];
    {
        const int r0 = warp * 16 + gq, r1 = r0 + 8, c = tig * 2;
        auto ld = [&](int r, int col) {
            return static_cast<uint32_t>(a[r * 16 + col]) |
                   (static_cast<uint32_t>(a[r * 16 + col + 1]) << 16);
        };
        af[0] = ld(r0, c);
        af[1] = ld(r1, c);
        af[2] = ld(r0, c + 8);
        af[3] = ld(r1, c + 8);
    }
    fence_proxy_async();
    __syncthreads();
    float acc[32];
#pragma unroll
    for (int i = 0; i < 32; ++i) acc[i] = 0.0f;
    const uint32_t base = static_cast<uint32_t>(__cvta_generic_to_shared(bsm));
    reg_fence(acc);
    reg_fence(af);
    wg_fence();
    wgmma_rs<__nv_bfloat16, 64, MN ? 1 : 0>(acc, af, wg_desc(base, lbo, sbo), 0);
    wg_commit();
    wg_wait0();
    reg_fence(acc);
    const int r0 = warp * 16 + gq;
#pragma unroll
    for (int nb = 0; nb < 8; ++nb) {
        const int c = nb * 8 + tig * 2;
        d[r0 * 64 + c] = acc[4 * nb + 0];
        d[r0 * 64 + c + 1] = acc[4 * nb + 1];
        d[(r0 + 8) * 64 + c] = acc[4 * nb + 2];
        d[(r0 + 8) * 64 + c + 1] = acc[4 * nb + 3];
    }
#else
    __trap();
#endif
}

// Runs `f` with this thread's stream-capture mode relaxed (the probes allocate memory and
// synchronise, which a capture in thread-local mode would otherwise refuse).
template <typename F>
void relaxed_capture(F&& f) {
    struct Restore {
        cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
        ~Restore() { cudaThreadExchangeStreamCaptureMode(&mode); }
    } r;
    FS_CUDA(cudaThreadExchangeStreamCaptureMode(&r.mode));
    f();
}

}  // namespace

bool prefill_sm90_available() {
    static const bool avail = [] {
        int dev = 0;
        cudaDeviceProp prop{};
        if (cudaGetDevice(&dev) != cudaSuccess ||
            cudaGetDeviceProperties(&prop, dev) != cudaSuccess)
            return false;
        if (prop.major != 9 || prop.minor != 0) return false;
        int got = 0;
        relaxed_capture([&] {
            cudaStream_t s = nullptr;
            FS_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
            int* flag = nullptr;
            FS_CUDA(cudaMalloc(&flag, sizeof(int)));
            sm90_feature_probe_kernel<<<1, 1, 0, s>>>(flag);
            FS_CUDA_LAUNCH("sm90_feature_probe_kernel");
            FS_CUDA(cudaMemcpyAsync(&got, flag, sizeof(int), cudaMemcpyDeviceToHost, s));
            FS_CUDA(cudaStreamSynchronize(s));
            FS_CUDA(cudaFree(flag));
            FS_CUDA(cudaStreamDestroy(s));
        });
        return got == 1;
    }();
    return avail;
}

void launch_attention_prefill_sm90(const AttnLaunch& a, const DevMeta& m, cudaStream_t st) {
    if (m.num_prefill_tiles == 0) return;
    FS_CHECK(a.D == 64 || a.D == 128, "prefill_sm90: head_dim {} unsupported", a.D);
    FS_CHECK(m.prefill_tile_q == 64 || m.prefill_tile_q == 128, "prefill_sm90: {} rows per tile",
             m.prefill_tile_q);
    if (a.dt == DType::BF16) {
        if (a.D == 64)
            launch_sm90<__nv_bfloat16, 64>(a, m, st);
        else
            launch_sm90<__nv_bfloat16, 128>(a, m, st);
    } else {
        if (a.D == 64)
            launch_sm90<__half, 64>(a, m, st);
        else
            launch_sm90<__half, 128>(a, m, st);
    }
}

bool wgmma_probe_sm90(bool mn_major, bool swapped, const uint16_t* a, const uint16_t* b, float* d) {
    if (!prefill_sm90_available()) return false;
    // the strides the prefill kernel would use: K tile with D = 16 / V tile with D = 64
    const WgStrides ws = wg_strides(mn_major ? 64 : 16, swapped, swapped);
    const uint32_t lbo = mn_major ? ws.v_lbo : ws.k_lbo, sbo = mn_major ? ws.v_sbo : ws.k_sbo;
    DeviceBuffer da(64 * 16 * 2), db(16 * 64 * 2), dd(64 * 64 * 4);
    FS_CUDA(cudaMemcpy(da.get(), a, 64 * 16 * 2, cudaMemcpyHostToDevice));
    FS_CUDA(cudaMemcpy(db.get(), b, 16 * 64 * 2, cudaMemcpyHostToDevice));
    if (mn_major)
        wgmma_probe_kernel<true>
            <<<1, 128>>>(da.as<uint16_t>(), db.as<uint16_t>(), dd.as<float>(), lbo, sbo);
    else
        wgmma_probe_kernel<false>
            <<<1, 128>>>(da.as<uint16_t>(), db.as<uint16_t>(), dd.as<float>(), lbo, sbo);
    FS_CUDA_LAUNCH("wgmma_probe_kernel");
    FS_CUDA(cudaMemcpy(d, dd.get(), 64 * 64 * 4, cudaMemcpyDeviceToHost));
    return true;
}

}  // namespace farsight::cuda

// Hopper (sm_90a) prefill attention, warp-specialized in the FlashAttention-3 style
// (FARSIGHT_PREFILL=ws). Same function as prefill_sm90_kernel (attention_sm90.cu): tiles of
// m.prefill_tile_q = 128 query rows of one head (grid (m.num_prefill_tiles, H), heaviest tile of
// each sequence first), keys/values gathered from the paged cache through the block tables,
// causal + sliding window, n_past (chunked prefill), variable-length batches, GQA, O in fp32,
// normalised, stored as T. head_dim 64 / 128, bf16 / f16, block sizes 16 / 32 / 64 / 128; the
// launcher (attention.cu) falls back to the sm90 kernel for anything else.
//
// What runs where (CTA = 3 warpgroups, 384 threads, __launch_bounds__(384, 1), 1 CTA per SM):
//   warpgroup 0 = producer (setmaxnreg.dec to kWsProducerRegs). Warp 0 walks the CTA's key tiles
//     of kWsKeys = 128 keys: for tile j it waits on empty_k[j % ST], arms full_k[j % ST] with
//     arrive.expect_tx(128 * D * 2 bytes), and its lanes issue one TMA (cp.async.bulk.tensor.2d)
//     per (KV block, 64-dim half) of the tile (bs 16, D 128: 16 TMAs for K, 16 for V), then the
//     same for V with empty_v / full_v. The block-table entries of tile j+1 are loaded (one per
//     lane) before the waits of tile j. The last tile of a CTA, when it reaches past the
//     CTA's last key `hi` (keys there may never have been written: NaN bits would poison P.V
//     even with P = 0), is instead loaded by all 128 producer threads with cp.async (zero-fill
//     past hi, the same swizzled layout), cp.async.wait_all, fence.proxy.async, a producer
//     named barrier, then one plain mbarrier.arrive on full. Warps 1-3 do nothing else.
//   warpgroups 1, 2 = consumers (setmaxnreg.inc to kWsConsumerRegs), 64 query rows each (warp w:
//     rows 16w..16w+15, the wgmma m64 layout). Each first copies its Q rows (zeros past the
//     sequence) into shared memory in the 128B-swizzled K-major layout, then for every key tile
//     of the CTA (both consumers walk the same tiles; a tile entirely masked for one of them is
//     computed and masked away, which keeps the barrier counts uniform):
//        wait full_k[j], full_v[j-1]; [ping-pong: bar.sync own id]
//        issue S_j = Q K_j^T (SS wgmma m64n128k16, D/16 k-steps), commit
//        issue O += P_{j-1} V_{j-1} (RS wgmma m64nDk16, 8 k-steps), commit
//        [ping-pong: bar.arrive the other consumer's id]
//        wait_group 1 -> S_j done: release K_j (empty_k arrive, lane 0 of each warp)
//        mask (boundary tiles only), online softmax of S_j in base 2 with ex2.approx
//        wait_group 0 -> P_{j-1} V_{j-1} done: release V_{j-1}; O *= alpha; P_j = T(S_j)
//     i.e. FA3's intra-warpgroup overlap (softmax of S_j under the P V GEMM of tile j-1) and
//     inter-warpgroup ping-pong (named barriers 4 and 5, 256 threads: consumer 0 issues its
//     GEMMs, then consumer 1, while the other one runs its softmax). After the last tile: the
//     last P V, then O / l stored as T from registers.
// Barriers: per stage s < ST: full_k[s], full_v[s] (count 1: the producer's arrive(.expect_tx);
// the TMA bytes complete the phase), empty_k[s], empty_v[s] (count 8: lane 0 of each consumer
// warp, after its wgmma.wait_group). Tile j uses stage j % ST in round r = j / ST; consumers wait
// full with parity r & 1, the producer waits empty with parity (r & 1) ^ 1 (round 0 passes at
// once). Named barriers: 1 producer warpgroup (tail tile), 2 / 3 consumer 0 / 1 (Q stored),
// 4 / 5 ping-pong. No __syncthreads after the barrier initialisation.
//
// Shared memory (base rounded up to 1024 bytes: the 128B swizzle atom is 8 rows x 128 bytes):
//   Q: 2 x 64 rows x D (32 KB at D 128), K: ST x 128 keys x D, V: ST x 128 keys x D (32 KB per
//   tile at D 128), then 4 ST mbarriers. D 128: ST = 2 -> 160 KB (FARSIGHT_WS_STAGES=3: 224 KB);
//   D 64: ST = 3 -> 112 KB. A K / V tile is stored as D/64 "halves" (64 dims = 128 bytes per
//   key row) of 128 rows x 128 bytes; 16-byte chunk c of row r sits at r*128 + ((c ^ (r%8))*16)
//   (what TMA's CU_TENSOR_MAP_SWIZZLE_128B writes into a 1024-aligned box, and what the wgmma
//   128B-swizzle canonical layouts read). Q uses the same layout with 64 rows per half.
// wgmma descriptors (swizzle mode 1 = 128B in bits 62-63, base offset 0):
//   K-major (Q as A and K as B of S = Q K^T): SBO = 1024 (next 8 rows), LBO unused (16); k-step
//     kk starts at half (kk / 4) + 32 * (kk % 4) bytes (the hardware applies the XOR).
//   MN-major (V as B of O += P V, imm-trans-b 1): canonical ((T,8,m),(8,k)):((1,T,LBO),(8T,SBO)):
//     LBO = 128 * 128 bytes (the next 64 dims = the next half), SBO = 1024 (the next 8 keys);
//     k-step j (keys 16j..16j+15) starts at the V tile + 2048 j. FARSIGHT_WS_SWAP_V=1 swaps the
//     two (CudaWgmma.WsTmaProbe checks both on the GPU).
// Registers: consumer O 64 + S 64 + P 32 (the P of tile j-1 stays live while its GEMM runs)
//   + ~40 of state at D 128; ptxas reports the launch-time figure (168 = 65536 / 384).
//   setmaxnreg: producer 40, consumers 232 (40*128 + 232*256 = 64512 <= 65536).
#include <cuda.h>          // CUtensorMap & co (types only: libcuda is reached through the runtime)
#include <cudaTypedefs.h>  // PFN_cuTensorMapEncodeTiled_v12000

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <utility>

#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/kernels.cuh"
#include "backend/cuda/wgmma.cuh"

namespace farsight::cuda {
namespace {

constexpr int kWsThreads = 384;       // producer + 2 consumer warpgroups
constexpr int kWsKeys = 128;          // keys per K/V tile (BN)
constexpr int kWsRows = 64;           // query rows per consumer warpgroup
constexpr int kWsProducerRegs = 40;   // setmaxnreg.dec
constexpr int kWsConsumerRegs = 232;  // setmaxnreg.inc
static_assert(kWsProducerRegs * 128 + 2 * kWsConsumerRegs * 128 <= 65536, "register file");

template <int D, int ST>
struct WsLayout {
    static constexpr int kTile = kWsKeys * D * 2;  // one K or V tile: D/64 halves of 128 x 128 B
    static constexpr int kQwg = kWsRows * D * 2;   // one consumer's Q: D/64 halves of 64 x 128 B
    static constexpr int kOffK = 2 * kQwg;
    static constexpr int kOffV = kOffK + ST * kTile;
    static constexpr int kOffBar = kOffV + ST * kTile;
    static constexpr int kBytes = kOffBar + 4 * ST * 8;
    static constexpr int kSmem = kBytes + 1024;  // the base is rounded up to 1024 at run time
    static_assert(kOffK % 1024 == 0 && kOffV % 1024 == 0 && kTile % 1024 == 0, "alignment");
    static_assert(kSmem <= 232448, "shared memory per block");
};

// V descriptor strides (see the header comment); swapped by FARSIGHT_WS_SWAP_V=1.
struct WsDesc {
    uint32_t v_lbo, v_sbo;
};
WsDesc ws_desc(bool swap_v) {
    WsDesc d{kWsKeys * 128, 1024};
    if (swap_v) std::swap(d.v_lbo, d.v_sbo);
    return d;
}

bool ws_env_on(const char* name) {
    const char* v = std::getenv(name);
    return v && v[0] == '1';
}

std::atomic<int64_t> g_ws_launches{0};

// ---------------------------------------------------------------- device helpers (sm_90a)
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// Named barrier ids (0 is __syncthreads)
constexpr int kBarProducer = 1;
constexpr int kBarQ = 2;     // + consumer index: the consumer's Q is stored
constexpr int kBarTurn = 4;  // + consumer index: "this consumer may issue its GEMMs"

__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_fence_init() {
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
    asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.shared::cta.b64 st, [%0];\n}\n" ::"r"(bar)
                 : "memory");
}
__device__ __forceinline__ void mbar_arrive_tx(uint32_t bar, uint32_t bytes) {
    asm volatile(
        "{\n.reg .b64 st;\nmbarrier.arrive.expect_tx.shared::cta.b64 st, [%0], %1;\n}\n" ::"r"(bar),
        "r"(bytes)
        : "memory");
}
// Returns once the phase of parity `parity` has completed (acquire, CTA scope).
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
    uint32_t done = 0;
    do {
        asm volatile(
            "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
            "selp.u32 %0, 1, 0, p;\n}\n"
            : "=r"(done)
            : "r"(bar), "r"(parity)
            : "memory");
    } while (!done);
}
// 2-D TMA load of one box into shared memory, completing `bytes` on the mbarrier.
__device__ __forceinline__ void tma_load_2d(uint32_t dst, const CUtensorMap* map, int32_t c0,
                                            int32_t c1, uint32_t bar) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
        " [%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst),
        "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(bar)
        : "memory");
}
__device__ __forceinline__ void tma_prefetch_map(const CUtensorMap* map) {
    asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(map)) : "memory");
}
__device__ __forceinline__ void named_sync(int id, int n) {
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(n) : "memory");
}
__device__ __forceinline__ void named_arrive(int id, int n) {
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(n) : "memory");
}
template <int R>
__device__ __forceinline__ void maxnreg_inc() {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(R));
}
template <int R>
__device__ __forceinline__ void maxnreg_dec() {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(R));
}
template <int N>
__device__ __forceinline__ void wg_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void st_shared_v4(uint32_t addr, const uint4& v) {
    asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};\n" ::"r"(addr), "r"(v.x), "r"(v.y),
                 "r"(v.z), "r"(v.w)
                 : "memory");
}
// Byte offset of 16-byte chunk c (0..7) of row r in a 128B-swizzled region of 128-byte rows.
__device__ __forceinline__ uint32_t sw128(int r, int c) {
    return static_cast<uint32_t>(r * 128 + ((c ^ (r & 7)) << 4));
}
// wgmma matrix descriptor with the 128-byte swizzle (mode 1 in bits 62-63), base offset 0.
__device__ __forceinline__ uint64_t desc_sw128(uint32_t smem_addr, uint32_t lbo, uint32_t sbo) {
    return static_cast<uint64_t>((smem_addr & 0x3FFFF) >> 4) |
           (static_cast<uint64_t>((lbo & 0x3FFFF) >> 4) << 16) |
           (static_cast<uint64_t>((sbo & 0x3FFFF) >> 4) << 32) | (1ull << 62);
}

// d (64 x 128, f32) = A (64 x 16, smem descriptor, K-major) * B (16 x 128, smem descriptor,
// K-major) + (scale_d ? d : 0)
#define FS_WS_SS_N128(TY)                                                                      \
    asm volatile(                                                                              \
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"                                           \
        "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY                               \
        " {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22," \
        "%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43," \
        "%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63},"    \
        " %64, %65, p, 1, 1, 0, 0;\n}\n"                                                       \
        : FS_F64(d)                                                                            \
        : "l"(da), "l"(db), "r"(scale_d))

template <typename T>
__device__ __forceinline__ void wgmma_ss_n128(float (&d)[64], uint64_t da, uint64_t db,
                                              int scale_d) {
    if constexpr (std::is_same_v<T, __nv_bfloat16>)
        FS_WS_SS_N128("bf16");
    else
        FS_WS_SS_N128("f16");
}

// The TMA loads of one K or V tile (kWsKeys keys = kWsKeys / bs blocks, D / 64 halves), issued
// by the lanes of one warp: lane t < (kWsKeys / bs) * (D / 64) loads block t / (D/64) (physical
// block `blk`, read by the caller from the block table) and half t % (D/64).
template <int D>
__device__ __forceinline__ void ws_tma_tile(const CUtensorMap* map, uint32_t dst, uint32_t bar,
                                            int lane, int tasks, int32_t blk, int32_t bs,
                                            int32_t col0) {
    constexpr int HALVES = D / 64;
    if (lane < tasks) {
        const int i = lane / HALVES, hh = lane % HALVES;
        tma_load_2d(dst + hh * (kWsKeys * 128) + i * bs * 128, map, col0 + hh * 64, blk * bs, bar);
    }
}

// This consumer thread's share (t = 0..127) of the warpgroup's Q rows: rows [0, nrows) of
// qkv[(row0 + r) * ld + col0 ...], zeros after, into the swizzled K-major layout at qs.
template <int D>
__device__ __forceinline__ void ws_store_q(uint32_t qs, const uint16_t* qkv, int64_t ld,
                                           int64_t col0, int64_t row0, int nrows, int t) {
    constexpr int CH = D / 8;
#pragma unroll
    for (int it = 0; it < kWsRows * CH / 128; ++it) {
        const int idx = it * 128 + t;
        const int r = idx / CH, c8 = idx % CH;
        uint4 v = make_uint4(0u, 0u, 0u, 0u);
        if (r < nrows) v = *reinterpret_cast<const uint4*>(qkv + (row0 + r) * ld + col0 + c8 * 8);
        st_shared_v4(qs + (c8 / 8) * (kWsRows * 128) + sw128(r, c8 % 8), v);
    }
}

// S (64 x 128 keys) = Q K^T, both operands K-major in shared memory; the first k-step ignores
// the accumulator.
template <typename T, int D>
__device__ __forceinline__ void ws_gemm_s(float (&s)[64], uint32_t qs, uint32_t ks) {
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
        const uint64_t da = desc_sw128(qs + (kk / 4) * (kWsRows * 128) + (kk % 4) * 32, 16, 1024);
        const uint64_t db = desc_sw128(ks + (kk / 4) * (kWsKeys * 128) + (kk % 4) * 32, 16, 1024);
        wgmma_ss_n128<T>(s, da, db, kk > 0);
    }
}

// O (64 x D) += P (64 x 128 keys, registers) V (128 keys x D, MN-major in shared memory).
template <typename T, int D>
__device__ __forceinline__ void ws_gemm_pv(float (&o)[D / 2], const uint32_t (&pa)[kWsKeys / 16][4],
                                           uint32_t vs, const WsDesc& wd) {
#pragma unroll
    for (int j = 0; j < kWsKeys / 16; ++j)
        wgmma_rs<T, D, 1>(o, pa[j], desc_sw128(vs + j * 2048, wd.v_lbo, wd.v_sbo), 1);
}
#endif  // __CUDA_ARCH_FEAT_SM90_ALL

// ---------------------------------------------------------------- the kernel
template <int D>
constexpr int ws_stages_default() {
    return D == 128 ? 2 : 3;
}

// grid (num_prefill_tiles, H), kWsThreads threads, WsLayout<D, ST>::kSmem dynamic smem.
template <typename T, int D, int ST>
__global__ void __launch_bounds__(kWsThreads, 1)
    prefill_ws_kernel(AttnLaunch a, DevMeta m, const __grid_constant__ CUtensorMap tmk,
                      const __grid_constant__ CUtensorMap tmv, WsDesc wd) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    using L = WsLayout<D, ST>;
    constexpr int BN = kWsKeys;
    extern __shared__ __align__(1024) uint8_t smem_raw[];
    const uint32_t base =
        (static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw)) + 1023u) & ~1023u;
    const uint32_t sQ = base, sK = base + L::kOffK, sV = base + L::kOffV, sBar = base + L::kOffBar;
    auto full_k = [&](int s) { return sBar + 8u * s; };
    auto full_v = [&](int s) { return sBar + 8u * (ST + s); };
    auto empty_k = [&](int s) { return sBar + 8u * (2 * ST + s); };
    auto empty_v = [&](int s) { return sBar + 8u * (3 * ST + s); };

    const int wg = static_cast<int>(threadIdx.x) / 128;
    const int tile = m.num_prefill_tiles - 1 - static_cast<int>(blockIdx.x);  // heaviest first
    const int32_t sidx = m.prefill_tiles[2 * tile];
    const int32_t q0 = m.prefill_tiles[2 * tile + 1];
    const SeqSlice seq = m.seqs[sidx];
    const int64_t h = blockIdx.y;
    const int64_t kvh = h / (a.H / a.KVH);
    const int32_t window = static_cast<int32_t>(a.window);

    // keys [lo, hi) of the CTA (the union of the two consumers' ranges), walked in tiles of BN
    // keys aligned to BN (whole KV blocks: bs divides BN) from kt0
    const int32_t q_end = min(q0 + m.prefill_tile_q, seq.q_len);  // rows [q0, q_end)
    const int32_t p_min = seq.n_past + q0, p_max = seq.n_past + q_end - 1;
    const int32_t hi = p_max + 1;
    const int32_t lo = window > 0 ? max(0, p_min - window + 1) : 0;
    const int32_t kt0 = lo & ~(BN - 1);
    const int nt = (hi - kt0 + BN - 1) / BN;  // >= 1

    if (threadIdx.x == 0) {
        for (int s = 0; s < ST; ++s) {
            mbar_init(full_k(s), 1);
            mbar_init(full_v(s), 1);
            mbar_init(empty_k(s), 8);
            mbar_init(empty_v(s), 8);
        }
        mbar_fence_init();
    }
    __syncthreads();

    if (wg == 0) {
        // ------------------------------------------------------------ producer
        maxnreg_dec<kWsProducerRegs>();
        const int ptid = static_cast<int>(threadIdx.x), lane = ptid % 32;
        const int32_t bs = static_cast<int32_t>(a.block_size);  // 16 / 32 / 64 / 128
        const int bs_shift = __ffs(bs) - 1;
        const int32_t* btab = m.block_tables + seq.block_table_offset;
        const bool tail = kt0 + nt * BN > hi;  // the last tile holds keys >= hi
        const int n_tma = tail ? nt - 1 : nt;
        const int32_t col0 = static_cast<int32_t>(kvh * D);
        if (ptid < 32) {
            const int nblk = BN >> bs_shift;
            const int tasks = nblk * (D / 64);
            const int32_t b0 = kt0 >> bs_shift;
            if (lane == 0) {
                tma_prefetch_map(&tmk);
                tma_prefetch_map(&tmv);
            }
            int32_t cur = lane < tasks && n_tma > 0 ? btab[b0 + lane / (D / 64)] : 0;
            for (int j = 0; j < n_tma; ++j) {
                // the next tile's block-table entries, loaded while this tile waits
                const int32_t nxt =
                    lane < tasks && j + 1 < n_tma ? btab[b0 + (j + 1) * nblk + lane / (D / 64)] : 0;
                const int s = j % ST;
                const uint32_t par = ((j / ST) & 1) ^ 1;
                mbar_wait(empty_k(s), par);
                if (lane == 0) mbar_arrive_tx(full_k(s), L::kTile);
                __syncwarp();
                ws_tma_tile<D>(&tmk, sK + s * L::kTile, full_k(s), lane, tasks, cur, bs, col0);
                mbar_wait(empty_v(s), par);
                if (lane == 0) mbar_arrive_tx(full_v(s), L::kTile);
                __syncwarp();
                ws_tma_tile<D>(&tmv, sV + s * L::kTile, full_v(s), lane, tasks, cur, bs, col0);
                cur = nxt;
            }
        }
        if (tail) {
            // all 128 producer threads: cp.async with zero fill past hi, then one arrive
            constexpr int CH = D / 8;
            const int j = nt - 1, s = j % ST;
            const uint32_t par = ((j / ST) & 1) ^ 1;
            const int32_t kt = kt0 + j * BN;
            const size_t slot_stride = static_cast<size_t>(a.KVH) * D;
            for (int kv = 0; kv < 2; ++kv) {
                if (ptid < 32) mbar_wait(kv == 0 ? empty_k(s) : empty_v(s), par);
                named_sync(kBarProducer, 128);  // the stage is free for every producer thread
                fence_proxy_async();            // (it was last read by wgmma: async proxy)
                const uint16_t* pool =
                    static_cast<const uint16_t*>(kv == 0 ? a.k_pool : a.v_pool) + col0;
                const uint32_t dst = (kv == 0 ? sK : sV) + s * L::kTile;
#pragma unroll 4
                for (int it = 0; it < BN * CH / 128; ++it) {
                    const int idx = it * 128 + ptid;
                    const int r = idx / CH, c8 = idx % CH;
                    const int32_t key = kt + r;
                    const bool ok = key < hi;
                    size_t off = 0;
                    if (ok)
                        off = (static_cast<size_t>(btab[key >> bs_shift]) * bs + (key & (bs - 1))) *
                                  slot_stride +
                              c8 * 8;
                    cp_async16(dst + (c8 / 8) * (BN * 128) + sw128(r, c8 % 8), pool + off, ok);
                }
                cp_async_commit();
                cp_async_wait<0>();
                fence_proxy_async();  // this thread's copies -> visible to wgmma (async proxy)
                named_sync(kBarProducer, 128);
                if (ptid == 0) mbar_arrive(kv == 0 ? full_k(s) : full_v(s));
            }
        }
        return;
    }

    // ---------------------------------------------------------------- consumers
    maxnreg_inc<kWsConsumerRegs>();
    const int cg = wg - 1;  // consumer index: rows q0 + 64 cg .. q0 + 64 cg + 63
    const int t = static_cast<int>(threadIdx.x) - 128 * wg;
    const int warp = t / 32, lane = t % 32, gq = lane / 4, tig = lane % 4;
    const uint32_t sQw = sQ + cg * L::kQwg;

    const int32_t wq0 = q0 + kWsRows * cg;
    const int32_t wq_end = min(wq0 + kWsRows, q_end);  // <= wq0: no rows (all masked)
    ws_store_q<D>(sQw, static_cast<const uint16_t*>(a.qkv), a.ld, h * D,
                  static_cast<int64_t>(seq.q_start) + wq0, wq_end - wq0, t);
    fence_proxy_async();  // generic stores of Q -> visible to wgmma
    named_sync(kBarQ + cg, 128);
    if (cg == 1) named_arrive(kBarTurn + 0, 256);  // consumer 0 issues first

    // this thread's two query rows (relative to the sequence's first computed token)
    const int32_t r0 = wq0 + warp * 16 + gq, r1 = r0 + 8;
    const bool v0 = r0 < q_end, v1 = r1 < q_end;
    const int32_t pos0 = seq.n_past + r0, pos1 = seq.n_past + r1;
    const int32_t w_pmin = seq.n_past + wq0, w_pmax = seq.n_past + wq_end - 1;
    const float sl2 = a.scale * 1.4426950408889634f;  // softmax in base 2

    float o[D / 2];
#pragma unroll
    for (int i = 0; i < D / 2; ++i) o[i] = 0.0f;
    float mr[2] = {-INFINITY, -INFINITY}, lr[2] = {0.0f, 0.0f};
    float s[BN / 2];          // accumulator m64n128: n-block nb in s[4nb..4nb+3]
    uint32_t pa[BN / 16][4];  // P of the previous tile as the A operand of P V

    auto turn_sync = [&] { named_sync(kBarTurn + cg, 256); };
    auto turn_pass = [&] { named_arrive(kBarTurn + (cg ^ 1), 256); };
    auto release = [&](uint32_t bar) {
        if (lane == 0) mbar_arrive(bar);
    };

    // mask + online softmax of s (key tile kt): p in s, row maxima mr updated, alpha = rescale
    // of the previous O / l, rs = row sums of p (this thread's part)
    auto softmax = [&](int32_t kt, float(&alpha)[2], float(&rs)[2]) {
        const bool need_mask =
            kt + BN - 1 > w_pmin || (window > 0 && kt <= w_pmax - window) || !v0 || !v1;
        float mx[2] = {-INFINITY, -INFINITY};
        if (need_mask) {
#pragma unroll
            for (int nb = 0; nb < BN / 8; ++nb) {
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int32_t key = kt + nb * 8 + tig * 2 + (e & 1);
                    const bool rv = e < 2 ? v0 : v1;
                    const int32_t pos = e < 2 ? pos0 : pos1;
                    const bool ok = rv && key <= pos && (window <= 0 || pos - key < window);
                    s[4 * nb + e] = ok ? s[4 * nb + e] : -INFINITY;
                    mx[e / 2] = fmaxf(mx[e / 2], s[4 * nb + e]);
                }
            }
        } else {
#pragma unroll
            for (int i = 0; i < BN / 2; ++i) mx[(i >> 1) & 1] = fmaxf(mx[(i >> 1) & 1], s[i]);
        }
        online_softmax_tile(s, mx, mr, sl2, alpha, rs);
    };
    // O *= alpha, l = l alpha + rs, P = T(p)
    auto rescale_pack = [&](const float(&alpha)[2], const float(&rs)[2]) {
#pragma unroll
        for (int r = 0; r < 2; ++r) lr[r] = lr[r] * alpha[r] + rs[r];
#pragma unroll
        for (int i = 0; i < D / 2; ++i) o[i] *= alpha[(i >> 1) & 1];
        pack_p<T>(s, pa);
    };

    // tile 0: S only
    {
        mbar_wait(full_k(0), 0);
        turn_sync();
        wg_fence();
        ws_gemm_s<T, D>(s, sQw, sK);
        wg_commit();
        turn_pass();
        wg_wait<0>();
        reg_fence(s);
        release(empty_k(0));
        float alpha[2], rs[2];
        softmax(kt0, alpha, rs);
        rescale_pack(alpha, rs);
    }
    for (int j = 1; j < nt; ++j) {
        const int s_cur = j % ST, s_prev = (j - 1) % ST;
        mbar_wait(full_k(s_cur), (j / ST) & 1);
        mbar_wait(full_v(s_prev), ((j - 1) / ST) & 1);
        turn_sync();
        reg_fence(o);
#pragma unroll
        for (int i = 0; i < BN / 16; ++i) reg_fence(pa[i]);
        wg_fence();
        ws_gemm_s<T, D>(s, sQw, sK + s_cur * L::kTile);
        wg_commit();
        ws_gemm_pv<T, D>(o, pa, sV + s_prev * L::kTile, wd);
        wg_commit();
        turn_pass();
        wg_wait<1>();  // S_j done (P_{j-1} V_{j-1} may still run: o and pa untouched)
        reg_fence(s);
        release(empty_k(s_cur));
        float alpha[2], rs[2];
        softmax(kt0 + j * BN, alpha, rs);
        wg_wait<0>();  // P_{j-1} V_{j-1} done
        reg_fence(o);
#pragma unroll
        for (int i = 0; i < BN / 16; ++i) reg_fence(pa[i]);
        release(empty_v(s_prev));
        rescale_pack(alpha, rs);
    }
    // the last P V
    {
        const int s_last = (nt - 1) % ST;
        mbar_wait(full_v(s_last), ((nt - 1) / ST) & 1);
        turn_sync();
        reg_fence(o);
#pragma unroll
        for (int i = 0; i < BN / 16; ++i) reg_fence(pa[i]);
        wg_fence();
        ws_gemm_pv<T, D>(o, pa, sV + s_last * L::kTile, wd);
        wg_commit();
        if (cg == 0) turn_pass();  // consumer 1 issues last: nobody waits for its pass
        wg_wait<0>();
        reg_fence(o);
        release(empty_v(s_last));
    }

    finish_row_sums(lr);
    T* out = static_cast<T*>(a.out);
    T* out0 = out + (static_cast<int64_t>(seq.q_start) + r0) * a.out_ld + h * D + tig * 2;
    store_o_rows<T, D>(o, lr, out0, out0 + 8 * a.out_ld, v0, v1);
#else
    __trap();  // never launched: prefill_sm90_available() is false without sm_90a code
#endif
}

// ---------------------------------------------------------------- probe
// One 128-key tile through the kernel's own building blocks: TMA of K and V (8 blocks of 16
// keys, kv head 1 of 2, D = 128) from a paged pool with the pool's tensor maps, Q stored by
// ws_store_q, S = Q K^T (SS wgmma, 128B swizzle) and O = P V (RS wgmma, V MN-major).
__global__ void __launch_bounds__(128)
    ws_probe_kernel(const __grid_constant__ CUtensorMap tmk,
                    const __grid_constant__ CUtensorMap tmv, const int32_t* blocks,
                    const uint16_t* q, const uint16_t* p, float* s_out, float* o_out, WsDesc wd) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int D = 128, TILE = kWsKeys * D * 2;
    extern __shared__ __align__(1024) uint8_t smem_raw[];
    const uint32_t base =
        (static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw)) + 1023u) & ~1023u;
    const uint32_t sQ = base, sK = base + kWsRows * D * 2, sV = sK + TILE, bar = sV + TILE;
    const int t = static_cast<int>(threadIdx.x), warp = t / 32, lane = t % 32, gq = lane / 4,
              tig = lane % 4;
    if (t == 0) {
        mbar_init(bar, 1);
        mbar_fence_init();
    }
    __syncthreads();
    if (warp == 0) {
        if (lane == 0) mbar_arrive_tx(bar, 2 * TILE);
        __syncwarp();
        const int32_t blk = lane < 16 ? blocks[lane / 2] : 0;
        ws_tma_tile<D>(&tmk, sK, bar, lane, 16, blk, 16, 1 * D);
        ws_tma_tile<D>(&tmv, sV, bar, lane, 16, blk, 16, 1 * D);
    }
    ws_store_q<D>(sQ, q, D, 0, 0, kWsRows, t);
    fence_proxy_async();
    __syncthreads();
    mbar_wait(bar, 0);

    float s[64];
    wg_fence();
    ws_gemm_s<__nv_bfloat16, D>(s, sQ, sK);
    wg_commit();
    wg_wait<0>();
    reg_fence(s);

    uint32_t pa[kWsKeys / 16][4];
    const int r0 = warp * 16 + gq;
    auto ld2 = [&](int r, int c) {
        return static_cast<uint32_t>(p[r * kWsKeys + c]) |
               (static_cast<uint32_t>(p[r * kWsKeys + c + 1]) << 16);
    };
#pragma unroll
    for (int j = 0; j < kWsKeys / 16; ++j) {
        pa[j][0] = ld2(r0, 16 * j + 2 * tig);
        pa[j][1] = ld2(r0 + 8, 16 * j + 2 * tig);
        pa[j][2] = ld2(r0, 16 * j + 8 + 2 * tig);
        pa[j][3] = ld2(r0 + 8, 16 * j + 8 + 2 * tig);
    }
    float o[D / 2];
#pragma unroll
    for (int i = 0; i < D / 2; ++i) o[i] = 0.0f;
    reg_fence(o);
#pragma unroll
    for (int j = 0; j < kWsKeys / 16; ++j) reg_fence(pa[j]);
    wg_fence();
    ws_gemm_pv<__nv_bfloat16, D>(o, pa, sV, wd);
    wg_commit();
    wg_wait<0>();
    reg_fence(o);
#pragma unroll
    for (int nb = 0; nb < 16; ++nb) {
        const int c = nb * 8 + tig * 2;
        s_out[r0 * 128 + c] = s[4 * nb + 0];
        s_out[r0 * 128 + c + 1] = s[4 * nb + 1];
        s_out[(r0 + 8) * 128 + c] = s[4 * nb + 2];
        s_out[(r0 + 8) * 128 + c + 1] = s[4 * nb + 3];
        o_out[r0 * 128 + c] = o[4 * nb + 0];
        o_out[r0 * 128 + c + 1] = o[4 * nb + 1];
        o_out[(r0 + 8) * 128 + c] = o[4 * nb + 2];
        o_out[(r0 + 8) * 128 + c + 1] = o[4 * nb + 3];
    }
#else
    __trap();
#endif
}

// ---------------------------------------------------------------- host side
using EncodeTiled = PFN_cuTensorMapEncodeTiled_v12000;

// cuTensorMapEncodeTiled through the runtime's driver entry point (nothing links libcuda).
EncodeTiled tma_encoder() {
    static const EncodeTiled fn = []() -> EncodeTiled {
        void* p = nullptr;
        cudaDriverEntryPointQueryResult q{};
        if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault,
                                             &q) != cudaSuccess ||
            q != cudaDriverEntryPointSuccess || p == nullptr) {
            cudaGetLastError();
            return nullptr;
        }
        return reinterpret_cast<EncodeTiled>(p);
    }();
    return fn;
}

// The pool [slots][KVH][D] as a 2-D tensor (KVH*D elements per slot row, `slots` rows), boxes of
// 64 elements (128 bytes) x bs slots, 128-byte swizzle.
bool encode_pool_map(CUtensorMap* map, const void* pool, int64_t KVH, int64_t D, int64_t slots,
                     int64_t bs) {
    const EncodeTiled enc = tma_encoder();
    if (!enc) return false;
    const cuuint64_t dims[2] = {static_cast<cuuint64_t>(KVH * D), static_cast<cuuint64_t>(slots)};
    const cuuint64_t strides[1] = {static_cast<cuuint64_t>(KVH * D * 2)};
    const cuuint32_t box[2] = {64, static_cast<cuuint32_t>(bs)};
    const cuuint32_t estr[2] = {1, 1};
    return enc(map, CU_TENSOR_MAP_DATA_TYPE_UINT16, 2, const_cast<void*>(pool), dims, strides, box,
               estr, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
               CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
               CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

bool aligned16(const void* p) {
    return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

template <typename T, int D, int ST>
void launch_ws(const AttnLaunch& a, const DevMeta& m, const CUtensorMap& tk, const CUtensorMap& tv,
               cudaStream_t st) {
    constexpr int smem = WsLayout<D, ST>::kSmem;
    static std::once_flag attr_once;  // per instantiation
    std::call_once(attr_once, [] {
        FS_CUDA(cudaFuncSetAttribute(prefill_ws_kernel<T, D, ST>,
                                     cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    });
    const WsDesc wd = ws_desc(ws_env_on("FARSIGHT_WS_SWAP_V"));
    dim3 grid(static_cast<unsigned>(m.num_prefill_tiles), static_cast<unsigned>(a.H));
    prefill_ws_kernel<T, D, ST><<<grid, kWsThreads, smem, st>>>(a, m, tk, tv, wd);
    FS_CUDA_LAUNCH("prefill_ws_kernel");
}

template <typename T, int D>
void launch_ws_d(const AttnLaunch& a, const DevMeta& m, const CUtensorMap& tk,
                 const CUtensorMap& tv, cudaStream_t st) {
    if constexpr (D == 128) {
        const char* e = std::getenv("FARSIGHT_WS_STAGES");
        if (e && e[0] == '3' && e[1] == '\0') {
            launch_ws<T, D, 3>(a, m, tk, tv, st);
            return;
        }
    }
    launch_ws<T, D, ws_stages_default<D>()>(a, m, tk, tv, st);
}

}  // namespace

bool prefill_ws_supported(const AttnLaunch& a, const DevMeta& m) {
    const int64_t bs = a.block_size;
    return (a.D == 64 || a.D == 128) && (a.dt == DType::BF16 || a.dt == DType::F16) &&
           (bs == 16 || bs == 32 || bs == 64 || bs == 128) && m.prefill_tile_q == 2 * kWsRows &&
           a.pool_slots > 0 && a.pool_slots < (int64_t{1} << 31) && a.KVH > 0 && a.H % a.KVH == 0 &&
           aligned16(a.k_pool) && aligned16(a.v_pool) && aligned16(a.qkv) && a.ld % 8 == 0 &&
           a.out_ld % 2 == 0 && prefill_sm90_available() && tma_encoder() != nullptr;
}

void launch_attention_prefill_ws(const AttnLaunch& a, const DevMeta& m, cudaStream_t st) {
    if (m.num_prefill_tiles == 0) return;
    FS_CHECK(prefill_ws_supported(a, m), "prefill_ws: unsupported configuration (D {}, bs {})", a.D,
             a.block_size);
    CUtensorMap tk{}, tv{};
    FS_CHECK(encode_pool_map(&tk, a.k_pool, a.KVH, a.D, a.pool_slots, a.block_size) &&
                 encode_pool_map(&tv, a.v_pool, a.KVH, a.D, a.pool_slots, a.block_size),
             "prefill_ws: cuTensorMapEncodeTiled failed");
    if (a.dt == DType::BF16) {
        if (a.D == 64)
            launch_ws_d<__nv_bfloat16, 64>(a, m, tk, tv, st);
        else
            launch_ws_d<__nv_bfloat16, 128>(a, m, tk, tv, st);
    } else {
        if (a.D == 64)
            launch_ws_d<__half, 64>(a, m, tk, tv, st);
        else
            launch_ws_d<__half, 128>(a, m, tk, tv, st);
    }
    g_ws_launches.fetch_add(1, std::memory_order_relaxed);
}

int64_t prefill_ws_launches() {
    return g_ws_launches.load(std::memory_order_relaxed);
}

bool ws_tma_probe(bool swap_v, const uint16_t* k_pool, const uint16_t* v_pool, int64_t num_blocks,
                  const int32_t* blocks, const uint16_t* q, const uint16_t* p, float* s_out,
                  float* o_out) {
    if (!prefill_sm90_available() || !tma_encoder()) return false;
    constexpr int64_t KVH = 2, D = 128, bs = 16;
    const size_t pool_bytes = static_cast<size_t>(num_blocks * bs * KVH * D * 2);
    DeviceBuffer dk(pool_bytes), dv(pool_bytes), db(8 * sizeof(int32_t)), dq(64 * 128 * 2),
        dp(64 * 128 * 2), ds(64 * 128 * 4), dout(64 * 128 * 4);
    FS_CUDA(cudaMemcpy(dk.get(), k_pool, pool_bytes, cudaMemcpyHostToDevice));
    FS_CUDA(cudaMemcpy(dv.get(), v_pool, pool_bytes, cudaMemcpyHostToDevice));
    FS_CUDA(cudaMemcpy(db.get(), blocks, 8 * sizeof(int32_t), cudaMemcpyHostToDevice));
    FS_CUDA(cudaMemcpy(dq.get(), q, 64 * 128 * 2, cudaMemcpyHostToDevice));
    FS_CUDA(cudaMemcpy(dp.get(), p, 64 * 128 * 2, cudaMemcpyHostToDevice));
    CUtensorMap tk{}, tv{};
    FS_CHECK(encode_pool_map(&tk, dk.get(), KVH, D, num_blocks * bs, bs) &&
                 encode_pool_map(&tv, dv.get(), KVH, D, num_blocks * bs, bs),
             "ws_tma_probe: cuTensorMapEncodeTiled failed");
    constexpr int smem = 64 * 128 * 2 + 2 * kWsKeys * 128 * 2 + 64 + 1024;
    FS_CUDA(
        cudaFuncSetAttribute(ws_probe_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    ws_probe_kernel<<<1, 128, smem>>>(tk, tv, db.as<int32_t>(), dq.as<uint16_t>(),
                                      dp.as<uint16_t>(), ds.as<float>(), dout.as<float>(),
                                      ws_desc(swap_v));
    FS_CUDA_LAUNCH("ws_probe_kernel");
    FS_CUDA(cudaMemcpy(s_out, ds.get(), 64 * 128 * 4, cudaMemcpyDeviceToHost));
    FS_CUDA(cudaMemcpy(o_out, dout.get(), 64 * 128 * 4, cudaMemcpyDeviceToHost));
    return true;
}

}  // namespace farsight::cuda

#pragma once
// Kernel launchers of the CUDA backend (defined in the .cu files beside this one). Pointers are
// device pointers; `dt` is the element type of activations (BF16 or F16) unless said otherwise.
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/backend.h"

namespace farsight::cuda {

// Query rows per tile of the mma.sync prefill kernels (prefill_kernel, prefill2_kernel).
constexpr int kPrefillTileQ = 64;

// Per-forward metadata as device pointers into one uploaded buffer (see CudaBackend).
struct DevMeta {
    const int32_t* tokens = nullptr;
    const int32_t* positions = nullptr;
    const int32_t* slot_mapping = nullptr;
    const int32_t* block_tables = nullptr;
    const int32_t* logit_rows = nullptr;
    const int32_t* token_seq = nullptr;  // [T]: index of the sequence holding token t
    const SeqSlice* seqs = nullptr;
    const float* inv_freq = nullptr;         // all rope variants concatenated
    const int32_t* rope_offset = nullptr;    // [variants]: start of each in inv_freq
    const int32_t* rope_half = nullptr;      // [variants]: length of each
    const float* rope_scaling = nullptr;     // [variants]
    const int32_t* decode_tokens = nullptr;  // tokens attended by the split-K kernel
    const int32_t* prefill_tiles = nullptr;  // (seq, q0) pairs for the tiled prefill kernel
    int num_tokens = 0, num_seqs = 0, num_decode_tokens = 0, num_prefill_tiles = 0;
    // query rows per prefill tile (q0 step of prefill_tiles): prefill_tile_rows(D, dt), a
    // multiple of kPrefillTileQ; the 64-row kernels split larger tiles into 64-row sub-tiles
    int prefill_tile_q = kPrefillTileQ;
};

// One token per logit row (f32 [rows, vocab]) by backend/sampling.h's algorithm: ids[r], and
// logprobs[r] when not null. params, ids, logprobs: device pointers.
void launch_sample_rows(const float* logits, int64_t rows, int64_t vocab, const RowSampling* params,
                        int32_t* ids, float* logprobs, cudaStream_t st);
void launch_convert(DType src_dt, const void* src, DType dst_dt, void* dst, size_t n,
                    cudaStream_t st);
void launch_fill_random(DType dt, void* dst, size_t n, uint64_t seed, float scale, cudaStream_t st);
void launch_embedding(DType dt, DType table_dt, const void* table, int64_t vocab, int64_t dim,
                      const int32_t* tokens, int64_t T, void* out, cudaStream_t st);
// res_dt: type of the residual (with a residual) or of x (without): f32 or the activation type.
void launch_rmsnorm(DType dt, DType w_dt, DType res_dt, const void* x, const void* w, float eps,
                    void* out, void* residual, int64_t rows, int64_t cols, cudaStream_t st);
void launch_rope(DType dt, void* qkv, int64_t T, int64_t ld, int64_t n_rot_heads, int64_t head_dim,
                 int64_t half, const DevMeta& m, cudaStream_t st);
// rope (rotary dims 2 * half of each q and k head) and kv_store in one kernel: qkv [T, ld] is
// rotated in place exactly as launch_rope does, then the rotated k and the v of each token with
// m.slot_mapping >= 0 are written to the pools ([slots, KVH, D]) as launch_kv_store does.
void launch_rope_store(DType dt, void* qkv, int64_t T, int64_t ld, int64_t H, int64_t KVH,
                       int64_t D, int64_t half, const DevMeta& m, void* k_pool, void* v_pool,
                       int num_sms, cudaStream_t st);
void launch_silu_mul(DType dt, const void* gate_up, void* out, int64_t T, int64_t I,
                     cudaStream_t st);
void launch_gather_rows(const void* x, size_t row_bytes, const int32_t* rows, int64_t n, void* out,
                        cudaStream_t st);
void launch_kv_store(DType dt, const void* qkv, int64_t T, int64_t ld, int64_t H, int64_t KVH,
                     int64_t D, const int32_t* slots, void* k_pool, void* v_pool, cudaStream_t st);

// Skinny GEMM out[T,N] = x[T,K] @ W[N,K]^T (+bias), T <= 16, K % 8 == 0, 16-byte aligned rows.
bool gemv_supported(int64_t T, int64_t N, int64_t K);
void launch_gemv(DType dt, const void* x, const void* w, const void* bias, void* out, int64_t T,
                 int64_t N, int64_t K, int num_sms, cudaStream_t st);
// One row: out[I] = silu(x @ W[:I]^T (+bias)) * (x @ W[I:]^T (+bias)) for a [2I, K] gate_up
// weight, with the roundings of launch_gemv + launch_silu_mul (products stored in dt first);
// bitwise equal to them when both launches split K alike (the Llama shapes). x, w 16-byte aligned.
void launch_gemv_silu(DType dt, const void* x, const void* w, const void* bias, void* out,
                      int64_t I, int64_t K, int num_sms, cudaStream_t st);

// One-row GEMV (batch-1 decode) with fused neighbours, K % 8 == 0, K <= 16384:
//   Plain:               out[N] = x[K] @ W^T (+bias)
//   NormIn:              out = (rmsnorm(x = residual) * ln) @ W^T (+bias)   (res_dt: x's type)
//   AddToResidual:       out = residual[N] += T(x @ W^T (+bias))            (res_dt: out's type)
//   SiluInAddToResidual: residual += T((silu(gate) * up) @ W^T (+bias)), x = gate_up [2K]
enum class Gemv1Op { Plain, NormIn, AddToResidual, SiluInAddToResidual };
bool gemv1_supported(int64_t N, int64_t K);
void launch_gemv1(DType dt, Gemv1Op op, DType res_dt, DType ln_dt, const void* x, const void* ln,
                  float eps, const void* w, const void* bias, void* out, int64_t N, int64_t K,
                  int num_sms, cudaStream_t st);

// Attention over the paged cache. See attention.cu.
struct AttnLaunch {
    DType dt;
    const void* qkv;
    int64_t ld;  // row stride of qkv in elements
    const void* k_pool;
    const void* v_pool;
    int64_t H, KVH, D, block_size, window;
    float scale;
    void* out;  // [T, H*D]
    int64_t out_ld;
    // decode kernel only (head_dim 64/128, rotary_dim == head_dim, and every sequence of the
    // step has exactly one token, whose k/v is not stored yet: a sequence with several tokens
    // would read keys other blocks are still storing): apply rope to q and k as rope_kernel
    // does (qkv itself is left unrotated) and store the rotated k and v at slot_mapping
    int rope_store = 0;
    // fewest keys per decode partition (set by launch_attention_splitk from
    // decode_min_partition())
    int min_part = 16;
    // slots per pool ((num_blocks + 1) * block_size: the TMA tensor maps of the ws prefill
    // kernel need the extent); 0 = unknown (the ws kernel is then not used)
    int64_t pool_slots = 0;
    // split-K decode: 1 = decode_tc_kernel (the caller decides with decode_tc_applies and
    // passes the same choice to splitk_choose_splits), 0 = decode_kernel / splitk_kernel
    int tc = 0;
};
// Split-K flash-decoding over m.decode_tokens (any q_len: each token is its own query).
// Each (token, kv head) runs `splits` blocks; the kernel cuts every token's visible keys into
// at most `splits` partitions itself (from the device-side lengths), so the launch does not
// depend on context lengths. max_ctx: the longest visible context when known, else 0 (graph
// recording). `work` must hold splitk_workspace_bytes(...).
size_t splitk_workspace_bytes(int64_t n_tokens, int64_t H, int64_t D, int64_t splits);
// Partitions per (token, kv head) for the decode kernel: enough blocks to fill the device in
// balanced waves (occupancy of the kernel that runs: tc = the launch's AttnLaunch::tc), no
// partition under decode_min_partition() (16) keys of max_ctx.
int64_t splitk_choose_splits(DType dt, int64_t n_tokens, int64_t H, int64_t KVH, int64_t D,
                             int64_t max_ctx, int num_sms, bool tc);
// `counters`: splitk_counter_count(n_tokens, H) ints, all zero between launches (zero them
// once when allocating; the kernel leaves them zero).
int64_t splitk_counter_count(int64_t n_tokens, int64_t H);
void launch_attention_splitk(const AttnLaunch& a, const DevMeta& m, int64_t n_tokens,
                             int64_t splits, void* work, int* counters, cudaStream_t st);
// Tensor-core GQA decode (decode_tc_kernel, mma.sync with the K/V rows streamed through
// per-warp cp.async rings), for 2..8 q heads per kv head and head_dim 64/128, with or without
// a.rope_store. FARSIGHT_DECODE (read on every call): unset or "" = automatic, the tc kernel for
// steps of at least FARSIGHT_DECODE_TC_MIN (default 16) (decode token, kv head) pairs or whose
// longest decode context is at least decode_tc_min_ctx() (FARSIGHT_DECODE_TC_MIN_CTX, default
// 8192), decode_kernel otherwise; "tc" / "tc_norope" force the tc kernel, "cc" decode_kernel.
// Recorded steps key their graphs on max_ctx >= decode_tc_min_ctx() as well.
// decode_tc_fold_rope() is false for tc_norope: the backend then rotates and stores with
// rope_store_kernel first (a.rope_store == 0). decode_tc_launches() counts its launches.
bool decode_tc_fold_rope();
bool decode_tc_applies(int64_t H, int64_t KVH, int64_t D, int64_t n_tokens, int64_t max_ctx);
int64_t decode_tc_min_ctx();
int64_t decode_tc_launches();
// Tiled tensor-core prefill over m.prefill_tiles (m.prefill_tile_q query rows of one sequence).
bool prefill_supported(int64_t D);
// Query rows per prefill tile for head_dim D: 128 when launch_attention_prefill takes the sm90
// or the ws kernel (two consumer warpgroups of 64 rows sharing each K/V tile), else
// kPrefillTileQ (64).
// Reads FARSIGHT_PREFILL like the launcher; the launcher copes with any
// multiple of 64 anyway (an env change between begin_forward and the launch stays correct).
int prefill_tile_rows(int64_t D, DType dt);
void launch_attention_prefill(const AttnLaunch& a, const DevMeta& m, cudaStream_t st);
// Hopper wgmma prefill (attention_sm90.cu), the same function as launch_attention_prefill's
// kernels for D == 64 and 128. Available only on a compute capability 9.0 device whose loaded
// image has the sm_90a code (probed once). FARSIGHT_WGMMA_SWAP_K=1 / FARSIGHT_WGMMA_SWAP_V=1
// swap the LBO/SBO descriptor convention of the K / V operand (see attention_sm90.cu).
bool prefill_sm90_available();
void launch_attention_prefill_sm90(const AttnLaunch& a, const DevMeta& m, cudaStream_t st);
// Warp-specialized Hopper prefill (attention_ws.cu, FARSIGHT_PREFILL=ws): TMA producer warp
// group + two consumer warpgroups with mbarrier pipelines, FA3-style overlap. Supported: the
// conditions of prefill_sm90_available(), head_dim 64/128, block size 16/32/64/128,
// m.prefill_tile_q == 128 and a.pool_slots > 0 (launch_attention_prefill falls back to the sm90
// kernel otherwise). prefill_ws_launches() counts the launches (tests check the kernel ran).
bool prefill_ws_supported(const AttnLaunch& a, const DevMeta& m);
void launch_attention_prefill_ws(const AttnLaunch& a, const DevMeta& m, cudaStream_t st);
int64_t prefill_ws_launches();
// Test hook: one 128-key tile through the ws kernel's building blocks. Pools [num_blocks][16]
// [2][128] (bf16 bits, kv head 1 used), blocks[8] the tile's block table, q [64][128], p [64][128]
// (bf16 bits); s_out [64][128] = q K^T, o_out [64][128] = p V (keys = the 8 blocks' 128 rows).
// swap_v swaps the V descriptor's LBO/SBO. False (nothing run) without the sm90a path.
bool ws_tma_probe(bool swap_v, const uint16_t* k_pool, const uint16_t* v_pool, int64_t num_blocks,
                  const int32_t* blocks, const uint16_t* q, const uint16_t* p, float* s_out,
                  float* o_out);
// Test hook: one wgmma m64n64k16 (bf16 bits, fp32 out) d[64][64] = a[64][16] * b[16][64], with
// b in shared memory K-major (mn_major false) or MN-major, under the default descriptor
// convention or the swapped one. False (nothing run) when the sm90 path is unavailable.
bool wgmma_probe_sm90(bool mn_major, bool swapped, const uint16_t* a, const uint16_t* b, float* d);

}  // namespace farsight::cuda

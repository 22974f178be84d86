#pragma once
// wgmma helpers of the Hopper prefill kernels (attention_sm90.cu, attention_ws.cu): the
// no-swizzle matrix descriptor, wgmma fence / commit / wait, register fences, ex2, the packing
// of two floats into T, and wgmma with A from registers (RS). Verified on the GPU by
// CudaWgmma.DescriptorProbe and the attention tests of the sm90 kernel.
// All of them only in the sm_90a pass (the sm_90 / compute_80 passes compile empty kernels and
// would warn about unreferenced functions).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

namespace farsight::cuda {
namespace {

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
__device__ __forceinline__ uint64_t wg_desc(uint32_t smem_addr, uint32_t lbo, uint32_t sbo) {
    // swizzle bits 62-63 = 0 (no swizzle), base offset 0
    return static_cast<uint64_t>((smem_addr & 0x3FFFF) >> 4) |
           (static_cast<uint64_t>((lbo & 0x3FFFF) >> 4) << 16) |
           (static_cast<uint64_t>((sbo & 0x3FFFF) >> 4) << 32);
}

__device__ __forceinline__ void wg_fence() {
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wg_commit() {
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wg_wait0() {
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
}
// Keeps the compiler from moving accesses of wgmma operand registers across the volatile
// fence / wait instructions (the asm "reads and writes" the register at this point).
template <int N>
__device__ __forceinline__ void reg_fence(float (&r)[N]) {
#pragma unroll
    for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
template <int N>
__device__ __forceinline__ void reg_fence(uint32_t (&r)[N]) {
#pragma unroll
    for (int i = 0; i < N; ++i) asm volatile("" : "+r"(r[i])::"memory");
}
// 2^x, one MUFU.EX2 (exp2f adds a range check and two multiplies for denormal results, which
// softmax does not need: ftz flushes them to 0; 2^-inf = 0)
__device__ __forceinline__ float ex2_ftz(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}
__device__ __forceinline__ void fence_proxy_async() {
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

template <typename T>
struct Pack;
template <>
struct Pack<__nv_bfloat16> {
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
        __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
        return *reinterpret_cast<uint32_t*>(&v);
    }
};
template <>
struct Pack<__half> {
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
        __half2 v = __floats2half2_rn(lo, hi);
        return *reinterpret_cast<uint32_t*>(&v);
    }
};

// ---- the online softmax of a wgmma m64nNk16 S tile, per thread (rows r0 and r0 + 8 of the
// warp's 16: accumulator pairs (i >> 1) & 1 = 0 and 1) ----
// mx: this thread's raw row maxima of S (masked entries -inf); reduced over the quad, then the
// running maxima mr (base 2, scale sl2 folded in) move on: alpha = 2^(old - new) (0 when the old
// one was -inf), s <- 2^(s sl2 - m) (0 for -inf), rs = this thread's row sums of the new s.
template <int N>
__device__ __forceinline__ void online_softmax_tile(float (&s)[N], float (&mx)[2], float (&mr)[2],
                                                    float sl2, float (&alpha)[2], float (&rs)[2]) {
    float muse[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        const float mnew = fmaxf(mr[r], mx[r] * sl2);  // -inf stays -inf
        muse[r] = mnew == -INFINITY ? 0.0f : mnew;
        alpha[r] = ex2_ftz(mr[r] - muse[r]);  // 0 when mr was -inf
        mr[r] = mnew;
        rs[r] = 0.0f;
    }
#pragma unroll
    for (int i = 0; i < N; ++i) {
        const float p = ex2_ftz(fmaf(s[i], sl2, -muse[(i >> 1) & 1]));  // 0 for -inf
        s[i] = p;
        rs[(i >> 1) & 1] += p;
    }
}

// P (this thread's N accumulator values of an S tile of 2N keys, rounded to T) as the A operand
// of the P V wgmma: k-step j (keys 16j..16j+15) = accumulator n-blocks 2j, 2j+1.
template <typename T, int N>
__device__ __forceinline__ void pack_p(const float (&s)[N], uint32_t (&pa)[N / 8][4]) {
#pragma unroll
    for (int j = 0; j < N / 8; ++j) {
        pa[j][0] = Pack<T>::pack(s[8 * j + 0], s[8 * j + 1]);
        pa[j][1] = Pack<T>::pack(s[8 * j + 2], s[8 * j + 3]);
        pa[j][2] = Pack<T>::pack(s[8 * j + 4], s[8 * j + 5]);
        pa[j][3] = Pack<T>::pack(s[8 * j + 6], s[8 * j + 7]);
    }
}

// lr: this thread's partial row sums -> 1 / (the row's sum) over the quad (0 for an empty row).
__device__ __forceinline__ void finish_row_sums(float (&lr)[2]) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        lr[r] += __shfl_xor_sync(0xffffffffu, lr[r], 1);
        lr[r] += __shfl_xor_sync(0xffffffffu, lr[r], 2);
        lr[r] = lr[r] > 0.0f ? 1.0f / lr[r] : 0.0f;
    }
}

// O (the m64n{D} accumulator) * 1/l stored as T: row r0 at out0 (when v0), row r0 + 8 at out1
// (when v1); out0/out1 point at this thread's first column pair.
template <typename T, int D>
__device__ __forceinline__ void store_o_rows(const float (&o)[D / 2], const float (&lr)[2], T* out0,
                                             T* out1, bool v0, bool v1) {
#pragma unroll
    for (int nd = 0; nd < D / 8; ++nd) {
        if (v0)
            *reinterpret_cast<uint32_t*>(out0 + nd * 8) =
                Pack<T>::pack(o[4 * nd + 0] * lr[0], o[4 * nd + 1] * lr[0]);
        if (v1)
            *reinterpret_cast<uint32_t*>(out1 + nd * 8) =
                Pack<T>::pack(o[4 * nd + 2] * lr[1], o[4 * nd + 3] * lr[1]);
    }
}

// d (64 x N, f32) = A (64 x 16, registers) * B (16 x N, smem descriptor) + (scale_d ? d : 0).
// TRANS = imm-trans-b: 0 = B K-major, 1 = B MN-major.
#define FS_F8(d, i)                                                                             \
    "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), \
        "+f"(d[i + 6]), "+f"(d[i + 7])
#define FS_F32(d) FS_F8(d, 0), FS_F8(d, 8), FS_F8(d, 16), FS_F8(d, 24)
#define FS_F64(d) FS_F32(d), FS_F8(d, 32), FS_F8(d, 40), FS_F8(d, 48), FS_F8(d, 56)

#define FS_WG_N64(TY)                                                                          \
    asm volatile(                                                                              \
        "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"                                           \
        "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY                                \
        " {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22," \
        "%23,%24,%25,%26,%27,%28,%29,%30,%31}, {%32,%33,%34,%35}, %36, p, 1, 1, %38;\n}\n"     \
        : FS_F32(d)                                                                            \
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(scale_d), "n"(TRANS))

#define FS_WG_N128(TY)                                                                         \
    asm volatile(                                                                              \
        "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"                                           \
        "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY                               \
        " {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22," \
        "%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43," \
        "%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63},"    \
        " {%64,%65,%66,%67}, %68, p, 1, 1, %70;\n}\n"                                          \
        : FS_F64(d)                                                                            \
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(scale_d), "n"(TRANS))

template <typename T, int N, int TRANS>
__device__ __forceinline__ void wgmma_rs(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t desc,
                                         int scale_d) {
    static_assert(N == 64 || N == 128, "wgmma_rs: N is 64 or 128");
    if constexpr (N == 64) {
        if constexpr (std::is_same_v<T, __nv_bfloat16>)
            FS_WG_N64("bf16");
        else
            FS_WG_N64("f16");
    } else {
        if constexpr (std::is_same_v<T, __nv_bfloat16>)
            FS_WG_N128("bf16");
        else
            FS_WG_N128("f16");
    }
}
#endif  // __CUDA_ARCH_FEAT_SM90_ALL

}  // namespace
}  // namespace farsight::cuda

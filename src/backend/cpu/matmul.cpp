#include "backend/cpu/matmul.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__AVX2__) || defined(__AVX512F__)
// GCC 12's AVX-512 headers self-initialise "undefined" vectors (__m512i __Y = __Y), which
// -Wmaybe-uninitialized reports at the header line once inlined.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

#include "core/error.h"

// Kernel structure (see matmul.h for the accumulation order every path keeps):
//  * micro<I, S, TR, NR>: a TR x NR block of outputs, one vector accumulator per output, loads a
//    vector of each of the TR x rows and NR weight rows per step (weights of source type S are
//    converted to f32 in registers, exactly).
//  * T < I::kGemmMinT (decode): weights streamed straight from memory, NR = I::kGemvNR rows at a
//    time, so that NR * TR independent FMA chains hide the FMA latency.
//  * T >= I::kGemmMinT (prefill): a block of weight rows is converted to f32 once into a
//    per-thread buffer (kept in L2) and reused for all T rows with a TR x NR register tile
//    (AVX-512: 4 x 6). K is split into blocks of kKBlock so that the x and weight slices of a
//    block stay in L1; the accumulator tiles are parked in a per-thread buffer between K blocks,
//    which keeps the per-lane order of the decode path exactly.
//  * Threads take contiguous chunks of N (or of T when N is too small to share) from an atomic
//    counter.

namespace farsight::cpu {
namespace {

std::atomic<int> g_isa{static_cast<int>(MatmulIsa::Auto)};

MatmulIsa best_isa() {
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
    return MatmulIsa::Avx512;
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
    return MatmulIsa::Avx2;
#else
    return MatmulIsa::Scalar;
#endif
}

// Weight source tags.
struct SrcF32 {
    using T = float;
};
struct SrcBF16 {
    using T = uint16_t;
};
struct SrcF16 {
    using T = uint16_t;
};

// ---------------------------------------------------------------- scalar ----
struct ScalarIsa {
    using V = float;
    static constexpr int W = 1;
    static constexpr int kGemvNR = 4;
    static constexpr int kGemmMinT = 4;
    static constexpr int kGemmTR = 2;
    static constexpr int kGemmNR = 4;
    static V zero() { return 0.0f; }
    static V loadx(const float* p) { return *p; }
    static V loadx_tail(const float* p, int) { return *p; }  // never called (W == 1)
    template <class S>
    static V loadw(const typename S::T* p) {
        if constexpr (std::is_same_v<S, SrcF32>)
            return *p;
        else if constexpr (std::is_same_v<S, SrcBF16>)
            return bf16_to_f32(*p);
        else
            return f16_to_f32(*p);
    }
    template <class S>
    static V loadw_tail(const typename S::T* p, int) {
        return loadw<S>(p);
    }
    static V fma(V a, V b, V c) {
#ifdef FP_FAST_FMAF
        return std::fma(a, b, c);
#else
        return c + a * b;
#endif
    }
    static float hsum(V v) {
        return v;
    }
    static void pin(V&) {}
    static void store(float* p, V v) {
        *p = v;
    }
    static void store_tail(float* p, V v, int) {
        *p = v;
    }
};

// ---------------------------------------------------------------- AVX2 ----
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define FARSIGHT_MATMUL_AVX2 1
struct Avx2Isa {
    using V = __m256;
    static constexpr int W = 8;
    static constexpr int kGemvNR = 4;
    static constexpr int kGemmMinT = 4;
    static constexpr int kGemmTR = 3;
    static constexpr int kGemmNR = 3;
    static V zero() { return _mm256_setzero_ps(); }
    static __m256i tail_mask(int n) {
        return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    }
    static V loadx(const float* p) { return _mm256_loadu_ps(p); }
    static V loadx_tail(const float* p, int n) { return _mm256_maskload_ps(p, tail_mask(n)); }
    static V widen_bf16(__m128i h) {
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    template <class S>
    static V loadw(const typename S::T* p) {
        if constexpr (std::is_same_v<S, SrcF32>) {
            return _mm256_loadu_ps(p);
        } else {
            const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
            if constexpr (std::is_same_v<S, SrcBF16>)
                return widen_bf16(h);
            else
                return _mm256_cvtph_ps(h);
        }
    }
    template <class S>
    static V loadw_tail(const typename S::T* p, int n) {
        if constexpr (std::is_same_v<S, SrcF32>) {
            return _mm256_maskload_ps(p, tail_mask(n));
        } else {
            alignas(16) uint16_t buf[8] = {};
            std::memcpy(buf, p, static_cast<size_t>(n) * sizeof(uint16_t));
            return loadw<S>(buf);
        }
    }
    static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
    // Keeps a loaded vector in a register: without this GCC folds the load into every FMA
    // that uses it, turning one load into TR loads and making the tile load-bound.
    static void pin(V& v) { asm("" : "+x"(v)); }
    static float hsum(V v) {
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        return _mm_cvtss_f32(s);
    }
    static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
    static void store_tail(float* p, V v, int n) { _mm256_maskstore_ps(p, tail_mask(n), v); }
};
#endif

// ---------------------------------------------------------------- AVX-512 ----
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define FARSIGHT_MATMUL_AVX512 1
struct Avx512Isa {
    using V = __m512;
    static constexpr int W = 16;
    static constexpr int kGemvNR = 8;
    static constexpr int kGemmMinT = 4;
    // 4 x 6 tile: 24 accumulators + 4 x vectors + 1 weight vector of the 32 zmm registers;
    // 10 loads per 24 FMAs.
    static constexpr int kGemmTR = 4;
    static constexpr int kGemmNR = 6;
    static V zero() { return _mm512_setzero_ps(); }
    static __mmask16 tail_mask(int n) { return static_cast<__mmask16>((1u << n) - 1u); }
    static V loadx(const float* p) { return _mm512_loadu_ps(p); }
    static V loadx_tail(const float* p, int n) { return _mm512_maskz_loadu_ps(tail_mask(n), p); }
    static V widen(__m256i h, SrcBF16) {
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    static V widen(__m256i h, SrcF16) { return _mm512_cvtph_ps(h); }
    template <class S>
    static V loadw(const typename S::T* p) {
        if constexpr (std::is_same_v<S, SrcF32>)
            return _mm512_loadu_ps(p);
        else
            return widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)), S{});
    }
    template <class S>
    static V loadw_tail(const typename S::T* p, int n) {
        if constexpr (std::is_same_v<S, SrcF32>)
            return _mm512_maskz_loadu_ps(tail_mask(n), p);
        else
            return widen(_mm256_maskz_loadu_epi16(tail_mask(n), p), S{});
    }
    static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
    static void pin(V& v) { asm("" : "+v"(v)); }  // see Avx2Isa::pin
    static float hsum(V v) {
        const __m256 lo = _mm512_castps512_ps256(v);
        const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
        const __m256 s8 = _mm256_add_ps(lo, hi);
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        return _mm_cvtss_f32(s);
    }
    static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
    static void store_tail(float* p, V v, int n) { _mm512_mask_storeu_ps(p, tail_mask(n), v); }
};
#endif

// ---------------------------------------------------------------- kernels ----

// Accumulates x[t * ldx + k] * w[n * ldw + k] for k in [k0, k1) into a TR x NR tile of vector
// accumulators. `first`: start from zero, else from acc_io (the state a previous k-range left).
// `last` (k1 == K): the zero-padded tail k in [k1 - (k1 - k0) % W, k1) is included and
// out[t * ldo + n] = hsum(acc) (+ bias[n]) is written; otherwise the state goes to acc_io.
// Splitting [0, K) into ranges (multiples of W except the last) gives bitwise the same result.
// kPrefetchNext (decode): also prefetch the same k of the next NR weight rows, which the next
// call will stream; it keeps more DRAM reads in flight than the hardware prefetchers do on
// their own across the 4 KiB page boundaries of short rows (measured +5-10% for bf16 rows of
// 4 KiB). Past the end of W this only prefetches unrelated addresses, which never faults.
template <class I, class S, int TR, int NR, bool kPrefetchNext = false>
inline void micro(const float* x, int64_t ldx, const typename S::T* w, int64_t ldw, int64_t k0,
                  int64_t k1, bool first, bool last, float* acc_io, const float* bias, float* out,
                  int64_t ldo) {
    using V = typename I::V;
    V acc[TR][NR];
#pragma GCC unroll 32
    for (int t = 0; t < TR; ++t)
#pragma GCC unroll 32
        for (int n = 0; n < NR; ++n)
            acc[t][n] = first ? I::zero() : I::loadx(acc_io + (t * NR + n) * I::W);
    int64_t k = k0;
    for (; k + I::W <= k1; k += I::W) {
        V xv[TR];
#pragma GCC unroll 32
        for (int t = 0; t < TR; ++t) xv[t] = I::loadx(x + t * ldx + k);
#pragma GCC unroll 32
        for (int n = 0; n < NR; ++n) {
            if constexpr (kPrefetchNext) {
                const auto here = reinterpret_cast<uintptr_t>(w + n * ldw + k);
                const auto next = here + static_cast<uintptr_t>(NR * ldw) * sizeof(*w);
                __builtin_prefetch(reinterpret_cast<const void*>(next), 0, 3);
            }
            V wv = I::template loadw<S>(w + n * ldw + k);
            if constexpr (TR > 1) I::pin(wv);
#pragma GCC unroll 32
            for (int t = 0; t < TR; ++t) acc[t][n] = I::fma(xv[t], wv, acc[t][n]);
        }
    }
    if (!last) {
#pragma GCC unroll 32
        for (int t = 0; t < TR; ++t)
#pragma GCC unroll 32
            for (int n = 0; n < NR; ++n) I::store(acc_io + (t * NR + n) * I::W, acc[t][n]);
        return;
    }
    if (k < k1) {
        const int rem = static_cast<int>(k1 - k);
        V xv[TR];
#pragma GCC unroll 32
        for (int t = 0; t < TR; ++t) xv[t] = I::loadx_tail(x + t * ldx + k, rem);
#pragma GCC unroll 32
        for (int n = 0; n < NR; ++n) {
            const V wv = I::template loadw_tail<S>(w + n * ldw + k, rem);
#pragma GCC unroll 32
            for (int t = 0; t < TR; ++t) acc[t][n] = I::fma(xv[t], wv, acc[t][n]);
        }
    }
#pragma GCC unroll 32
    for (int t = 0; t < TR; ++t)
#pragma GCC unroll 32
        for (int n = 0; n < NR; ++n) {
            float s = I::hsum(acc[t][n]);
            if (bias) s += bias[n];
            out[t * ldo + n] = s;
        }
}

// Whole dot products (k in [0, K)), for the decode path.
template <class I, class S, int TR, int NR>
inline void micro_full(const float* x, int64_t K, const typename S::T* w, const float* bias,
                       float* out, int64_t ldo) {
    micro<I, S, TR, NR, (NR > 1)>(x, K, w, K, 0, K, true, true, nullptr, bias, out, ldo);
}

struct Args {
    const float* x;
    int64_t T, K;
    const void* W;
    DType wtype;
    int64_t N;
    const float* bias;
    float* out;
};

// Rows [n0, n1) of W against TR rows of x, weights streamed from memory (decode, small T).
template <class I, class S, int TR>
void gemv_rows(const float* x, int64_t K, const typename S::T* W, int64_t n0, int64_t n1,
               const float* bias, float* out, int64_t ldo) {
    constexpr int NR = I::kGemvNR;
    int64_t n = n0;
    for (; n + NR <= n1; n += NR)
        micro_full<I, S, TR, NR>(x, K, W + n * K, bias ? bias + n : nullptr, out + n, ldo);
    for (; n < n1; ++n)
        micro_full<I, S, TR, 1>(x, K, W + n * K, bias ? bias + n : nullptr, out + n, ldo);
}

template <class I, class S>
void gemv_rect(const Args& a, int64_t t0, int64_t t1, int64_t n0, int64_t n1) {
    const auto* W = static_cast<const typename S::T*>(a.W);
    const int64_t K = a.K, N = a.N;
    int64_t t = t0;
    for (; t + 3 <= t1; t += 3)
        gemv_rows<I, S, 3>(a.x + t * K, K, W, n0, n1, a.bias, a.out + t * N, N);
    if (t1 - t == 2)
        gemv_rows<I, S, 2>(a.x + t * K, K, W, n0, n1, a.bias, a.out + t * N, N);
    else if (t1 - t == 1)
        gemv_rows<I, S, 1>(a.x + t * K, K, W, n0, n1, a.bias, a.out + t * N, N);
}

// Prefill blocking: rows of x per T block, k per K block (x and W slices of a K block stay in
// L1 while the accumulator tiles go through a per-thread buffer between K blocks).
constexpr int64_t kTBlock = 64;
constexpr int64_t kKBlock = 256;

// Rows [t0, t1) x cols [0, nb) of the output, with f32 weights w (nb rows, stride K).
template <class I>
void gemm_tile(const Args& a, int64_t t0, int64_t t1, const float* w, int64_t nb, const float* bias,
               float* out) {
    constexpr int TR = I::kGemmTR, NR = I::kGemmNR;
    static_assert(kKBlock % I::W == 0);
    const int64_t K = a.K, N = a.N;
    thread_local std::vector<float> accbuf;
    const size_t need = static_cast<size_t>(std::min(kTBlock, t1 - t0) * nb * I::W);
    if (accbuf.size() < need) accbuf.resize(need);
    for (int64_t tb = t0; tb < t1; tb += kTBlock) {
        const int64_t te = std::min(t1, tb + kTBlock);
        for (int64_t k0 = 0; k0 < K || k0 == 0; k0 += kKBlock) {
            const int64_t k1 = std::min(K, k0 + kKBlock);
            const bool first = k0 == 0, last = k1 == K;
            // The accumulator tile of output (t, n) lives at accbuf + ((t - tb) * nb + n) * W
            // (tiles are stored row-major within their TR x NR block, at the block's origin).
            int64_t t = tb;
            for (; t + TR <= te; t += TR) {
                const float* xt = a.x + t * K;
                float* ot = out + t * N;
                float* acc = accbuf.data() + (t - tb) * nb * I::W;
                int64_t n = 0;
                for (; n + NR <= nb; n += NR)
                    micro<I, SrcF32, TR, NR>(xt, K, w + n * K, K, k0, k1, first, last,
                                             acc + n * TR * I::W, bias ? bias + n : nullptr, ot + n,
                                             N);
                for (; n < nb; ++n)
                    micro<I, SrcF32, TR, 1>(xt, K, w + n * K, K, k0, k1, first, last,
                                            acc + n * TR * I::W, bias ? bias + n : nullptr, ot + n,
                                            N);
            }
            for (; t < te; ++t) {
                const float* xt = a.x + t * K;
                float* ot = out + t * N;
                float* acc = accbuf.data() + (t - tb) * nb * I::W;
                int64_t n = 0;
                for (; n + NR <= nb; n += NR)
                    micro<I, SrcF32, 1, NR>(xt, K, w + n * K, K, k0, k1, first, last,
                                            acc + n * I::W, bias ? bias + n : nullptr, ot + n, N);
                for (; n < nb; ++n)
                    micro<I, SrcF32, 1, 1>(xt, K, w + n * K, K, k0, k1, first, last, acc + n * I::W,
                                           bias ? bias + n : nullptr, ot + n, N);
            }
            if (last) break;
        }
    }
}

// Exact conversion of `count` weights to f32.
template <class I, class S>
void convert_rows(const typename S::T* src, int64_t count, float* dst) {
    int64_t i = 0;
    for (; i + I::W <= count; i += I::W) I::store(dst + i, I::template loadw<S>(src + i));
    if (i < count) {
        const int rem = static_cast<int>(count - i);
        I::store_tail(dst + i, I::template loadw_tail<S>(src + i, rem), rem);
    }
}

// Weight rows per block in the prefill path: about kBlockBytes of f32 weights (kept in L2),
// between 2 and 6 register tiles.
constexpr int64_t kBlockBytes = 256 * 1024;
template <class I>
int64_t gemm_rows_per_block(int64_t K) {
    constexpr int64_t NR = I::kGemmNR;
    const int64_t rows = kBlockBytes / (std::max<int64_t>(K, 1) * 4) / NR * NR;
    return std::clamp<int64_t>(rows, 2 * NR, 6 * NR);
}

template <class I, class S>
void gemm_rect(const Args& a, int64_t t0, int64_t t1, int64_t n0, int64_t n1) {
    const int64_t K = a.K;
    const int64_t nb = gemm_rows_per_block<I>(K);
    thread_local std::vector<float> buf;
    for (int64_t n = n0; n < n1; n += nb) {
        const int64_t rows = std::min(nb, n1 - n);
        const float* w;
        if constexpr (std::is_same_v<S, SrcF32>) {
            w = static_cast<const float*>(a.W) + n * K;
        } else {
            const size_t need = static_cast<size_t>(rows * K);
            if (buf.size() < need) buf.resize(need);
            convert_rows<I, S>(static_cast<const typename S::T*>(a.W) + n * K, rows * K,
                               buf.data());
            w = buf.data();
        }
        gemm_tile<I>(a, t0, t1, w, rows, a.bias ? a.bias + n : nullptr, a.out + n);
    }
}

template <class I, class S>
void rect(const Args& a, int64_t t0, int64_t t1, int64_t n0, int64_t n1) {
    if (t1 - t0 < I::kGemmMinT)
        gemv_rect<I, S>(a, t0, t1, n0, n1);
    else
        gemm_rect<I, S>(a, t0, t1, n0, n1);
}

template <class I>
void run(const Args& a, ThreadPool& pool) {
    void (*fn)(const Args&, int64_t, int64_t, int64_t, int64_t) = nullptr;
    switch (a.wtype) {
        case DType::F32:
            fn = &rect<I, SrcF32>;
            break;
        case DType::BF16:
            fn = &rect<I, SrcBF16>;
            break;
        case DType::F16:
            fn = &rect<I, SrcF16>;
            break;
        default:
            fail("matmul: internal error: unexpected weight dtype");
    }
    const int nt = pool.size();
    if (nt == 1 || a.T * a.N * std::max<int64_t>(a.K, 1) < 32 * 1024) {
        fn(a, 0, a.T, 0, a.N);
        return;
    }
    // Work is handed out in contiguous chunks through an atomic counter, several per thread,
    // so that a thread slowed down by another process on its core does not hold up the call.
    // Chunks are ranges of N (aligned to 16 rows, about kChunkBytes of weights each, at least
    // as many as the prefill path converts at once) or, when N is too small to share and T is
    // large, ranges of T (multiples of 4 rows).
    constexpr int64_t kAlign = 16;
    constexpr int64_t kChunkBytes = 256 * 1024;
    const int64_t row_bytes = std::max<int64_t>(a.K, 1) * static_cast<int64_t>(dtype_size(a.wtype));
    const int64_t n_units = (a.N + kAlign - 1) / kAlign;
    const bool split_t = n_units < 2 * nt && a.T >= 8 * nt;
    int64_t unit, n_chunks;
    if (!split_t && a.T >= I::kGemmMinT) {
        unit = gemm_rows_per_block<I>(a.K);
        n_chunks = (a.N + unit - 1) / unit;
    } else if (!split_t) {
        const int64_t by_bytes = std::max<int64_t>(1, kChunkBytes / (row_bytes * kAlign));
        const int64_t by_count = std::max<int64_t>(1, n_units / (4 * nt));
        unit = kAlign * std::min(by_bytes, by_count);
        n_chunks = (a.N + unit - 1) / unit;
    } else {
        unit = 4 * std::max<int64_t>(1, (a.T + 4 * 4 * nt - 1) / (4 * 4 * nt));
        n_chunks = (a.T + unit - 1) / unit;
    }
    std::atomic<int64_t> next{0};
    pool.run_on_all([&](int) {
        for (;;) {
            const int64_t c = next.fetch_add(1, std::memory_order_relaxed);
            if (c >= n_chunks) break;
            if (!split_t)
                fn(a, 0, a.T, c * unit, std::min(a.N, (c + 1) * unit));
            else
                fn(a, c * unit, std::min(a.T, (c + 1) * unit), 0, a.N);
        }
    });
}

}  // namespace

std::string_view matmul_isa_name(MatmulIsa isa) {
    switch (isa) {
        case MatmulIsa::Auto:
            return "auto";
        case MatmulIsa::Avx512:
            return "avx512";
        case MatmulIsa::Avx2:
            return "avx2";
        case MatmulIsa::Scalar:
            return "scalar";
    }
    return "?";
}

bool matmul_isa_available(MatmulIsa isa) {
    switch (isa) {
        case MatmulIsa::Auto:
        case MatmulIsa::Scalar:
            return true;
        case MatmulIsa::Avx2:
#ifdef FARSIGHT_MATMUL_AVX2
            return true;
#else
            return false;
#endif
        case MatmulIsa::Avx512:
#ifdef FARSIGHT_MATMUL_AVX512
            return true;
#else
            return false;
#endif
    }
    return false;
}

MatmulIsa matmul_active_isa() {
    const auto isa = static_cast<MatmulIsa>(g_isa.load(std::memory_order_relaxed));
    return isa == MatmulIsa::Auto ? best_isa() : isa;
}

void set_matmul_isa(MatmulIsa isa) {
    FS_CHECK(matmul_isa_available(isa),
             "matmul: the {} kernel path is not compiled into this build (build with "
             "-DFARSIGHT_NATIVE=ON on a CPU that supports it)",
             matmul_isa_name(isa));
    g_isa.store(static_cast<int>(isa), std::memory_order_relaxed);
}

ScopedMatmulIsa::ScopedMatmulIsa(MatmulIsa isa)
    : previous_(static_cast<MatmulIsa>(g_isa.load(std::memory_order_relaxed))) {
    set_matmul_isa(isa);
}

ScopedMatmulIsa::~ScopedMatmulIsa() {
    g_isa.store(static_cast<int>(previous_));
}

void matmul(const float* x, int64_t T, int64_t K, const void* W, DType wtype, int64_t N,
            const float* bias, float* out, ThreadPool& pool) {
    FS_CHECK(T >= 0 && K >= 0 && N >= 0, "matmul: negative size (T={}, K={}, N={})", T, K, N);
    FS_CHECK(wtype == DType::F32 || wtype == DType::F16 || wtype == DType::BF16,
             "matmul: weights of dtype {} are not supported on CPU (use f32, f16 or bf16)",
             dtype_name(wtype));
    if (T == 0 || N == 0) return;
    FS_CHECK(x && W && out, "matmul: null data pointer (x={}, W={}, out={})",
             static_cast<const void*>(x), W, static_cast<const void*>(out));
    const Args a{x, T, K, W, wtype, N, bias, out};
    switch (matmul_active_isa()) {
#ifdef FARSIGHT_MATMUL_AVX512
        case MatmulIsa::Avx512:
            run<Avx512Isa>(a, pool);
            return;
#endif
#ifdef FARSIGHT_MATMUL_AVX2
        case MatmulIsa::Avx2:
            run<Avx2Isa>(a, pool);
            return;
#endif
        default:
            run<ScalarIsa>(a, pool);
            return;
    }
}

}  // namespace farsight::cpu

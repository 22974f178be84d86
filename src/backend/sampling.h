#pragma once
// Sampling of a step's logit rows where the logits live (Backend::sample_rows): greedy, or
// temperature + top-k + top-p with a counter-based draw. The CPU reference
// (sample_rows_reference) and the CUDA kernel (backend/cuda/sampling.cu) run the same
// algorithm on the same integer arithmetic; only expf/logf may differ in the last ulp.
//
// Per row, with M = max logit and w(l) = floor(expf((l - M) / T) * 2^40) (a fixed-point weight:
// sums are exact and do not depend on the order of summation):
//   greedy (temperature <= 0 or top_k == 1): the lowest id among the maximal logits (the CPU
//     Sampler's rule);
//   otherwise tokens are ordered by logit descending, ties by id ascending; top-k keeps the
//     first k; top-p keeps the shortest prefix whose weight reaches floor(top_p * K), K the
//     weight the top-k prefix kept (1 when that is 0); the kept set is the shorter prefix. With
//     F the kept weight, r = mulhi(draw_bits(seed, counter), F) in [0, F): the token is the
//     first kept id (in id order) where the running kept weight exceeds r.
//   logprob (when asked): l[id] - M - log(sum exp(l - M)) of the raw logits, as
//     Sampler::logprob_of.
#include <cstdint>
#include <cmath>
#include <cstring>

#if defined(__CUDACC__)
#define FS_HD __host__ __device__ __forceinline__
#else
#define FS_HD inline
#endif

namespace farsight {

struct RowSampling {
    float temperature = 0.0f;  // <= 0: greedy
    int32_t top_k = 0;         // 0: off
    float top_p = 1.0f;        // 1: off
    uint32_t pad_ = 0;
    uint64_t seed = 0;
    uint64_t counter = 0;  // e.g. the sequence's output position: the draw is f(seed, counter)
    FS_HD bool greedy() const { return temperature <= 0.0f || top_k == 1; }
};

namespace sampling {

// 2^40: the weight of the maximal logit.
constexpr float kWeightOne = 1099511627776.0f;

// Monotone map of a float to uint32 (larger float -> larger key).
FS_HD uint32_t order_key(float x) {
    uint32_t b;
#if defined(__CUDA_ARCH__)
    b = __float_as_uint(x);
#else
    std::memcpy(&b, &x, 4);
#endif
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// Inverse of order_key.
FS_HD float key_value(uint32_t k) {
    const uint32_t b = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k;
#if defined(__CUDA_ARCH__)
    return __uint_as_float(b);
#else
    float x;
    std::memcpy(&x, &b, 4);
    return x;
#endif
}

FS_HD uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// 64 random bits for (seed, counter): two SplitMix64 finalisers.
FS_HD uint64_t draw_bits(uint64_t seed, uint64_t counter) {
    return mix64(mix64(seed + 0x9e3779b97f4a7c15ull) ^ (counter * 0xd1b54a32d192ed03ull + 0x8cb92ba72f3d8dd7ull));
}

FS_HD uint64_t mulhi64(uint64_t a, uint64_t b) {
#if defined(__CUDA_ARCH__)
    return __umul64hi(a, b);
#else
    const uint64_t a0 = a & 0xffffffffu, a1 = a >> 32, b0 = b & 0xffffffffu, b1 = b >> 32;
    const uint64_t p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
    const uint64_t mid = (p00 >> 32) + (p01 & 0xffffffffu) + (p10 & 0xffffffffu);
    return p11 + (p01 >> 32) + (p10 >> 32) + (mid >> 32);
#endif
}

// Fixed-point weight of logit l given the row max m and 1/temperature.
FS_HD uint64_t weight(float l, float m, float inv_t) {
    const float e = expf((l - m) * inv_t);
    return e > 0.0f ? static_cast<uint64_t>(e * kWeightOne) : 0;  // NaN -> 0
}

}  // namespace sampling

// CPU reference of Backend::sample_rows: logits [rows, vocab] on the host.
// params, ids (and logprobs when not null) have `rows` entries.
void sample_rows_reference(const float* logits, int64_t rows, int64_t vocab,
                           const RowSampling* params, int32_t* ids, float* logprobs);

}  // namespace farsight

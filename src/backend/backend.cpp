// Defaults of the optional Backend ops: a backend that reports fused_decode() == false never
// gets the fused one-row decode calls.
#include "backend/backend.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "backend/sampling.h"
#include "core/error.h"

namespace farsight {

// The unfused sequence: rotate q/k in place, then store k/v and attend.
void Backend::rope_attention(int64_t layer, Tensor& qkv, const AttnParams& p, Tensor& out) {
    rope(qkv, p);
    attention(layer, qkv, p, out);
}

// The unfused sequence: the gate and up products, then silu(gate) * up.
void Backend::linear_silu(const Tensor& x, const Tensor& W, const Tensor* bias, Tensor& gate_up,
                          Tensor& out) {
    linear(x, W, bias, gate_up);
    silu_mul(gate_up, out);
}

void Backend::norm_linear(const Tensor&, const Tensor&, float, const Tensor&, const Tensor*,
                          Tensor&) {
    fail("backend {}: norm_linear is not implemented (fused_decode() is false)", name());
}
void Backend::linear_residual(const Tensor&, const Tensor&, const Tensor*, Tensor&) {
    fail("backend {}: linear_residual is not implemented (fused_decode() is false)", name());
}
void Backend::silu_linear_residual(const Tensor&, const Tensor&, const Tensor*, Tensor&) {
    fail("backend {}: silu_linear_residual is not implemented (fused_decode() is false)", name());
}

// ---- sampling on the backend (reference: backend/sampling.h) ----

void sample_rows_reference(const float* logits, int64_t rows, int64_t vocab,
                           const RowSampling* params, int32_t* ids, float* logprobs) {
    FS_CHECK(vocab > 0, "sample_rows: empty vocabulary");
    std::vector<int32_t> order;
    std::vector<uint64_t> w;
    for (int64_t r = 0; r < rows; ++r) {
        const float* x = logits + r * vocab;
        const RowSampling& p = params[r];
        const float* mx = std::max_element(x, x + vocab);
        float M = -INFINITY;
        for (int64_t i = 0; i < vocab; ++i) M = std::fmax(M, x[i]);
        int32_t id = static_cast<int32_t>(mx - x);
        if (!p.greedy()) {
            const float inv_t = 1.0f / p.temperature;
            w.resize(static_cast<size_t>(vocab));
            for (int64_t i = 0; i < vocab; ++i) w[static_cast<size_t>(i)] = sampling::weight(x[i], M, inv_t);
            order.resize(static_cast<size_t>(vocab));
            std::iota(order.begin(), order.end(), 0);
            std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
                const uint32_t ka = sampling::order_key(x[a]), kb = sampling::order_key(x[b]);
                return ka != kb ? ka > kb : a < b;
            });
            size_t keep = static_cast<size_t>(vocab);
            if (p.top_k > 0) keep = std::min(keep, static_cast<size_t>(p.top_k));
            uint64_t K = 0;
            for (size_t i = 0; i < keep; ++i) K += w[static_cast<size_t>(order[i])];
            if (p.top_p < 1.0f) {
                uint64_t target = static_cast<uint64_t>(static_cast<double>(p.top_p) * static_cast<double>(K));
                if (target == 0) target = 1;
                uint64_t cum = 0;
                size_t n = 0;
                while (n < keep && cum < target) cum += w[static_cast<size_t>(order[n++])];
                keep = std::max<size_t>(n, 1);
            }
            std::vector<char> kept(static_cast<size_t>(vocab), 0);
            uint64_t F = 0;
            for (size_t i = 0; i < keep; ++i) {
                kept[static_cast<size_t>(order[i])] = 1;
                F += w[static_cast<size_t>(order[i])];
            }
            if (F > 0) {
                const uint64_t target = sampling::mulhi64(sampling::draw_bits(p.seed, p.counter), F);
                uint64_t cum = 0;
                for (int64_t i = 0; i < vocab; ++i) {
                    if (!kept[static_cast<size_t>(i)]) continue;
                    cum += w[static_cast<size_t>(i)];
                    if (cum > target) {
                        id = static_cast<int32_t>(i);
                        break;
                    }
                }
            }
        }
        ids[r] = id;
        if (logprobs) {
            double m = -INFINITY;
            for (int64_t i = 0; i < vocab; ++i) m = std::max(m, static_cast<double>(x[i]));
            double s = 0;
            for (int64_t i = 0; i < vocab; ++i) s += std::exp(static_cast<double>(x[i]) - m);
            logprobs[r] = static_cast<float>(static_cast<double>(x[id]) - m - std::log(s));
        }
    }
}

void Backend::sample_rows(const Tensor& logits, const RowSampling* params, int32_t* ids,
                          float* logprobs) {
    FS_CHECK(logits.dtype == DType::F32, "sample_rows: logits must be f32");
    if (logits.rows == 0) return;
    std::vector<float> host(static_cast<size_t>(logits.numel()));
    to_host_f32(logits, host.data());
    sample_rows_reference(host.data(), logits.rows, logits.cols, params, ids, logprobs);
}

void Backend::sample_rows_enqueue(const Tensor&, const RowSampling*, bool) {
    fail("backend {}: no pipelined sampling (sample_feed() is false); use sample_rows", name());
}

void Backend::sample_rows_collect(int32_t*, float*) {
    fail("backend {}: no pipelined sampling (sample_feed() is false); use sample_rows", name());
}

}  // namespace farsight

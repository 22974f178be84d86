// RoPE variants, mirroring transformers' modeling_rope_utils.py. transformers builds inv_freq as
// float32 tensors (python floats combined with float32 tensors compute in float32), so this file
// does the same arithmetic in float with the scalar parts in double.
#include "model/rope.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace farsight {

int64_t rotary_dim(const ModelConfig& c) {
    return static_cast<int64_t>(static_cast<double>(c.head_dim) * c.rope.partial_rotary_factor);
}

bool rope_depends_on_length(const ModelConfig& c) {
    return c.rope.type == "dynamic" || c.rope.type == "longrope";
}

namespace {

// base ** (arange(0, dim, 2).float() / dim), in float32 like torch.
std::vector<float> pos_freqs(double base, int64_t dim) {
    std::vector<float> v(static_cast<size_t>(dim / 2));
    const float b = static_cast<float>(base);
    for (int64_t i = 0; i < dim / 2; ++i) {
        const float e = static_cast<float>(2 * i) / static_cast<float>(dim);
        v[static_cast<size_t>(i)] = std::pow(b, e);
    }
    return v;
}

std::vector<float> default_inv_freq(double base, int64_t dim) {
    std::vector<float> v = pos_freqs(base, dim);
    for (float& x : v) x = 1.0f / x;
    return v;
}

double yarn_get_mscale(double scale, double mscale) {
    if (scale <= 1.0) return 1.0;
    return 0.1 * mscale * std::log(scale) + 1.0;
}

}  // namespace

RopeFreqs rope_freqs(const ModelConfig& c, int64_t seq_len) {
    const RopeConfig& r = c.rope;
    const int64_t dim = rotary_dim(c);
    const double base = r.theta;
    RopeFreqs out;
    if (r.type == "default") {
        out.inv_freq = default_inv_freq(base, dim);
    } else if (r.type == "linear") {
        out.inv_freq = default_inv_freq(base, dim);
        for (float& x : out.inv_freq) x = x / static_cast<float>(r.factor);
    } else if (r.type == "dynamic") {
        // transformers: seq_len = max(position_ids) + 1; NTK-aware base once it exceeds
        // max_position_embeddings (original_max_position_embeddings when given).
        const double mpe = r.original_max_position_embeddings
                               ? *r.original_max_position_embeddings
                               : static_cast<double>(c.max_position_embeddings);
        const double L = static_cast<double>(seq_len) > mpe ? static_cast<double>(seq_len) : mpe;
        const double b = base * std::pow((r.factor * L / mpe) - (r.factor - 1.0),
                                         static_cast<double>(dim) / static_cast<double>(dim - 2));
        out.inv_freq = default_inv_freq(b, dim);
    } else if (r.type == "yarn") {
        double factor = r.factor;
        double orig = static_cast<double>(c.max_position_embeddings);
        if (r.original_max_position_embeddings) {
            orig = *r.original_max_position_embeddings;
            factor = static_cast<double>(c.max_position_embeddings) / orig;
        }
        double attn = 0;
        if (r.attention_factor) {
            attn = *r.attention_factor;
        } else if (r.mscale && r.mscale_all_dim && *r.mscale != 0 && *r.mscale_all_dim != 0) {
            attn = yarn_get_mscale(factor, *r.mscale) / yarn_get_mscale(factor, *r.mscale_all_dim);
        } else {
            attn = yarn_get_mscale(factor, 1.0);
        }
        auto correction_dim = [&](double rot) {
            return (static_cast<double>(dim) * std::log(orig / (rot * 2.0 * M_PI))) /
                   (2.0 * std::log(base));
        };
        double low = correction_dim(r.beta_fast), high = correction_dim(r.beta_slow);
        if (r.truncate) {
            low = std::floor(low);
            high = std::ceil(high);
        }
        low = std::max(low, 0.0);
        high = std::min(high, static_cast<double>(dim - 1));
        if (low == high) high += 0.001;
        const std::vector<float> pf = pos_freqs(base, dim);
        out.inv_freq.resize(pf.size());
        for (size_t i = 0; i < pf.size(); ++i) {
            // linear_ramp_factor: (arange(dim//2, float32) - low) / (high - low), clamped
            float ramp = (static_cast<float>(i) - static_cast<float>(low)) /
                         static_cast<float>(high - low);
            ramp = std::clamp(ramp, 0.0f, 1.0f);
            const float extrap_factor = 1.0f - ramp;
            const float inv_extra = 1.0f / pf[i];
            const float inv_inter = 1.0f / (static_cast<float>(factor) * pf[i]);
            out.inv_freq[i] = inv_inter * (1.0f - extrap_factor) + inv_extra * extrap_factor;
        }
        out.attention_scaling = static_cast<float>(attn);
    } else if (r.type == "llama3") {
        out.inv_freq = default_inv_freq(base, dim);
        const float factor = static_cast<float>(r.factor);
        const float lo = static_cast<float>(r.low_freq_factor);
        const float hi = static_cast<float>(r.high_freq_factor);
        const float old_ctx = static_cast<float>(*r.original_max_position_embeddings);
        const float low_wavelen = old_ctx / lo;
        const float high_wavelen = old_ctx / hi;
        for (float& f : out.inv_freq) {
            const float wavelen = 2.0f * static_cast<float>(M_PI) / f;
            float v = wavelen > low_wavelen ? f / factor : f;
            const bool medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
            if (medium) {
                const float smooth = (old_ctx / wavelen - lo) / (hi - lo);
                v = (1.0f - smooth) * v / factor + smooth * v;
            }
            f = v;
        }
    } else if (r.type == "longrope") {
        double factor = r.factor;
        double orig = static_cast<double>(c.max_position_embeddings);
        if (r.original_max_position_embeddings) {
            orig = *r.original_max_position_embeddings;
            factor = static_cast<double>(c.max_position_embeddings) / orig;
        }
        double attn;
        if (r.attention_factor) attn = *r.attention_factor;
        else if (factor <= 1.0) attn = 1.0;
        else attn = std::sqrt(1.0 + std::log(factor) / std::log(orig));
        const std::vector<double>& ext =
            static_cast<double>(seq_len) > orig ? r.long_factor : r.short_factor;
        const std::vector<float> pf = pos_freqs(base, dim);
        out.inv_freq.resize(pf.size());
        for (size_t i = 0; i < pf.size(); ++i)
            out.inv_freq[i] = 1.0f / (static_cast<float>(ext[i]) * pf[i]);
        out.attention_scaling = static_cast<float>(attn);
    } else {
        fail("unsupported rope type {}", r.type);
    }
    return out;
}

}  // namespace farsight

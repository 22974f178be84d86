#include "model/model.h"

#include <atomic>
#include <cmath>

#include "core/error.h"
#include "model/rope.h"

namespace farsight {

namespace {
std::string shape_str(const std::vector<int64_t>& s) {
    std::string r = "[";
    for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + "]";
}
// A [n, 1] column (biases concatenated part by part) seen as the [1, n] row linear() expects.
Tensor as_row(Tensor t) {
    t.cols = t.rows;
    t.rows = 1;
    return t;
}
std::string layer_name(int64_t i, const char* suffix) {
    return "model.layers." + std::to_string(i) + "." + suffix;
}
}  // namespace

std::vector<TensorSpec> expected_tensors(const ModelConfig& c) {
    const int64_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
    const int64_t Q = c.q_dim(), KV = c.kv_dim();
    std::vector<TensorSpec> t;
    t.push_back({"model.embed_tokens.weight", {V, H}, true});
    for (int64_t i = 0; i < c.num_layers; ++i) {
        t.push_back({layer_name(i, "input_layernorm.weight"), {H}, false});
        t.push_back({layer_name(i, "self_attn.q_proj.weight"), {Q, H}, true});
        t.push_back({layer_name(i, "self_attn.k_proj.weight"), {KV, H}, true});
        t.push_back({layer_name(i, "self_attn.v_proj.weight"), {KV, H}, true});
        if (c.attention_bias) {
            t.push_back({layer_name(i, "self_attn.q_proj.bias"), {Q}, false});
            t.push_back({layer_name(i, "self_attn.k_proj.bias"), {KV}, false});
            t.push_back({layer_name(i, "self_attn.v_proj.bias"), {KV}, false});
        }
        t.push_back({layer_name(i, "self_attn.o_proj.weight"), {H, Q}, true});
        if (c.o_bias) t.push_back({layer_name(i, "self_attn.o_proj.bias"), {H}, false});
        t.push_back({layer_name(i, "post_attention_layernorm.weight"), {H}, false});
        t.push_back({layer_name(i, "mlp.gate_proj.weight"), {I, H}, true});
        t.push_back({layer_name(i, "mlp.up_proj.weight"), {I, H}, true});
        t.push_back({layer_name(i, "mlp.down_proj.weight"), {H, I}, true});
        if (c.mlp_bias) {
            t.push_back({layer_name(i, "mlp.gate_proj.bias"), {I}, false});
            t.push_back({layer_name(i, "mlp.up_proj.bias"), {I}, false});
            t.push_back({layer_name(i, "mlp.down_proj.bias"), {H}, false});
        }
    }
    t.push_back({"model.norm.weight", {H}, false});
    if (!c.tie_word_embeddings) t.push_back({"lm_head.weight", {V, H}, true});
    return t;
}

int64_t count_parameters(const ModelConfig& c) {
    int64_t n = 0;
    for (const auto& t : expected_tensors(c)) {
        int64_t k = 1;
        for (auto d : t.shape) k *= d;
        n += k;
    }
    return n;
}

size_t validate_weights(const ModelConfig& c, const WeightSource& w) {
    size_t total = 0;
    for (const TensorSpec& s : expected_tensors(c)) {
        const TensorInfo& ti = w.get(s.name);
        FS_CHECK(ti.dtype == DType::F32 || ti.dtype == DType::F16 || ti.dtype == DType::BF16,
                 "tensor '{}' in {} has dtype {}; farsight loads F32, F16 and BF16 weights", s.name,
                 ti.file, dtype_name(ti.dtype));
        FS_CHECK(ti.shape == s.shape,
                 "tensor '{}' in {} has shape {}, but config.json implies {} (hidden_size={}, "
                 "intermediate_size={}, heads={}, kv_heads={}, head_dim={}, vocab_size={})",
                 s.name, ti.file, shape_str(ti.shape), shape_str(s.shape), c.hidden_size,
                 c.intermediate_size, c.num_heads, c.num_kv_heads, c.head_dim, c.vocab_size);
        total += ti.nbytes;
    }
    return total;
}

Model::Model(ModelConfig cfg, std::shared_ptr<const WeightSource> weights, Backend& backend,
             std::optional<DType> weight_dtype, const ProgressFn& progress)
    : cfg_(std::move(cfg)), weights_(std::move(weights)), be_(backend), progress_(progress) {
    const ModelConfig& c = cfg_;
    // Validate everything before loading anything.
    progress_total_ = validate_weights(c, *weights_);
    const DType stored = weights_->get("model.embed_tokens.weight").dtype;
    wdtype_ = weight_dtype ? *weight_dtype : be_.default_weight_dtype(stored);
    fused_ = be_.fuse_weights();

    const int64_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
    const int64_t Q = c.q_dim(), KV = c.kv_dim();
    embed_ = load("model.embed_tokens.weight", true, V, H);
    layers_.resize(static_cast<size_t>(c.num_layers));
    for (int64_t i = 0; i < c.num_layers; ++i) {
        Layer& L = layers_[static_cast<size_t>(i)];
        L.ln1 = load(layer_name(i, "input_layernorm.weight"), false, 1, H);
        L.ln2 = load(layer_name(i, "post_attention_layernorm.weight"), false, 1, H);
        const std::string q = layer_name(i, "self_attn.q_proj."), k = layer_name(i, "self_attn.k_proj."),
                          v = layer_name(i, "self_attn.v_proj.");
        const std::string g = layer_name(i, "mlp.gate_proj."), u = layer_name(i, "mlp.up_proj.");
        if (fused_) {
            auto w = [&](const std::string& n) { return &weights_->get(n); };
            L.qkv = be_.load_concat({w(q + "weight"), w(k + "weight"), w(v + "weight")}, {Q, KV, KV},
                                    wdtype_, H);
            if (c.attention_bias)
                L.bqkv = as_row(be_.load_concat({w(q + "bias"), w(k + "bias"), w(v + "bias")},
                                                {Q, KV, KV}, be_.activation_dtype(), 1));
            L.gate_up = be_.load_concat({w(g + "weight"), w(u + "weight")}, {I, I}, wdtype_, H);
            if (c.mlp_bias)
                L.bgate_up = as_row(be_.load_concat({w(g + "bias"), w(u + "bias")}, {I, I},
                                                    be_.activation_dtype(), 1));
            weight_bytes_ += L.qkv.nbytes() + L.gate_up.nbytes();
        } else {
            L.q = load(q + "weight", true, Q, H);
            L.k = load(k + "weight", true, KV, H);
            L.v = load(v + "weight", true, KV, H);
            L.bq = load_opt(q + "bias", c.attention_bias, 1, Q);
            L.bk = load_opt(k + "bias", c.attention_bias, 1, KV);
            L.bv = load_opt(v + "bias", c.attention_bias, 1, KV);
            L.gate = load(g + "weight", true, I, H);
            L.up = load(u + "weight", true, I, H);
            L.bgate = load_opt(g + "bias", c.mlp_bias, 1, I);
            L.bup = load_opt(u + "bias", c.mlp_bias, 1, I);
        }
        L.o = load(layer_name(i, "self_attn.o_proj.weight"), true, H, Q);
        L.bo = load_opt(layer_name(i, "self_attn.o_proj.bias"), c.o_bias, 1, H);
        L.down = load(layer_name(i, "mlp.down_proj.weight"), true, H, I);
        L.bdown = load_opt(layer_name(i, "mlp.down_proj.bias"), c.mlp_bias, 1, H);
        if (progress_ && fused_) progress_(weight_bytes_, progress_total_);
    }
    norm_ = load("model.norm.weight", false, 1, H);
    lm_head_ = c.tie_word_embeddings ? embed_ : load("lm_head.weight", true, V, H);

    attn_.resize(layers_.size());
    for (size_t i = 0; i < layers_.size(); ++i) {
        AttnParams& p = attn_[i];
        p.num_heads = c.num_heads;
        p.num_kv_heads = c.num_kv_heads;
        p.head_dim = c.head_dim;
        p.rotary_dim = rotary_dim(c);
        p.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.head_dim)));
        p.window = c.layer_window.empty() ? 0 : c.layer_window[i];
    }
}

size_t Model::decode_bytes(int64_t ctx) const {
    const size_t embed = cfg_.tie_word_embeddings ? 0 : embed_.nbytes();
    const size_t kv = static_cast<size_t>(2 * cfg_.num_layers * cfg_.kv_dim() * ctx) *
                      dtype_size(be_.kv_layout().dtype);
    return weight_bytes_ - embed + kv;
}

Tensor Model::load(const std::string& name, bool matrix, int64_t rows, int64_t cols) {
    const TensorInfo& ti = weights_->get(name);
    Tensor t = be_.load_weight(ti, matrix ? wdtype_ : be_.activation_dtype(), rows, cols);
    weight_bytes_ += t.nbytes();
    if (progress_) progress_(weight_bytes_, progress_total_);
    return t;
}

Tensor Model::load_opt(const std::string& name, bool present, int64_t rows, int64_t cols) {
    return present ? load(name, false, rows, cols) : Tensor{};
}

void Model::ensure_workspace(int64_t T, int64_t R) {
    static std::atomic<uint64_t> next_id{1};
    const ModelConfig& c = cfg_;
    const DType a = be_.activation_dtype();
    if (T > ws_tokens_ || R > ws_rows_) ws_id_ = next_id.fetch_add(1);
    if (T > ws_tokens_) {
        const int64_t cap = std::max<int64_t>(T, 16);
        x_ = be_.alloc(be_.residual_dtype(), cap, c.hidden_size);
        h_ = be_.alloc(a, cap, c.hidden_size);
        qkv_ = be_.alloc(a, cap, c.q_dim() + 2 * c.kv_dim());
        attn_out_ = be_.alloc(a, cap, c.q_dim());
        o_ = be_.alloc(a, cap, c.hidden_size);
        gu_ = be_.alloc(a, cap, 2 * c.intermediate_size);
        act_ = be_.alloc(a, cap, c.intermediate_size);
        down_ = be_.alloc(a, cap, c.hidden_size);
        ws_tokens_ = cap;
    }
    if (R > ws_rows_) {
        const int64_t cap = std::max<int64_t>(R, 16);
        last_ = be_.alloc(a, cap, c.hidden_size);
        logits_ = be_.alloc(DType::F32, cap, c.vocab_size);  // f32 logits (bf16 inputs on GPU)
        ws_rows_ = cap;
    }
}

void Model::forward(const BatchMeta& meta, float* logits) {
    Tensor lg = forward_device(meta);
    if (lg.rows == 0) return;
    be_.to_host_f32(lg, logits);
}

Tensor Model::forward_device(const BatchMeta& meta) {
    const ModelConfig& c = cfg_;
    const int64_t T0 = meta.num_tokens();
    const int64_t R = static_cast<int64_t>(meta.logit_rows.size());
    FS_CHECK(T0 > 0, "forward called with no tokens");
    // The backend may compute the step over more rows (padding to a recorded batch size).
    const int64_t T = be_.step_rows(meta);
    FS_CHECK(T >= T0, "backend step_rows {} < {} tokens", T, T0);
    const int64_t Rp = R + (T - T0);
    ensure_workspace(T, Rp);
    Tensor x = x_.rows_view(0, T), h = h_.rows_view(0, T), qkv = qkv_.rows_view(0, T),
           attn = attn_out_.rows_view(0, T), o = o_.rows_view(0, T), gu = gu_.rows_view(0, T),
           act = act_.rows_view(0, T), down = down_.rows_view(0, T);
    const float eps = static_cast<float>(c.rms_norm_eps);
    const int64_t Q = c.q_dim(), KV = c.kv_dim(), I = c.intermediate_size;
    auto bias = [](const Tensor& b) { return b.empty() ? nullptr : &b; };

    const bool fused_decode =
        fused_ && be_.fused_decode(T, std::max<int64_t>(c.hidden_size, c.intermediate_size));
    if (fused_decode) {  // one-row decode: each norm / silu / residual add inside a linear
        if (!be_.begin_step(meta, ws_id_)) {
            be_.embedding(embed_, x);
            for (size_t li = 0; li < layers_.size(); ++li) {
                const Layer& L = layers_[li];
                be_.norm_linear(x, L.ln1, eps, L.qkv, bias(L.bqkv), qkv);
                be_.rope_attention(static_cast<int64_t>(li), qkv, attn_[li], attn);
                be_.linear_residual(attn, L.o, bias(L.bo), x);
                be_.norm_linear(x, L.ln2, eps, L.gate_up, bias(L.bgate_up), gu);
                be_.silu_linear_residual(gu, L.down, bias(L.bdown), x);
            }
            be_.rmsnorm(x, norm_, eps, h);
            if (Rp > 0) {
                Tensor last = last_.rows_view(0, Rp);
                be_.gather_logit_rows(h, last);
                Tensor lg = logits_.rows_view(0, Rp);
                be_.linear(last, lm_head_, nullptr, lg);
            }
        }
    } else if (!be_.begin_step(meta, ws_id_)) {
        be_.embedding(embed_, x);
        for (size_t li = 0; li < layers_.size(); ++li) {
            const Layer& L = layers_[li];
            if (li == 0) be_.rmsnorm(x, L.ln1, eps, h);
            else be_.add_rmsnorm(x, down, L.ln1, eps, h);  // residual += mlp output
            if (fused_) {
                be_.linear(h, L.qkv, bias(L.bqkv), qkv);
            } else {
                be_.linear(h, L.q, bias(L.bq), qkv, 0);
                be_.linear(h, L.k, bias(L.bk), qkv, Q);
                be_.linear(h, L.v, bias(L.bv), qkv, Q + KV);
            }
            be_.rope_attention(static_cast<int64_t>(li), qkv, attn_[li], attn);
            be_.linear(attn, L.o, bias(L.bo), o);
            be_.add_rmsnorm(x, o, L.ln2, eps, h);  // residual += attention output
            if (fused_) {
                be_.linear_silu(h, L.gate_up, bias(L.bgate_up), gu, act);
            } else {
                be_.linear(h, L.gate, bias(L.bgate), gu, 0);
                be_.linear(h, L.up, bias(L.bup), gu, I);
                be_.silu_mul(gu, act);
            }
            be_.linear(act, L.down, bias(L.bdown), down);
        }
        be_.add_rmsnorm(x, down, norm_, eps, h);
        if (Rp > 0) {
            Tensor last = last_.rows_view(0, Rp);
            be_.gather_logit_rows(h, last);
            Tensor lg = logits_.rows_view(0, Rp);
            be_.linear(last, lm_head_, nullptr, lg);
        }
    }
    be_.end_step();
    return logits_.rows_view(0, R);
}

}  // namespace farsight

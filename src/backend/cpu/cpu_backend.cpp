// The CPU backend: the always-available reference. f32 activations and KV cache, weights used in
// their stored dtype (F32/F16/BF16) straight from the memory map, f32 accumulation.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>

#include "backend/backend.h"
#include "backend/cpu/matmul.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "io/safetensors.h"

namespace farsight {

namespace {

std::shared_ptr<void> aligned_buffer(size_t bytes) {
    const size_t n = std::max<size_t>(64, (bytes + 63) / 64 * 64);
    void* p = std::aligned_alloc(64, n);
    FS_CHECK(p != nullptr, "out of host memory allocating {} bytes", bytes);
    return std::shared_ptr<void>(p, std::free);
}

size_t host_available_memory() {
    std::ifstream f("/proc/meminfo");
    std::string key;
    size_t kb = 0;
    std::string unit;
    while (f >> key >> kb >> unit)
        if (key == "MemAvailable:") return kb * 1024;
    return 0;
}

class CpuBackend final : public Backend {
public:
    explicit CpuBackend(int n_threads) : pool_(n_threads) {}

    std::string name() const override { return "cpu"; }
    DeviceKind kind() const override { return DeviceKind::CPU; }
    std::string device_description() const override {
        return fmt::format("CPU ({} threads)", pool_.size());
    }
    DType activation_dtype() const override { return DType::F32; }
    DType default_weight_dtype(DType stored) const override { return stored; }
    bool fuse_weights() const override { return false; }

    Tensor alloc(DType dtype, int64_t rows, int64_t cols) override {
        Tensor t;
        t.dtype = dtype;
        t.rows = rows;
        t.cols = cols;
        t.owner = aligned_buffer(t.nbytes());
        t.data = t.owner.get();
        return t;
    }

    Tensor load_weight(const TensorInfo& src, DType dtype, int64_t rows, int64_t cols) override {
        FS_CHECK(src.numel() == rows * cols, "tensor '{}' has {} elements, expected {}x{}",
                 src.name, src.numel(), rows, cols);
        if (src.dtype == dtype) {  // borrow the mapping: no copy
            Tensor t;
            t.dtype = dtype;
            t.rows = rows;
            t.cols = cols;
            t.data = const_cast<void*>(src.data);
            return t;
        }
        Tensor t = alloc(dtype, rows, cols);
        convert(src, dtype, t.data, static_cast<size_t>(rows * cols));
        return t;
    }

    Tensor load_concat(const std::vector<const TensorInfo*>& parts,
                       const std::vector<int64_t>& part_rows, DType dtype, int64_t cols) override {
        int64_t rows = 0;
        for (int64_t r : part_rows) rows += r;
        Tensor t = alloc(dtype, rows, cols);
        char* dst = static_cast<char*>(t.data);
        for (size_t i = 0; i < parts.size(); ++i) {
            const size_t n = static_cast<size_t>(part_rows[i] * cols);
            if (parts[i]) convert(*parts[i], dtype, dst, n);
            else std::memset(dst, 0, n * dtype_size(dtype));
            dst += n * dtype_size(dtype);
        }
        return t;
    }

    void to_host_f32(const Tensor& t, float* dst) override {
        convert_to_f32(t.dtype, t.data, dst, static_cast<size_t>(t.numel()));
    }
    size_t free_memory() const override { return host_available_memory(); }

    void init_kv(const KVLayout& layout) override {
        FS_CHECK(layout.dtype == DType::F32, "the CPU backend keeps its KV cache in f32");
        kv_ = layout;
        const size_t per = static_cast<size_t>(layout.num_blocks * layout.block_size *
                                               layout.num_kv_heads * layout.head_dim);
        k_.clear();
        v_.clear();
        for (int64_t l = 0; l < layout.num_layers; ++l) {
            k_.push_back(aligned_buffer(per * sizeof(float)));
            v_.push_back(aligned_buffer(per * sizeof(float)));
        }
    }
    const KVLayout& kv_layout() const override { return kv_; }

    void begin_forward(const BatchMeta& meta) override {
        meta_ = &meta;
        token_seq_.assign(meta.tokens.size(), 0);
        for (size_t s = 0; s < meta.seqs.size(); ++s) {
            const SeqSlice& q = meta.seqs[s];
            for (int32_t j = 0; j < q.q_len; ++j)
                token_seq_[static_cast<size_t>(q.q_start + j)] = static_cast<int32_t>(s);
        }
        rope_cache_dim_ = -1;
    }

    void embedding(const Tensor& table, Tensor& out) override {
        const auto& tok = meta_->tokens;
        for (size_t t = 0; t < tok.size(); ++t) {
            FS_CHECK(tok[t] >= 0 && tok[t] < table.rows, "token id {} out of range [0, {})",
                     tok[t], table.rows);
            convert_to_f32(table.dtype,
                           static_cast<const char*>(table.data) + tok[t] * table.row_bytes(),
                           f32(out) + t * out.cols, static_cast<size_t>(table.cols));
        }
    }

    void rmsnorm(const Tensor& x, const Tensor& w, float eps, Tensor& out) override {
        const int64_t n = x.cols;
        const float* wp = f32(w);
        pool_.parallel_for(x.rows, [&](int64_t r0, int64_t r1, int) {
            for (int64_t r = r0; r < r1; ++r) norm_row(f32(x) + r * n, wp, eps, n, f32(out) + r * n);
        });
    }

    void add_rmsnorm(Tensor& residual, const Tensor& x, const Tensor& w, float eps,
                     Tensor& out) override {
        const int64_t n = x.cols;
        const float* wp = f32(w);
        pool_.parallel_for(x.rows, [&](int64_t r0, int64_t r1, int) {
            for (int64_t r = r0; r < r1; ++r) {
                float* res = f32(residual) + r * n;
                const float* xr = f32(x) + r * n;
                for (int64_t i = 0; i < n; ++i) res[i] += xr[i];
                norm_row(res, wp, eps, n, f32(out) + r * n);
            }
        });
    }

    void linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& out,
                int64_t col0) override {
        const int64_t T = x.rows, K = x.cols, N = w.rows;
        FS_CHECK(w.cols == K && out.rows == T && col0 + N <= out.cols,
                 "linear: shape mismatch x[{}x{}] w[{}x{}] out[{}x{}] col0 {}", T, K, w.rows,
                 w.cols, out.rows, out.cols, col0);
        const float* b = bias ? f32(*bias) : nullptr;
        if (col0 == 0 && N == out.cols) {
            cpu::matmul(f32(x), T, K, w.data, w.dtype, N, b, f32(out), pool_);
        } else if (T == 1) {
            cpu::matmul(f32(x), T, K, w.data, w.dtype, N, b, f32(out) + col0, pool_);
        } else {
            scratch_.resize(static_cast<size_t>(T * N));
            cpu::matmul(f32(x), T, K, w.data, w.dtype, N, b, scratch_.data(), pool_);
            for (int64_t t = 0; t < T; ++t)
                std::memcpy(f32(out) + t * out.cols + col0, scratch_.data() + t * N,
                            static_cast<size_t>(N) * sizeof(float));
        }
    }

    void rope(Tensor& qkv, const AttnParams& p) override {
        const int64_t half = p.rotary_dim / 2;
        build_rope_cache(half);
        const int64_t T = qkv.rows;
        const int64_t nheads = p.num_heads + p.num_kv_heads;  // q heads then k heads
        pool_.parallel_for(T, [&](int64_t t0, int64_t t1, int) {
            for (int64_t t = t0; t < t1; ++t) {
                const float* cs = rope_cos_.data() + t * half;
                const float* sn = rope_sin_.data() + t * half;
                float* row = f32(qkv) + t * qkv.cols;
                for (int64_t h = 0; h < nheads; ++h) {
                    float* x = row + h * p.head_dim;
                    for (int64_t i = 0; i < half; ++i) {
                        const float a = x[i], b = x[i + half];
                        // q*cos + rotate_half(q)*sin, rotate_half(q) = [-q2, q1]
                        x[i] = a * cs[i] + (-b) * sn[i];
                        x[i + half] = b * cs[i] + a * sn[i];
                    }
                }
            }
        });
    }

    void attention(int64_t layer, const Tensor& qkv, const AttnParams& p, Tensor& out) override {
        const BatchMeta& m = *meta_;
        const int64_t T = qkv.rows, D = p.head_dim, KVH = p.num_kv_heads, H = p.num_heads;
        const int64_t group = H / KVH;
        const int64_t bs = kv_.block_size;
        float* kc = static_cast<float*>(k_.at(static_cast<size_t>(layer)).get());
        float* vc = static_cast<float*>(v_.at(static_cast<size_t>(layer)).get());
        const int64_t slot_stride = KVH * D;
        // 1) write the new keys/values into the paged cache
        for (int64_t t = 0; t < T; ++t) {
            const float* row = f32(qkv) + t * qkv.cols;
            const int64_t slot = m.slot_mapping[static_cast<size_t>(t)];
            std::memcpy(kc + slot * slot_stride, row + H * D, static_cast<size_t>(KVH * D) * 4);
            std::memcpy(vc + slot * slot_stride, row + (H + KVH) * D,
                        static_cast<size_t>(KVH * D) * 4);
        }
        // 2) each (token, head): softmax(scale * q.k) over visible cached keys, times v
        const int64_t max_ctx = std::max<int64_t>(m.max_context_len, 1);
        scores_.resize(static_cast<size_t>(pool_.size() * max_ctx));
        pool_.parallel_for(T * H, [&](int64_t i0, int64_t i1, int tid) {
            float* sc = scores_.data() + tid * max_ctx;
            for (int64_t i = i0; i < i1; ++i) {
                const int64_t t = i / H, h = i % H, kvh = h / group;
                const SeqSlice& s = m.seqs[static_cast<size_t>(token_seq_[static_cast<size_t>(t)])];
                const int32_t* bt = m.block_tables.data() + s.block_table_offset;
                const int64_t pos = s.n_past + (t - s.q_start);
                const int64_t lo = p.window > 0 ? std::max<int64_t>(0, pos - p.window + 1) : 0;
                const float* q = f32(qkv) + t * qkv.cols + h * D;
                float mx = -INFINITY;
                for (int64_t k = lo; k <= pos; ++k) {
                    const int64_t slot = static_cast<int64_t>(bt[k / bs]) * bs + k % bs;
                    const float* kv = kc + slot * slot_stride + kvh * D;
                    float dot = 0;
                    for (int64_t d = 0; d < D; ++d) dot += q[d] * kv[d];
                    dot *= p.scale;
                    sc[k - lo] = dot;
                    mx = std::max(mx, dot);
                }
                float sum = 0;
                for (int64_t k = lo; k <= pos; ++k) {
                    sc[k - lo] = std::exp(sc[k - lo] - mx);
                    sum += sc[k - lo];
                }
                const float inv = 1.0f / sum;
                float* o = f32(out) + t * out.cols + h * D;
                for (int64_t d = 0; d < D; ++d) o[d] = 0;
                for (int64_t k = lo; k <= pos; ++k) {
                    const int64_t slot = static_cast<int64_t>(bt[k / bs]) * bs + k % bs;
                    const float* vv = vc + slot * slot_stride + kvh * D;
                    const float wgt = sc[k - lo] * inv;
                    for (int64_t d = 0; d < D; ++d) o[d] += wgt * vv[d];
                }
            }
        });
    }

    void silu_mul(const Tensor& gate_up, Tensor& out) override {
        const int64_t I = out.cols;
        pool_.parallel_for(out.rows, [&](int64_t r0, int64_t r1, int) {
            for (int64_t r = r0; r < r1; ++r) {
                const float* g = f32(gate_up) + r * gate_up.cols;
                const float* u = g + I;
                float* o = f32(out) + r * I;
                for (int64_t i = 0; i < I; ++i) o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
            }
        });
    }

    void gather_logit_rows(const Tensor& x, Tensor& out) override {
        const auto& rows = meta_->logit_rows;
        for (size_t i = 0; i < rows.size(); ++i)
            std::memcpy(f32(out) + i * out.cols, f32(x) + rows[i] * x.cols, x.row_bytes());
    }

    void synchronize() override {}

private:
    static float* f32(const Tensor& t) { return static_cast<float*>(t.data); }

    static void norm_row(const float* x, const float* w, float eps, int64_t n, float* out) {
        double ss = 0;
        for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
        const float var = static_cast<float>(ss / static_cast<double>(n));
        const float r = 1.0f / std::sqrt(var + eps);
        for (int64_t i = 0; i < n; ++i) out[i] = w[i] * (x[i] * r);
    }

    void convert(const TensorInfo& src, DType dtype, void* dst, size_t n) {
        if (src.dtype == dtype) {
            std::memcpy(dst, src.data, n * dtype_size(dtype));
            return;
        }
        std::vector<float> tmp(n);
        convert_to_f32(src.dtype, src.data, tmp.data(), n);
        convert_from_f32(tmp.data(), dtype, dst, n);
    }

    void build_rope_cache(int64_t half) {
        if (rope_cache_dim_ == half) return;
        const BatchMeta& m = *meta_;
        const size_t T = m.tokens.size();
        rope_cos_.resize(T * static_cast<size_t>(half));
        rope_sin_.resize(T * static_cast<size_t>(half));
        for (size_t t = 0; t < T; ++t) {
            const RopeFreqs& rf =
                m.rope[static_cast<size_t>(m.seqs[static_cast<size_t>(token_seq_[t])].rope_variant)];
            FS_CHECK(static_cast<int64_t>(rf.inv_freq.size()) == half, "rope: inv_freq size {} != {}",
                     rf.inv_freq.size(), half);
            const float pos = static_cast<float>(m.positions[t]);
            for (int64_t i = 0; i < half; ++i) {
                const float ang = pos * rf.inv_freq[static_cast<size_t>(i)];  // f32, like torch
                rope_cos_[t * half + i] = std::cos(ang) * rf.attention_scaling;
                rope_sin_[t * half + i] = std::sin(ang) * rf.attention_scaling;
            }
        }
        rope_cache_dim_ = half;
    }

    ThreadPool pool_;
    KVLayout kv_;
    std::vector<std::shared_ptr<void>> k_, v_;
    const BatchMeta* meta_ = nullptr;
    std::vector<int32_t> token_seq_;
    std::vector<float> scratch_, scores_, rope_cos_, rope_sin_;
    int64_t rope_cache_dim_ = -1;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(int n_threads) {
    if (n_threads <= 0) {
        const char* e = std::getenv("FARSIGHT_THREADS");
        n_threads = e ? std::atoi(e) : 0;
    }
    return std::make_unique<CpuBackend>(n_threads);
}

}  // namespace farsight

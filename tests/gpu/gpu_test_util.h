#pragma once
// Helpers of the GPU test suite: random host data rounded through the device dtype, upload via
// the public Backend interface, download, error norms. Every test skips without a CUDA device.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"
#include "core/dtype.h"
#include "core/error.h"
#include "io/safetensors.h"

namespace farsight::gputest {

#define FS_REQUIRE_GPU()                                                     \
    do {                                                                     \
        if (!::farsight::cuda_available()) GTEST_SKIP() << "no CUDA device"; \
    } while (0)

// FARSIGHT_GPU_TEST_SMALL=1 shrinks problem sizes (for compute-sanitizer runs).
inline bool small_mode() {
    const char* s = std::getenv("FARSIGHT_GPU_TEST_SMALL");
    return s && s[0] == '1';
}

inline Backend& gpu(DType act = DType::BF16) {
    static std::unique_ptr<Backend> bf, hf;
    auto& b = act == DType::BF16 ? bf : hf;
    if (!b) b = make_cuda_backend_with(0, act);
    return *b;
}

inline std::mt19937& rng() {
    static std::mt19937 r(12345);
    return r;
}

inline float round_to(DType dt, float x) {
    if (dt == DType::BF16) return bf16_to_f32(f32_to_bf16(x));
    if (dt == DType::F16) return f16_to_f32(f32_to_f16(x));
    return x;
}

// n values uniform in [-scale, scale], rounded through dt (so the device sees them exactly).
inline std::vector<float> randv(size_t n, DType dt, float scale = 1.0f) {
    std::uniform_real_distribution<float> u(-scale, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = round_to(dt, u(rng()));
    return v;
}

// Upload through load_weight (the only public host->device path).
inline Tensor upload(Backend& b, const std::vector<float>& v, int64_t rows, int64_t cols,
                     DType dt) {
    TensorInfo info;
    info.name = "test";
    info.dtype = DType::F32;
    info.shape = {rows, cols};
    info.data = v.data();
    info.nbytes = v.size() * 4;
    info.file = "<test>";
    Tensor t = b.load_weight(info, dt, rows, cols);
    b.synchronize();
    return t;
}

// A device tensor filled with NaN, so that anything a kernel forgets to write shows.
inline Tensor poisoned(Backend& b, int64_t rows, int64_t cols, DType dt) {
    std::vector<float> nan(static_cast<size_t>(rows * cols),
                           std::numeric_limits<float>::quiet_NaN());
    return upload(b, nan, rows, cols, dt);
}

inline std::vector<float> download(Backend& b, const Tensor& t) {
    std::vector<float> v(static_cast<size_t>(t.numel()));
    b.to_host_f32(t, v.data());
    return v;
}

// Appends a sequence with block table `table` (blocks of bs tokens) computing q_len tokens after
// n_past cached ones (token ids 0) to m.
inline void append_seq(BatchMeta& m, const std::vector<int32_t>& table, int64_t bs, int32_t n_past,
                       int32_t q_len, int32_t rope_variant = 0) {
    SeqSlice sl;
    sl.q_start = static_cast<int32_t>(m.tokens.size());
    sl.q_len = q_len;
    sl.n_past = n_past;
    sl.rope_variant = rope_variant;
    sl.block_table_offset = static_cast<int32_t>(m.block_tables.size());
    sl.n_blocks = static_cast<int32_t>(table.size());
    m.block_tables.insert(m.block_tables.end(), table.begin(), table.end());
    for (int32_t i = 0; i < q_len; ++i) {
        const int32_t pos = n_past + i;
        m.tokens.push_back(0);
        m.positions.push_back(pos);
        m.slot_mapping.push_back(static_cast<int32_t>(table[pos / bs] * bs + pos % bs));
    }
    m.seqs.push_back(sl);
    m.max_context_len = std::max(m.max_context_len, sl.context_len());
}

// ||got - ref|| / ||ref||; NaN anywhere gives +inf.
inline double rel_l2(const std::vector<float>& got, const std::vector<double>& ref) {
    if (got.size() != ref.size()) return std::numeric_limits<double>::infinity();
    double num = 0, den = 0;
    for (size_t i = 0; i < got.size(); ++i) {
        if (!std::isfinite(got[i])) return std::numeric_limits<double>::infinity();
        double d = got[i] - ref[i];
        num += d * d;
        den += ref[i] * ref[i];
    }
    return std::sqrt(num / (den > 0 ? den : 1e-300));
}

}  // namespace farsight::gputest

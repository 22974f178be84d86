// Element-wise ops and linear of the CUDA backend against naive fp64 host references computed
// from the same dtype-rounded inputs.
#include <algorithm>
#include <cstdlib>
#include <numeric>
#include <optional>

#include "gpu_test_util.h"

using namespace farsight;
using namespace farsight::gputest;

namespace {

BatchMeta simple_meta(const std::vector<int32_t>& tokens) {
    BatchMeta m;
    m.tokens = tokens;
    const int32_t T = static_cast<int32_t>(tokens.size());
    for (int32_t t = 0; t < T; ++t) {
        m.positions.push_back(t);
        m.slot_mapping.push_back(-1);
    }
    SeqSlice s;
    s.q_len = T;
    m.seqs.push_back(s);
    m.rope.push_back(RopeFreqs{{1.0f}, 1.0f});
    return m;
}

}  // namespace

class CudaOps : public ::testing::TestWithParam<DType> {};

TEST_P(CudaOps, RmsNorm) {
    FS_REQUIRE_GPU();
    const DType dt = GetParam();
    Backend& b = gpu(dt);
    for (int64_t cols : {64, 1000, 4096}) {
        const int64_t rows = 7;
        auto x = randv(rows * cols, dt, 3.0f);
        auto w = randv(cols, dt, 2.0f);
        Tensor tx = upload(b, x, rows, cols, dt), tw = upload(b, w, 1, cols, dt);
        Tensor out = poisoned(b, rows, cols, dt);
        const float eps = 1e-5f;
        b.rmsnorm(tx, tw, eps, out);
        auto got = download(b, out);
        std::vector<double> ref(rows * cols);
        for (int64_t r = 0; r < rows; ++r) {
            double ss = 0;
            for (int64_t i = 0; i < cols; ++i) ss += double(x[r * cols + i]) * x[r * cols + i];
            double inv = 1.0 / std::sqrt(ss / cols + eps);
            for (int64_t i = 0; i < cols; ++i) ref[r * cols + i] = w[i] * (x[r * cols + i] * inv);
        }
        EXPECT_LT(rel_l2(got, ref), 1e-2) << "cols=" << cols;
    }
}

TEST_P(CudaOps, AddRmsNorm) {
    FS_REQUIRE_GPU();
    const DType dt = GetParam();
    Backend& b = gpu(dt);
    const int64_t rows = 5, cols = 2048;
    auto res = randv(rows * cols, dt, 2.0f), x = randv(rows * cols, dt, 2.0f);
    auto w = randv(cols, dt, 1.5f);
    Tensor tr = upload(b, res, rows, cols, dt), tx = upload(b, x, rows, cols, dt);
    Tensor tw = upload(b, w, 1, cols, dt), out = poisoned(b, rows, cols, dt);
    b.add_rmsnorm(tr, tx, tw, 1e-6f, out);
    auto got_res = download(b, tr), got = download(b, out);
    std::vector<double> ref_res(rows * cols), ref(rows * cols);
    for (int64_t r = 0; r < rows; ++r) {
        double ss = 0;
        for (int64_t i = 0; i < cols; ++i) {
            size_t k = r * cols + i;
            ref_res[k] = round_to(dt, res[k] + x[k]);  // transformers: residual add in dtype
            ss += ref_res[k] * ref_res[k];
        }
        double inv = 1.0 / std::sqrt(ss / cols + 1e-6);
        for (int64_t i = 0; i < cols; ++i) ref[r * cols + i] = w[i] * ref_res[r * cols + i] * inv;
    }
    // the residual is exact: both round the same fp32 sum
    for (size_t k = 0; k < got_res.size(); ++k) ASSERT_EQ(got_res[k], ref_res[k]) << k;
    EXPECT_LT(rel_l2(got, ref), 1e-2);
}

// Both rmsnorm kernels (8-element vector path: cols % 8 == 0 up to 16384 with 1, 2 or 4 chunks
// per thread; element path: other cols) for every residual dtype (f32, the activation dtype) and
// weight dtype (f32, bf16, f16), with and without the residual add. The residual update is
// exact; the normalised output is checked against fp64 with the same roundings of h.
TEST_P(CudaOps, RmsNormPathsAndDtypes) {
    FS_REQUIRE_GPU();
    const DType dt = GetParam();
    Backend& b = gpu(dt);
    const int64_t rows = 3;
    for (int64_t cols : {8, 64, 1000, 1004, 4096, 5120, 8200, 12288, 16384, 20000}) {
        for (DType rdt : {DType::F32, dt}) {
            for (DType wdt : {DType::F32, DType::BF16, DType::F16}) {
                SCOPED_TRACE(::testing::Message()
                             << "cols " << cols << " residual " << dtype_name(rdt) << " weight "
                             << dtype_name(wdt));
                auto res = randv(rows * cols, rdt, 2.0f), x = randv(rows * cols, dt, 2.0f);
                auto w = randv(cols, wdt, 1.5f);
                Tensor tw = upload(b, w, 1, cols, wdt);
                for (bool add : {false, true}) {
                    Tensor tr = upload(b, res, rows, cols, rdt), tx = upload(b, x, rows, cols, dt);
                    Tensor out = poisoned(b, rows, cols, dt);
                    const float eps = 1e-5f;
                    if (add)
                        b.add_rmsnorm(tr, tx, tw, eps, out);
                    else
                        b.rmsnorm(tr, tw, eps, out);
                    const auto got_res = download(b, tr), got = download(b, out);
                    std::vector<double> ref(rows * cols);
                    for (int64_t r = 0; r < rows; ++r) {
                        std::vector<float> v(cols);
                        double ss = 0;
                        for (int64_t i = 0; i < cols; ++i) {
                            const size_t k = r * cols + i;
                            v[i] = add ? round_to(rdt, res[k] + x[k]) : res[k];
                            ASSERT_EQ(got_res[k], v[i]) << "residual at " << k;
                            ss += double(v[i]) * v[i];
                        }
                        const double inv = 1.0 / std::sqrt(ss / cols + eps);
                        for (int64_t i = 0; i < cols; ++i)
                            ref[r * cols + i] = w[i] * double(round_to(dt, float(v[i] * inv)));
                    }
                    EXPECT_LT(rel_l2(got, ref), 5e-3) << (add ? "add_rmsnorm" : "rmsnorm");
                }
            }
        }
    }
}

namespace {
void check_linear(Backend& b, DType dt, int64_t T, int64_t N, int64_t K, bool with_bias,
                  std::optional<DType> out_dt = std::nullopt, double tol = 1e-2) {
    auto x = randv(T * K, dt), w = randv(N * K, dt, 0.5f), bias = randv(N, dt);
    Tensor tx = upload(b, x, T, K, dt), tw = upload(b, w, N, K, dt);
    Tensor tb = upload(b, bias, 1, N, dt);
    Tensor out = poisoned(b, T, N, out_dt.value_or(dt));
    b.linear(tx, tw, with_bias ? &tb : nullptr, out);
    auto got = download(b, out);
    std::vector<double> ref(T * N);
    for (int64_t t = 0; t < T; ++t)
        for (int64_t n = 0; n < N; ++n) {
            double s = with_bias ? bias[n] : 0.0;
            for (int64_t k = 0; k < K; ++k) s += double(x[t * K + k]) * w[n * K + k];
            ref[t * N + n] = s;
        }
    EXPECT_LT(rel_l2(got, ref), tol)
        << "T=" << T << " N=" << N << " K=" << K << " bias=" << with_bias;
}
}  // namespace

// f32 outputs (the LM head's logits, no bias): cuBLASLt for one row and several; fp32
// accumulation of rounded inputs, so the fp64 reference is close. (A one-row GEMV with f32
// output measured slower in the batch-1 step on the H200: 83.7-84.1% of roofline against
// 85.6-85.9% with cuBLASLt.)
TEST_P(CudaOps, LinearF32Logits) {
    FS_REQUIRE_GPU();
    const DType dt = GetParam();
    Backend& b = gpu(dt);
    for (int64_t T : {1, 3}) {
        check_linear(b, dt, T, 1000, 4096, false, DType::F32, 1e-4);
        check_linear(b, dt, T, 392, 520, false, DType::F32, 1e-4);
    }
}

TEST_P(CudaOps, LinearShapes) {
    FS_REQUIRE_GPU();
    const DType dt = GetParam();
    Backend& b = gpu(dt);
    for (int64_t T : {1, 2, 5, 16, 17, 64, 300}) {
        check_linear(b, dt, T, 200, 136, false);  // N = 8*25, K = 8*17
        check_linear(b, dt, T, 392, 520, true);
    }
}

// Both implementations, forced: the custom GEMV (FARSIGHT_GEMV=1) and cuBLASLt (=0), on shapes
// that exercise the GEMV's split-K (small N) and its tail loop.
TEST(CudaLinear, GemvAndCublasPaths) {
    FS_REQUIRE_GPU();
    for (const char* mode : {"1", "0"}) {
        setenv("FARSIGHT_GEMV", mode, 1);
        auto b = make_cuda_backend_with(0, DType::BF16);
        unsetenv("FARSIGHT_GEMV");
        for (int64_t T : {1, 3, 8, 16}) {
            check_linear(*b, DType::BF16, T, 24, 4104, true);     // tiny N: split-K
            check_linear(*b, DType::BF16, T, 1032, 2056, false);  // many rows, odd chunk count
        }
        const int64_t big = small_mode() ? 512 : 4096;
        check_linear(*b, DType::BF16, 1, big, big, false);
    }
}

// The fused one-row decode ops (norm_linear, linear_residual, silu_linear_residual) against
// fp64 references computed from the same rounded inputs, for an f32 and an activation-dtype
// residual, shapes with partial chunks per lane (K/8 not a multiple of 32) and several rows
// per warp, with and without bias.
TEST_P(CudaOps, FusedDecodeOps) {
    FS_REQUIRE_GPU();
    const DType dt = GetParam();
    setenv("FARSIGHT_FUSED", "1", 1);  // opt-in (see cuda_backend.cu)
    auto bp_ = make_cuda_backend_with(0, dt);
    unsetenv("FARSIGHT_FUSED");
    Backend& b = *bp_;
    ASSERT_TRUE(b.fused_decode(1, 4096));
    for (auto [N, K] : {std::pair<int64_t, int64_t>{200, 136}, {1032, 520}, {4100, 1024}}) {
        for (DType rdt : {DType::F32, dt}) {
            const bool with_bias = N != 1032;
            auto res = randv(K, rdt, 2.0f), lnw = randv(K, dt, 1.5f), w = randv(N * K, dt, 0.5f);
            auto bias = randv(N, dt);
            Tensor tres = upload(b, res, 1, K, rdt), tln = upload(b, lnw, 1, K, dt);
            Tensor tw = upload(b, w, N, K, dt), tb = upload(b, bias, 1, N, dt);
            const Tensor* bp = with_bias ? &tb : nullptr;
            // norm_linear
            Tensor out = poisoned(b, 1, N, dt);
            b.norm_linear(tres, tln, 1e-5f, tw, bp, out);
            auto got = download(b, out);
            double ss = 0;
            for (float v : res) ss += double(v) * v;
            const double inv = 1.0 / std::sqrt(ss / K + 1e-5);
            std::vector<double> h(K), ref(N);
            for (int64_t k = 0; k < K; ++k)
                h[k] = round_to(dt, lnw[k] * round_to(dt, res[k] * inv));
            for (int64_t n = 0; n < N; ++n) {
                double acc = with_bias ? bias[n] : 0.0;
                for (int64_t k = 0; k < K; ++k) acc += h[k] * w[n * K + k];
                ref[n] = acc;
            }
            EXPECT_LT(rel_l2(got, ref), 1e-2) << "norm_linear N=" << N << " K=" << K;
            // linear_residual: residual [1, N] += T(x @ W^T + bias)
            auto x = randv(K, dt), r0 = randv(N, rdt, 4.0f);
            Tensor tx = upload(b, x, 1, K, dt), tr = upload(b, r0, 1, N, rdt);
            b.linear_residual(tx, tw, bp, tr);
            auto got_r = download(b, tr);
            std::vector<double> ref_r(N);
            for (int64_t n = 0; n < N; ++n) {
                double acc = with_bias ? bias[n] : 0.0;
                for (int64_t k = 0; k < K; ++k) acc += double(x[k]) * w[n * K + k];
                ref_r[n] = r0[n] + acc;
            }
            EXPECT_LT(rel_l2(got_r, ref_r), 1e-2) << "linear_residual N=" << N << " K=" << K;
            // silu_linear_residual: gate_up [1, 2K]
            auto gu = randv(2 * K, dt, 3.0f), r1 = randv(N, rdt, 4.0f);
            Tensor tgu = upload(b, gu, 1, 2 * K, dt), tr1 = upload(b, r1, 1, N, rdt);
            b.silu_linear_residual(tgu, tw, bp, tr1);
            auto got_s = download(b, tr1);
            std::vector<double> act(K), ref_s(N);
            for (int64_t k = 0; k < K; ++k) {
                const double g = gu[k];
                act[k] = round_to(dt, round_to(dt, g / (1.0 + std::exp(-g))) * gu[K + k]);
            }
            for (int64_t n = 0; n < N; ++n) {
                double acc = with_bias ? bias[n] : 0.0;
                for (int64_t k = 0; k < K; ++k) acc += act[k] * w[n * K + k];
                ref_s[n] = r1[n] + acc;
            }
            EXPECT_LT(rel_l2(got_s, ref_s), 1e-2) << "silu_linear_residual N=" << N << " K=" << K;
        }
    }
}

TEST_P(CudaOps, SiluMul) {
    FS_REQUIRE_GPU();
    const DType dt = GetParam();
    Backend& b = gpu(dt);
    const int64_t T = 9;
    for (int64_t I : {1000, 1004}) {  // 16-byte vector path, element path
        auto gu = randv(T * 2 * I, dt, 6.0f);
        Tensor tg = upload(b, gu, T, 2 * I, dt), out = poisoned(b, T, I, dt);
        b.silu_mul(tg, out);
        auto got = download(b, out);
        std::vector<double> ref(T * I);
        for (int64_t t = 0; t < T; ++t)
            for (int64_t i = 0; i < I; ++i) {
                double g = gu[t * 2 * I + i], u = gu[t * 2 * I + I + i];
                ref[t * I + i] = g / (1.0 + std::exp(-g)) * u;
            }
        EXPECT_LT(rel_l2(got, ref), 1e-2) << "I=" << I;
    }
}

TEST_P(CudaOps, EmbeddingAndGather) {
    FS_REQUIRE_GPU();
    const DType dt = GetParam();
    Backend& b = gpu(dt);
    const int64_t V = 300, Dm = 136;
    auto table = randv(V * Dm, dt);
    Tensor tt = upload(b, table, V, Dm, dt);
    std::vector<int32_t> toks = {5, 299, 0, 17, 17, 123, 42};
    BatchMeta m = simple_meta(toks);
    m.logit_rows = {6, 0, 3};
    b.begin_forward(m);
    const int64_t T = static_cast<int64_t>(toks.size());
    Tensor out = poisoned(b, T, Dm, dt);
    b.embedding(tt, out);
    auto got = download(b, out);
    for (int64_t t = 0; t < T; ++t)
        for (int64_t i = 0; i < Dm; ++i)
            ASSERT_EQ(got[t * Dm + i], table[toks[t] * Dm + i]) << t << "," << i;
    Tensor g = poisoned(b, 3, Dm, dt);
    b.gather_logit_rows(out, g);
    auto gg = download(b, g);
    for (int64_t r = 0; r < 3; ++r)
        for (int64_t i = 0; i < Dm; ++i)
            ASSERT_EQ(gg[r * Dm + i], table[toks[m.logit_rows[r]] * Dm + i]);
    // out-of-vocabulary ids are refused with an Error, not read out of bounds
    BatchMeta bad = simple_meta({1, 300});
    b.begin_forward(bad);
    Tensor o2 = b.alloc(dt, 2, Dm);
    EXPECT_THROW(b.embedding(tt, o2), Error);
}

TEST_P(CudaOps, RopeVariantsAndPartialRotary) {
    FS_REQUIRE_GPU();
    const DType dt = GetParam();
    Backend& b = gpu(dt);
    const int64_t H = 4, KVH = 2, D = 64;
    for (int64_t rot : {64, 32}) {
        const int64_t half = rot / 2;
        BatchMeta m;
        // variant 0: plain theta=10000; variant 1: scaled freqs + attention_scaling != 1
        RopeFreqs r0, r1;
        for (int64_t i = 0; i < half; ++i) {
            r0.inv_freq.push_back(static_cast<float>(std::pow(10000.0, -2.0 * i / rot)));
            r1.inv_freq.push_back(static_cast<float>(std::pow(500000.0, -2.0 * i / rot) / 4.0));
        }
        r1.attention_scaling = 1.2f;
        m.rope = {r0, r1};
        // two sequences: positions 0..4 (variant 0) and 3000..3005 (variant 1)
        SeqSlice s0, s1;
        s0.q_start = 0;
        s0.q_len = 5;
        s1.q_start = 5;
        s1.q_len = 6;
        s1.n_past = 3000;
        s1.rope_variant = 1;
        m.seqs = {s0, s1};
        for (int32_t t = 0; t < 5; ++t) m.positions.push_back(t);
        for (int32_t t = 0; t < 6; ++t) m.positions.push_back(3000 + t * 7);
        const int64_t T = 11, C = (H + 2 * KVH) * D;
        m.tokens.assign(T, 0);
        m.slot_mapping.assign(T, -1);
        b.begin_forward(m);
        auto x = randv(T * C, dt, 2.0f);
        Tensor tq = upload(b, x, T, C, dt);
        AttnParams p{H, KVH, D, rot, 0.125f, 0};
        b.rope(tq, p);
        auto got = download(b, tq);
        std::vector<double> ref(x.begin(), x.end());
        for (int64_t t = 0; t < T; ++t) {
            const RopeFreqs& rf = t < 5 ? r0 : r1;
            for (int64_t h = 0; h < H + KVH; ++h)
                for (int64_t i = 0; i < half; ++i) {
                    double ang = double(float(m.positions[t]) * rf.inv_freq[i]);
                    double c = std::cos(ang) * rf.attention_scaling;
                    double s = std::sin(ang) * rf.attention_scaling;
                    size_t a = t * C + h * D + i, bb = a + half;
                    ref[a] = x[a] * c - x[bb] * s;
                    ref[bb] = x[bb] * c + x[a] * s;
                }
        }
        EXPECT_LT(rel_l2(got, ref), 1e-2) << "rotary_dim " << rot;
        // v heads and dims >= rotary_dim untouched (bit-exact)
        for (int64_t t = 0; t < T; ++t) {
            for (int64_t j = (H + KVH) * D; j < C; ++j) ASSERT_EQ(got[t * C + j], x[t * C + j]);
            for (int64_t h = 0; h < H + KVH; ++h)
                for (int64_t i = rot; i < D; ++i)
                    ASSERT_EQ(got[t * C + h * D + i], x[t * C + h * D + i]);
        }
    }
}

TEST(CudaBackendApi, LoadConcatConvertsAndZeroFills) {
    FS_REQUIRE_GPU();
    Backend& b = gpu();
    // f32 and f16/bf16 sources, with a missing (zero) part in the middle
    std::vector<float> a = randv(3 * 8, DType::F32), c = randv(2 * 8, DType::F32);
    std::vector<uint16_t> c16(c.size());
    for (size_t i = 0; i < c.size(); ++i) c16[i] = f32_to_f16(c[i]);
    TensorInfo ia{"a", DType::F32, {3, 8}, a.data(), a.size() * 4, "<test>"};
    TensorInfo ic{"c", DType::F16, {2, 8}, c16.data(), c16.size() * 2, "<test>"};
    Tensor t = b.load_concat({&ia, nullptr, &ic}, {3, 4, 2}, DType::BF16, 8);
    auto got = download(b, t);
    ASSERT_EQ(got.size(), 9u * 8);
    for (size_t i = 0; i < 24; ++i) EXPECT_EQ(got[i], round_to(DType::BF16, a[i]));
    for (size_t i = 24; i < 56; ++i) EXPECT_EQ(got[i], 0.0f);
    for (size_t i = 0; i < 16; ++i)
        EXPECT_EQ(got[56 + i], round_to(DType::BF16, f16_to_f32(c16[i])));
    EXPECT_THROW(b.load_concat({&ia}, {4}, DType::BF16, 8), Error);  // wrong row count
    EXPECT_GT(b.free_memory(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaOps, ::testing::Values(DType::BF16, DType::F16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

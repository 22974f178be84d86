// matmul against a naive double-precision reference on random inputs, for every compiled kernel
// path (AVX-512 / AVX2 / scalar), every weight dtype, odd sizes, with/without bias, 1 and 2
// threads; plus bitwise row-independence of T and thread count.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <ostream>
#include <random>
#include <vector>

#include "backend/cpu/matmul.h"
#include "core/error.h"

using namespace farsight;
using namespace farsight::cpu;

namespace farsight::cpu {
// Readable parameter values in gtest messages.
void PrintTo(MatmulIsa isa, std::ostream* os) {
    *os << matmul_isa_name(isa);
}
}  // namespace farsight::cpu

namespace {

ThreadPool& pool1() {
    static ThreadPool p(1);
    return p;
}
ThreadPool& pool2() {
    static ThreadPool p(2);
    return p;
}

std::vector<MatmulIsa> compiled_isas() {
    std::vector<MatmulIsa> v;
    for (MatmulIsa i : {MatmulIsa::Avx512, MatmulIsa::Avx2, MatmulIsa::Scalar})
        if (matmul_isa_available(i)) v.push_back(i);
    return v;
}

// Weights stored in `dtype` plus their exact f32 values.
struct Weights {
    DType dtype;
    std::vector<uint8_t> raw;
    std::vector<float> decoded;
};

Weights make_weights(DType dtype, int64_t N, int64_t K, std::mt19937& rng) {
    std::uniform_real_distribution<float> d(-1.0f, 1.0f);
    Weights w{dtype, {}, {}};
    const size_t n = static_cast<size_t>(N * K);
    w.decoded.resize(n);
    w.raw.resize(n * dtype_size(dtype));
    for (size_t i = 0; i < n; ++i) {
        const float v = d(rng);
        if (dtype == DType::F32) {
            w.decoded[i] = v;
            std::memcpy(w.raw.data() + 4 * i, &v, 4);
        } else {
            const uint16_t h = dtype == DType::BF16 ? f32_to_bf16(v) : f32_to_f16(v);
            w.decoded[i] = dtype == DType::BF16 ? bf16_to_f32(h) : f16_to_f32(h);
            std::memcpy(w.raw.data() + 2 * i, &h, 2);
        }
    }
    return w;
}

std::vector<float> random_vec(size_t n, std::mt19937& rng, float scale = 1.0f) {
    std::uniform_real_distribution<float> d(-scale, scale);
    std::vector<float> v(n);
    for (auto& e : v) e = d(rng);
    return v;
}

// Runs matmul into a NaN-poisoned buffer with guard elements on both sides; checks the guards.
std::vector<float> run_matmul(const std::vector<float>& x, int64_t T, int64_t K, const Weights& w,
                              int64_t N, const float* bias, ThreadPool& pool) {
    constexpr size_t kGuard = 16;
    const float poison = std::numeric_limits<float>::quiet_NaN();
    std::vector<float> buf(static_cast<size_t>(T * N) + 2 * kGuard, poison);
    const float sentinel = 12345.5f;
    for (size_t i = 0; i < kGuard; ++i) buf[i] = buf[buf.size() - 1 - i] = sentinel;
    matmul(x.data(), T, K, w.raw.data(), w.dtype, N, bias, buf.data() + kGuard, pool);
    for (size_t i = 0; i < kGuard; ++i) {
        EXPECT_EQ(buf[i], sentinel) << "matmul wrote before the output";
        EXPECT_EQ(buf[buf.size() - 1 - i], sentinel) << "matmul wrote past the output";
    }
    return std::vector<float>(buf.begin() + kGuard, buf.end() - kGuard);
}

// Every output must satisfy |out - ref| <= tol * (sum_k |x w| + |bias|), ref in double. (The
// error of a float dot product scales with the sum of |terms|; relative to |ref| it is
// unbounded when terms cancel.)
void expect_close(const std::vector<float>& out, const std::vector<float>& x, int64_t T, int64_t K,
                  const Weights& w, int64_t N, const float* bias, double tol,
                  const std::string& what) {
    int bad = 0;
    for (int64_t t = 0; t < T; ++t) {
        for (int64_t n = 0; n < N; ++n) {
            double ref = 0, mag = 0;
            for (int64_t k = 0; k < K; ++k) {
                const double p = static_cast<double>(x[t * K + k]) * w.decoded[n * K + k];
                ref += p;
                mag += std::fabs(p);
            }
            if (bias) {
                ref += bias[n];
                mag += std::fabs(bias[n]);
            }
            const float o = out[t * N + n];
            const double err = std::fabs(o - ref) / std::max(mag, 1e-30);
            if (!(err <= tol) && bad++ < 5)  // also catches NaN (unwritten) outputs
                ADD_FAILURE() << what << ": out[" << t << "," << n << "] = " << o << ", reference "
                              << ref << ", relative error " << err;
        }
    }
    EXPECT_EQ(bad, 0) << what << ": " << bad << " wrong outputs";
}

std::string describe(MatmulIsa isa, DType dt, int64_t T, int64_t K, int64_t N, bool bias) {
    return std::string(matmul_isa_name(isa)) + " " + std::string(dtype_name(dt)) +
           " T=" + std::to_string(T) + " K=" + std::to_string(K) + " N=" + std::to_string(N) +
           (bias ? " +bias" : "");
}

class MatmulPaths : public ::testing::TestWithParam<MatmulIsa> {};

// All T x K (N cycling through its set), every dtype, with and without bias; 1 and 2 threads
// must agree bitwise.
TEST_P(MatmulPaths, MatchesDoubleReferenceOnOddShapes) {
    const MatmulIsa isa = GetParam();
    ScopedMatmulIsa scoped(isa);
    ASSERT_EQ(matmul_active_isa(), isa);
    std::mt19937 rng(1234);
    const int64_t Ts[] = {1, 2, 3, 7, 16, 33, 130};
    const int64_t Ks[] = {1, 3, 17, 100, 257};
    const int64_t Ns[] = {1, 5, 64, 129};
    int combo = 0;
    for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
        for (int64_t T : Ts) {
            for (int64_t K : Ks) {
                const int64_t N = Ns[combo % 4];
                const bool with_bias = (combo / 4) % 2 == 0;
                ++combo;
                const auto x = random_vec(static_cast<size_t>(T * K), rng);
                const Weights w = make_weights(dt, N, K, rng);
                const auto b = random_vec(static_cast<size_t>(N), rng);
                const float* bias = with_bias ? b.data() : nullptr;
                const std::string what = describe(isa, dt, T, K, N, with_bias);
                const auto o1 = run_matmul(x, T, K, w, N, bias, pool1());
                expect_close(o1, x, T, K, w, N, bias, 1e-5, what);
                const auto o2 = run_matmul(x, T, K, w, N, bias, pool2());
                EXPECT_EQ(0, std::memcmp(o1.data(), o2.data(), o1.size() * sizeof(float)))
                    << what << ": 1 and 2 threads differ";
            }
        }
    }
}

// Shapes large enough to use the threaded split over N (decode) and over T (small N), and the
// blocked prefill path with several weight blocks.
TEST_P(MatmulPaths, MatchesDoubleReferenceOnLargerShapes) {
    const MatmulIsa isa = GetParam();
    ScopedMatmulIsa scoped(isa);
    std::mt19937 rng(99);
    struct Shape {
        int64_t T, K, N;
    };
    const Shape shapes[] = {{1, 2048, 300}, {2, 1000, 77}, {64, 70, 9}, {20, 1500, 200}};
    for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
        for (const Shape& s : shapes) {
            const auto x = random_vec(static_cast<size_t>(s.T * s.K), rng);
            const Weights w = make_weights(dt, s.N, s.K, rng);
            const auto b = random_vec(static_cast<size_t>(s.N), rng);
            const std::string what = describe(isa, dt, s.T, s.K, s.N, true);
            const auto o2 = run_matmul(x, s.T, s.K, w, s.N, b.data(), pool2());
            expect_close(o2, x, s.T, s.K, w, s.N, b.data(), 1e-5, what);
            const auto o1 = run_matmul(x, s.T, s.K, w, s.N, b.data(), pool1());
            EXPECT_EQ(0, std::memcmp(o1.data(), o2.data(), o1.size() * sizeof(float)))
                << what << ": 1 and 2 threads differ";
        }
    }
}

// A row's result must not depend on the other rows of the call: compute a batch, then every
// row alone and a slice of rows, and compare bitwise.
TEST_P(MatmulPaths, RowsAreBitwiseIndependentOfBatch) {
    const MatmulIsa isa = GetParam();
    ScopedMatmulIsa scoped(isa);
    std::mt19937 rng(7);
    const int64_t T = 37, K = 263, N = 131;
    for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
        const auto x = random_vec(static_cast<size_t>(T * K), rng);
        const Weights w = make_weights(dt, N, K, rng);
        const auto b = random_vec(static_cast<size_t>(N), rng);
        const auto full = run_matmul(x, T, K, w, N, b.data(), pool2());
        for (int64_t t = 0; t < T; ++t) {
            const std::vector<float> xr(x.begin() + t * K, x.begin() + (t + 1) * K);
            const auto row = run_matmul(xr, 1, K, w, N, b.data(), t % 2 ? pool1() : pool2());
            ASSERT_EQ(0, std::memcmp(row.data(), full.data() + t * N, N * sizeof(float)))
                << matmul_isa_name(isa) << " " << dtype_name(dt) << ": row " << t
                << " alone differs from the batched result";
        }
        for (int64_t t0 : {1, 5}) {
            for (int64_t len : {2, 3, 4, 9, 17}) {
                const std::vector<float> xs(x.begin() + t0 * K, x.begin() + (t0 + len) * K);
                const auto part = run_matmul(xs, len, K, w, N, b.data(), pool2());
                ASSERT_EQ(0, std::memcmp(part.data(), full.data() + t0 * N,
                                         static_cast<size_t>(len * N) * sizeof(float)))
                    << matmul_isa_name(isa) << " " << dtype_name(dt) << ": rows " << t0 << ".."
                    << t0 + len << " differ from the batched result";
            }
        }
    }
}

// Small integer values: every product and partial sum is exact in f32, so all paths must give
// the hand-computed result exactly.
TEST_P(MatmulPaths, HandComputedExactValues) {
    ScopedMatmulIsa scoped(GetParam());
    // x = [[1, 2, 3], [-1, 0.5, 4]], W = [[4, 5, 6], [-1, 0.5, 2]], bias = [0.25, -3]
    const std::vector<float> x = {1, 2, 3, -1, 0.5f, 4};
    const float wf[] = {4, 5, 6, -1, 0.5f, 2};
    const float bias[] = {0.25f, -3};
    // out[0] = [4+10+18+0.25, -1+1+6-3] = [32.25, 3]; out[1] = [-4+2.5+24+0.25, 1+0.25+8-3]
    const float expect[] = {32.25f, 3.0f, 22.75f, 6.25f};
    for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
        Weights w{dt, std::vector<uint8_t>(6 * dtype_size(dt)), {}};
        convert_from_f32(wf, dt, w.raw.data(), 6);
        const auto out = run_matmul(x, 2, 3, w, 2, bias, pool1());
        for (int i = 0; i < 4; ++i) EXPECT_EQ(out[i], expect[i]) << dtype_name(dt) << " " << i;
    }
}

// Large K with the decode shape: per-lane sums stay accurate.
TEST_P(MatmulPaths, LongDotProducts) {
    ScopedMatmulIsa scoped(GetParam());
    std::mt19937 rng(5);
    const int64_t K = 5632, N = 40;
    for (int64_t T : {1, 5}) {
        const auto x = random_vec(static_cast<size_t>(T * K), rng, 3.0f);
        const Weights w = make_weights(DType::BF16, N, K, rng);
        const auto out = run_matmul(x, T, K, w, N, nullptr, pool2());
        expect_close(out, x, T, K, w, N, nullptr, 1e-5, "K=5632");
    }
}

INSTANTIATE_TEST_SUITE_P(AllCompiled, MatmulPaths, ::testing::ValuesIn(compiled_isas()),
                         [](const ::testing::TestParamInfo<MatmulIsa>& i) {
                             return std::string(matmul_isa_name(i.param));
                         });

TEST(Matmul, EmptyKGivesBias) {
    const float bias[] = {1.5f, -2.0f, 0.125f};
    const float dummy = 0;
    float out[6];
    std::fill(out, out + 6, std::numeric_limits<float>::quiet_NaN());
    matmul(&dummy, 2, 0, &dummy, DType::BF16, 3, bias, out, pool2());
    for (int t = 0; t < 2; ++t)
        for (int n = 0; n < 3; ++n) EXPECT_EQ(out[t * 3 + n], bias[n]);
}

TEST(Matmul, RejectsUnsupportedDtypeAndBadSizes) {
    const float x[4] = {1, 2, 3, 4};
    float out[4];
    EXPECT_THROW(matmul(x, 1, 4, x, DType::I8, 1, nullptr, out, pool1()), Error);
    EXPECT_THROW(matmul(x, -1, 4, x, DType::F32, 1, nullptr, out, pool1()), Error);
    EXPECT_THROW(matmul(x, 1, 4, nullptr, DType::F32, 1, nullptr, out, pool1()), Error);
    try {
        matmul(x, 1, 4, x, DType::F64, 1, nullptr, out, pool1());
        FAIL() << "expected an Error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("f64"), std::string::npos) << e.what();
    }
}

TEST(Matmul, IsaSelection) {
    EXPECT_TRUE(matmul_isa_available(MatmulIsa::Scalar));
    EXPECT_NE(matmul_active_isa(), MatmulIsa::Auto);
    {
        ScopedMatmulIsa s(MatmulIsa::Scalar);
        EXPECT_EQ(matmul_active_isa(), MatmulIsa::Scalar);
    }
    const MatmulIsa best = matmul_active_isa();
    EXPECT_NE(best, MatmulIsa::Auto);
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
    EXPECT_EQ(best, MatmulIsa::Avx512);
#endif
    for (MatmulIsa i : {MatmulIsa::Avx512, MatmulIsa::Avx2}) {
        if (!matmul_isa_available(i)) {
            EXPECT_THROW(set_matmul_isa(i), Error);
        }
    }
}

}  // namespace

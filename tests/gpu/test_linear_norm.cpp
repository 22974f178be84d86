// Backend::linear_add_rmsnorm on one row (the CUDA backend's GEMV whose last block adds the
// product to the f32 residual and runs the norm) against linear() then add_rmsnorm() on random
// inputs, and against an fp64 reference: the product and the residual are bitwise those of the
// separate ops (same GEMV, same add); the normed row differs at most by the order of the sum of
// squares (a rounding of dt now and then).
#include <cmath>

#include "gpu_test_util.h"

using namespace farsight;
using namespace farsight::gputest;

class CudaLinearNorm : public ::testing::TestWithParam<DType> {};

TEST_P(CudaLinearNorm, OneRowMatchesLinearThenAddRmsnorm) {
    FS_REQUIRE_GPU();
    const DType dt = GetParam();
    Backend& b = gpu(dt);
    ASSERT_EQ(b.residual_dtype(), DType::F32);
    struct Case {
        int64_t N, K;
        bool bias;
    };
    const Case cases[] = {{4096, 4096, false},   // Llama-2-7B o_proj
                          {4096, 11008, false},  // Llama-2-7B down_proj
                          {896, 4864, true},     // Qwen2-0.5B-like down, bias
                          {8192, 1024, false},   // the widest row the epilogue takes
                          {264, 64, true}};      // small: the launch splits K, few blocks
    const float eps = 1e-5f;
    for (const Case& c : cases) {
        SCOPED_TRACE(::testing::Message()
                     << dtype_name(dt) << " N" << c.N << " K" << c.K << (c.bias ? " bias" : ""));
        const auto xv = randv(c.K, dt, 1.0f);
        const auto wv = randv(c.N * c.K, dt, 2.0f / std::sqrt(static_cast<float>(c.K)));
        const auto bv = randv(c.N, dt, 0.5f);
        const auto rv = randv(c.N, DType::F32, 3.0f);
        const auto lv = randv(c.N, dt, 1.5f);
        Tensor x = upload(b, xv, 1, c.K, dt), w = upload(b, wv, c.N, c.K, dt);
        Tensor bias = c.bias ? upload(b, bv, 1, c.N, dt) : Tensor{};
        Tensor ln = upload(b, lv, 1, c.N, dt);
        Tensor r1 = upload(b, rv, 1, c.N, DType::F32), r2 = upload(b, rv, 1, c.N, DType::F32);
        Tensor o1 = poisoned(b, 1, c.N, dt), o2 = poisoned(b, 1, c.N, dt);
        Tensor h1 = poisoned(b, 1, c.N, dt), h2 = poisoned(b, 1, c.N, dt);
        b.linear(x, w, c.bias ? &bias : nullptr, o1);
        b.add_rmsnorm(r1, o1, ln, eps, h1);
        // twice: the arrival counter must be back at zero after a launch
        Tensor r0 = upload(b, rv, 1, c.N, DType::F32);
        for (int rep = 0; rep < 2; ++rep)
            b.linear_add_rmsnorm(x, w, c.bias ? &bias : nullptr, o2, rep == 0 ? r0 : r2, ln, eps,
                                 h2);
        b.synchronize();
        const auto want_o = download(b, o1), got_o = download(b, o2);
        const auto want_r = download(b, r1), got_r = download(b, r2);
        const auto want_h = download(b, h1), got_h = download(b, h2);
        for (int64_t n = 0; n < c.N; ++n) {
            ASSERT_EQ(got_o[n], want_o[n]) << "product " << n;
            ASSERT_EQ(got_r[n], want_r[n]) << "residual " << n;
        }
        // fp64 reference: residual + T(x . w + bias), then ln * T(residual * inv)
        std::vector<double> res(c.N), ref(c.N);
        double ss = 0;
        for (int64_t n = 0; n < c.N; ++n) {
            double d = 0;
            for (int64_t k = 0; k < c.K; ++k) d += double(wv[n * c.K + k]) * xv[k];
            if (c.bias) d += bv[n];
            res[n] = double(rv[n]) + round_to(dt, static_cast<float>(d));
            ss += res[n] * res[n];
        }
        const double inv = 1.0 / std::sqrt(ss / double(c.N) + eps);
        for (int64_t n = 0; n < c.N; ++n)
            ref[n] = double(lv[n]) * round_to(dt, static_cast<float>(res[n] * inv));
        EXPECT_LT(rel_l2(got_h, ref), 1e-2);
        EXPECT_LT(rel_l2(want_h, ref), 1e-2);
        size_t same = 0;
        for (int64_t n = 0; n < c.N; ++n) {
            ASSERT_TRUE(std::isfinite(got_h[n])) << n;
            same += got_h[n] == want_h[n];
            // at most one rounding step of dt (relative 2^-7 for bf16) apart
            ASSERT_LE(std::fabs(got_h[n] - want_h[n]), 1.6e-2 * std::fabs(want_h[n]) + 1e-6) << n;
        }
        EXPECT_GE(same, static_cast<size_t>(c.N * 9 / 10));
    }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaLinearNorm, ::testing::Values(DType::BF16, DType::F16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

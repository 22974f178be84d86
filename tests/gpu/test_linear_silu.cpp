// Backend::linear_silu on one row (the CUDA backend's gated GEMV: each warp streams the gate and
// the up row of an output and writes silu(gate) * up) against linear() then silu_mul() on random
// inputs, and both against an fp64 reference of the same roundings. Where the gated launch cuts K
// like the plain one (the Llama shapes) the results are bitwise equal.
#include <cmath>
#include <cstring>

#include "gpu_test_util.h"

using namespace farsight;
using namespace farsight::gputest;

class CudaLinearSilu : public ::testing::TestWithParam<DType> {};

TEST_P(CudaLinearSilu, OneRowMatchesLinearThenSiluMul) {
    FS_REQUIRE_GPU();
    const DType dt = GetParam();
    Backend& b = gpu(dt);
    struct Case {
        int64_t I, K;
        bool bias, bitwise;
    };
    const Case cases[] = {{11008, 4096, false, true},  // Llama-2-7B MLP
                          {64, 4096, false, false},    // small N: the launch splits K
                          {1000, 264, true, false},    // bias, K not a multiple of 256
                          {4864, 896, true, false}};   // Qwen2-0.5B-like
    for (const Case& c : cases) {
        SCOPED_TRACE(::testing::Message()
                     << dtype_name(dt) << " I" << c.I << " K" << c.K << (c.bias ? " bias" : ""));
        const auto xv = randv(c.K, dt, 1.0f);
        const auto wv = randv(2 * c.I * c.K, dt, 2.0f / std::sqrt(static_cast<float>(c.K)));
        const auto bv = randv(2 * c.I, dt, 0.5f);
        Tensor x = upload(b, xv, 1, c.K, dt), w = upload(b, wv, 2 * c.I, c.K, dt);
        Tensor bias = c.bias ? upload(b, bv, 1, 2 * c.I, dt) : Tensor{};
        Tensor gu1 = poisoned(b, 1, 2 * c.I, dt), gu2 = poisoned(b, 1, 2 * c.I, dt);
        Tensor o1 = poisoned(b, 1, c.I, dt), o2 = poisoned(b, 1, c.I, dt);
        b.linear(x, w, c.bias ? &bias : nullptr, gu1);
        b.silu_mul(gu1, o1);
        b.linear_silu(x, w, c.bias ? &bias : nullptr, gu2, o2);
        b.synchronize();
        const auto want = download(b, o1), got = download(b, o2);
        // fp64 reference of the products, rounded through dt as the kernels store them
        std::vector<double> ref(c.I);
        for (int64_t n = 0; n < c.I; ++n) {
            double g = 0, u = 0;
            for (int64_t k = 0; k < c.K; ++k) {
                g += double(wv[n * c.K + k]) * xv[k];
                u += double(wv[(c.I + n) * c.K + k]) * xv[k];
            }
            if (c.bias) {
                g += bv[n];
                u += bv[c.I + n];
            }
            const float gf = round_to(dt, static_cast<float>(g));
            const float uf = round_to(dt, static_cast<float>(u));
            ref[n] = double(round_to(dt, gf / (1.0f + std::exp(-gf)))) * uf;
        }
        EXPECT_LT(rel_l2(got, ref), 1e-2);
        EXPECT_LT(rel_l2(want, ref), 1e-2);
        size_t same = 0;
        for (int64_t n = 0; n < c.I; ++n) {
            ASSERT_TRUE(std::isfinite(got[n])) << n;
            same += got[n] == want[n];
            ASSERT_LE(std::fabs(got[n] - want[n]), 2e-2 * (std::fabs(want[n]) + 0.05)) << n;
        }
        if (c.bitwise) {
            EXPECT_EQ(same, static_cast<size_t>(c.I));
        }
    }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaLinearSilu, ::testing::Values(DType::BF16, DType::F16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

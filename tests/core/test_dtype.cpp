#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/dtype.h"

using namespace farsight;

// Hand-derived bit patterns (IEEE 754 binary16 / bfloat16 tables).
TEST(DType, Bf16KnownValues) {
    EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
    EXPECT_EQ(f32_to_bf16(-2.0f), 0xc000);
    EXPECT_EQ(bf16_to_f32(0x4049), 3.140625f);
    // 1 + 2^-8 is exactly halfway between bf16 1.0 and 1.0078125: ties to even -> 1.0
    EXPECT_EQ(f32_to_bf16(1.00390625f), 0x3f80);
    // 1 + 3*2^-8 is halfway between 1.0078125 (odd) and 1.015625 (even) -> 1.015625
    EXPECT_EQ(f32_to_bf16(1.01171875f), 0x3f82);
}

TEST(DType, F16KnownValues) {
    EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
    EXPECT_EQ(f32_to_f16(-2.0f), 0xc000);
    EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
    EXPECT_EQ(f32_to_f16(1e6f), 0x7c00);
    EXPECT_EQ(f32_to_f16(5.9604645e-8f), 0x0001);  // smallest subnormal 2^-24
    EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));
    EXPECT_EQ(f16_to_f32(0x03ff), std::ldexp(1023.0f, -24));
    EXPECT_EQ(f16_to_f32(0x3555), 0.333251953125f);
    EXPECT_TRUE(std::isinf(f16_to_f32(0x7c00)));
}

// Round trip: every f16 bit pattern (except NaNs) survives f16 -> f32 -> f16.
TEST(DType, F16RoundTripAllPatterns) {
    for (uint32_t h = 0; h < 0x10000; ++h) {
        const float f = f16_to_f32(static_cast<uint16_t>(h));
        if (std::isnan(f)) continue;
        ASSERT_EQ(f32_to_f16(f), h) << "pattern " << h;
    }
}

// f32 -> f16 rounds to the nearest representable value: check against a brute-force search.
TEST(DType, F16RoundingMatchesNearest) {
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> u(-70000.f, 70000.f);
    std::uniform_real_distribution<float> small(-1e-4f, 1e-4f);
    for (int i = 0; i < 20000; ++i) {
        const float f = (i % 2) ? u(rng) : small(rng);
        const uint16_t h = f32_to_f16(f);
        const double got = f16_to_f32(h);
        if (std::isinf(got)) {
            EXPECT_GE(std::fabs(f), 65520.0f);
            continue;
        }
        // neighbours
        const double up = f16_to_f32(static_cast<uint16_t>(h + 1));
        const double dn = f16_to_f32(static_cast<uint16_t>(h - 1));
        const double err = std::fabs(got - f);
        if (!std::isinf(up) && !std::isnan(up)) {
            EXPECT_LE(err, std::fabs(up - f) + 1e-30);
        }
        if (!std::isinf(dn) && !std::isnan(dn)) {
            EXPECT_LE(err, std::fabs(dn - f) + 1e-30);
        }
    }
}

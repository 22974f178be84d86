// Bandwidth measurement: plausible figures on a buffer larger than the caches, and argument
// checks. (The real figures are printed by bench_cpu_kernels.)
#include <gtest/gtest.h>

#include <cmath>

#include "backend/cpu/bandwidth.h"
#include "core/error.h"

using namespace farsight;
using namespace farsight::cpu;

TEST(Bandwidth, CopyAndReadArePlausible) {
    ThreadPool pool(2);
    const size_t bytes = size_t(16) << 20;
    const double copy = measure_copy_bandwidth(pool, bytes);
    const double read = measure_read_bandwidth(pool, bytes);
    // Any machine this runs on moves between 0.2 GB/s and 10 TB/s.
    EXPECT_TRUE(std::isfinite(copy));
    EXPECT_TRUE(std::isfinite(read));
    EXPECT_GT(copy, 0.2);
    EXPECT_LT(copy, 10000.0);
    EXPECT_GT(read, 0.2);
    EXPECT_LT(read, 10000.0);
}

TEST(Bandwidth, OddSizesAndOneThread) {
    ThreadPool pool(1);
    const size_t bytes = (size_t(3) << 20) + 4097;  // not a multiple of a page or a vector
    EXPECT_GT(measure_copy_bandwidth(pool, bytes), 0.2);
    EXPECT_GT(measure_read_bandwidth(pool, bytes), 0.2);
}

TEST(Bandwidth, RejectsTinyBuffers) {
    ThreadPool pool(1);
    EXPECT_THROW(measure_copy_bandwidth(pool, 1000), Error);
    EXPECT_THROW(measure_read_bandwidth(pool, 1000), Error);
}

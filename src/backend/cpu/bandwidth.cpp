#include "backend/cpu/bandwidth.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

#include "core/error.h"

namespace farsight::cpu {
namespace {

constexpr int kRepetitions = 5;
constexpr size_t kAlign = 4096;

struct AlignedFree {
    void operator()(std::byte* p) const { ::operator delete[](p, std::align_val_t(kAlign)); }
};
using Buffer = std::unique_ptr<std::byte[], AlignedFree>;

Buffer alloc_buffer(size_t bytes, const char* what) {
    try {
        return Buffer(static_cast<std::byte*>(::operator new[](bytes, std::align_val_t(kAlign))));
    } catch (const std::bad_alloc&) {
        fail("bandwidth measurement: cannot allocate the {} buffer of {} MiB; pass a smaller size",
             what, bytes >> 20);
    }
}

// Chunk [begin, end) of thread i of n, aligned to 4 KiB pages.
void chunk(size_t bytes, int i, int n, size_t* begin, size_t* end) {
    const size_t pages = (bytes + kAlign - 1) / kAlign;
    *begin = std::min(bytes, pages * static_cast<size_t>(i) / static_cast<size_t>(n) * kAlign);
    *end = std::min(bytes, pages * static_cast<size_t>(i + 1) / static_cast<size_t>(n) * kAlign);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

double measure_copy_bandwidth(ThreadPool& pool, size_t bytes) {
    FS_CHECK(bytes >= (size_t(1) << 20),
             "measure_copy_bandwidth: buffer size {} bytes is too small to measure memory "
             "bandwidth (use at least 1 MiB, ideally much more than the last-level cache)",
             bytes);
    Buffer src = alloc_buffer(bytes, "source");
    Buffer dst = alloc_buffer(bytes, "destination");
    const int nt = pool.size();
    // Touch every page from the thread that will copy it (first-touch placement).
    pool.run_on_all([&](int i) {
        size_t b, e;
        chunk(bytes, i, nt, &b, &e);
        std::memset(src.get() + b, 0x5a, e - b);
        std::memset(dst.get() + b, 0, e - b);
    });
    double best = 1e30;
    for (int r = 0; r < kRepetitions; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        pool.run_on_all([&](int i) {
            size_t b, e;
            chunk(bytes, i, nt, &b, &e);
            std::memcpy(dst.get() + b, src.get() + b, e - b);
        });
        best = std::min(best, seconds_since(t0));
    }
    // Keep the copy observable.
    FS_CHECK(dst[bytes / 2] == src[bytes / 2], "measure_copy_bandwidth: copy check failed");
    return 2.0 * static_cast<double>(bytes) / best / 1e9;
}

double measure_read_bandwidth(ThreadPool& pool, size_t bytes) {
    FS_CHECK(bytes >= (size_t(1) << 20),
             "measure_read_bandwidth: buffer size {} bytes is too small to measure memory "
             "bandwidth (use at least 1 MiB, ideally much more than the last-level cache)",
             bytes);
    Buffer buf = alloc_buffer(bytes, "read");
    const int nt = pool.size();
    pool.run_on_all([&](int i) {
        size_t b, e;
        chunk(bytes, i, nt, &b, &e);
        std::memset(buf.get() + b, 0x5a, e - b);
    });
    std::vector<uint64_t> sums(static_cast<size_t>(nt));
    double best = 1e30;
    for (int r = 0; r < kRepetitions; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        pool.run_on_all([&](int i) {
            size_t b, e;
            chunk(bytes, i, nt, &b, &e);
            // 8 independent 64-bit lanes; the compiler vectorises this to full-width loads.
            uint64_t acc[8] = {};
            const std::byte* p = buf.get() + b;
            const size_t n = (e - b) / 64;
            for (size_t j = 0; j < n; ++j) {
                uint64_t w[8];
                std::memcpy(w, p + j * 64, 64);
                for (int l = 0; l < 8; ++l) acc[l] += w[l];
            }
            uint64_t s = 0;
            for (int l = 0; l < 8; ++l) s += acc[l];
            for (size_t q = b + n * 64; q < e; ++q) s += static_cast<uint64_t>(buf[q]);
            sums[static_cast<size_t>(i)] = s;
        });
        best = std::min(best, seconds_since(t0));
    }
    // The sum is deterministic; reading it keeps the loop from being optimised away.
    uint64_t total = 0;
    for (uint64_t s : sums) total += s;
    FS_CHECK(total != 0, "measure_read_bandwidth: unexpected zero checksum");
    return static_cast<double>(bytes) / best / 1e9;
}

}  // namespace farsight::cpu

// .npy reader/writer: hand-built bytes, files written by NumPy (tools/gen_io_fixtures.py),
// byte-exact comparison of write_npy with numpy.save, random round trips and errors.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "io/npy.h"
#include "io_test_util.h"

using namespace farsight;
using namespace farsight::testing;

namespace {

const fs::path kFix = fs::path(FARSIGHT_FIXTURES_DIR) / "io";
double ramp(int i) {
    return (i - 3) * 0.25;
}

// A version-1.0 .npy file built by hand from the format description.
std::string npy_v1(const std::string& dict, const std::string& data) {
    std::string header = dict;
    while ((10 + header.size() + 1) % 64 != 0) header += ' ';
    header += '\n';
    std::string out = std::string("\x93NUMPY\x01\x00", 8);
    out += static_cast<char>(header.size() & 0xff);
    out += static_cast<char>(header.size() >> 8);
    return out + header + data;
}

}  // namespace

TEST(Npy, ReadsHandBuiltF8) {
    TempDir dir;
    const std::vector<double> v = {1.5, -2.0, 0.1, 1e300};
    write_file(dir / "a.npy",
               npy_v1("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }", raw_bytes(v)));
    const NpyArray a = read_npy(dir / "a.npy");
    EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 2}));
    EXPECT_EQ(a.numel(), 4);
    EXPECT_EQ(a.data, v);
}

TEST(Npy, WriteMatchesNumpySaveByteForByte) {
    TempDir dir;
    std::vector<float> v(6);
    for (int i = 0; i < 6; ++i) v[i] = static_cast<float>(ramp(i));
    write_npy(dir / "w.npy", v.data(), {2, 3});
    const std::string mine = read_file(dir / "w.npy");
    const std::string numpy = read_file(kFix / "f4_2x3.npy");
    EXPECT_EQ(mine.size() % 64, 24u);  // 128-byte header + 24 data bytes
    EXPECT_EQ(mine, numpy);
}

TEST(Npy, ReadsNumpyFiles) {
    const NpyArray f4 = read_npy(kFix / "f4_2x3.npy");
    EXPECT_EQ(f4.shape, (std::vector<int64_t>{2, 3}));
    for (int i = 0; i < 6; ++i) EXPECT_EQ(f4.data[i], ramp(i));

    const NpyArray f8 = read_npy(kFix / "f8_4.npy");
    EXPECT_EQ(f8.shape, (std::vector<int64_t>{4}));
    EXPECT_EQ(f8.data, (std::vector<double>{1.5, -2.0, 1e-300, M_PI}));

    const NpyArray s = read_npy(kFix / "f8_scalar.npy");
    EXPECT_TRUE(s.shape.empty());
    EXPECT_EQ(s.data, (std::vector<double>{2.5}));

    // Fortran order: returned in C order, so element (r, c) is still ramp(3 r + c).
    const NpyArray fo = read_npy(kFix / "f8_fortran_2x3.npy");
    EXPECT_EQ(fo.shape, (std::vector<int64_t>{2, 3}));
    for (int i = 0; i < 6; ++i) EXPECT_EQ(fo.data[i], ramp(i)) << i;

    const NpyArray be = read_npy(kFix / "f8_big_endian_3.npy");
    EXPECT_EQ(be.data, (std::vector<double>{ramp(0), ramp(1), ramp(2)}));

    const NpyArray v2 = read_npy(kFix / "f4_v2_2x2.npy");  // format version 2.0
    EXPECT_EQ(v2.shape, (std::vector<int64_t>{2, 2}));
    for (int i = 0; i < 4; ++i) EXPECT_EQ(v2.data[i], ramp(i));
}

TEST(Npy, RandomRoundTrips) {
    TempDir dir;
    std::mt19937 rng(1234);
    std::normal_distribution<float> nd(0.0f, 10.0f);
    const std::vector<std::vector<int64_t>> shapes = {{}, {1}, {7}, {3, 5}, {2, 3, 4}, {4, 0, 2}};
    for (const auto& shape : shapes) {
        int64_t n = 1;
        for (auto d : shape) n *= d;
        std::vector<float> v(static_cast<size_t>(n));
        for (auto& x : v) x = nd(rng);
        const fs::path p = dir / "r.npy";
        write_npy(p, v.data(), shape);
        EXPECT_EQ((read_file(p).size() - 4 * v.size()) % 64, 0u);  // 64-byte aligned header
        const NpyArray a = read_npy(p);
        EXPECT_EQ(a.shape, shape);
        ASSERT_EQ(a.data.size(), v.size());
        for (size_t i = 0; i < v.size(); ++i) EXPECT_EQ(a.data[i], static_cast<double>(v[i]));
    }
}

TEST(Npy, Errors) {
    TempDir dir;
    const fs::path p = dir / "bad.npy";
    expect_error([&] { read_npy(dir / "missing.npy"); }, {"missing.npy", "cannot open"});

    write_file(p, "NUMPY not really");
    expect_error([&] { read_npy(p); }, {p.string(), "not a .npy file"});

    expect_error([&] { read_npy(kFix / "i4_3.npy"); },
                 {"i4_3.npy", "unsupported .npy dtype '<i4'"});

    write_file(p, npy_v1("{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }",
                         std::string(16, '\0')));
    expect_error([&] { read_npy(p); }, {p.string(), "truncated", "needs 24 data bytes"});

    write_file(p, npy_v1("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }",
                         std::string(16, '\0')));
    expect_error([&] { read_npy(p); }, {p.string(), "8 unexpected trailing bytes"});

    write_file(p, npy_v1("{'descr': '<f8', 'shape': (1,), }", std::string(8, '\0')));
    expect_error([&] { read_npy(p); }, {p.string(), "no 'fortran_order' key"});

    write_file(p, npy_v1("{'descr': '<f8', 'fortran_order': False, 'shape': [1], }",
                         std::string(8, '\0')));
    expect_error([&] { read_npy(p); }, {p.string(), "malformed .npy header"});

    std::string hdr_cut = npy_v1("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }", "");
    write_file(p, hdr_cut.substr(0, 40));
    expect_error([&] { read_npy(p); }, {p.string(), "truncated"});

    const float x = 1.0f;
    expect_error([&] { write_npy(dir / "no-such-dir" / "x.npy", &x, {1}); },
                 {"no-such-dir", "cannot create"});
    expect_error([&] { write_npy(dir / "neg.npy", &x, {-1}); }, {"negative dimension"});
}

// SafetensorsFile / MappedFile: values read back from hand-built and reference-written files,
// and one test per malformed-file failure (each checks the message names the file and problem).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "io_test_util.h"

using namespace farsight;
using namespace farsight::testing;
using nlohmann::json;

namespace {

const std::vector<float> kA = {1.5f, -2.0f, 3.25f, 0.0f, -0.125f, 1e-3f};
const std::vector<uint16_t> kB = {0x3f80, 0xc000};  // bf16 1.0, -2.0

json base_header() {
    return json{{"__metadata__", {{"format", "pt"}}},
                {"a", {{"dtype", "F32"}, {"shape", {2, 3}}, {"data_offsets", {0, 24}}}},
                {"b", {{"dtype", "BF16"}, {"shape", {2}}, {"data_offsets", {24, 28}}}}};
}
std::string base_data() {
    return raw_bytes(kA) + raw_bytes(kB);
}

class SafetensorsErrors : public ::testing::Test {
  protected:
    // Writes `bytes` as a file and expects SafetensorsFile to reject it with a message naming the
    // file and containing every one of `parts`.
    void expect_rejected(const std::string& bytes, std::vector<std::string> parts) {
        const fs::path p = dir_ / "bad.safetensors";
        write_file(p, bytes);
        parts.push_back(p.string());
        expect_error([&] { SafetensorsFile f(p); }, parts);
    }
    void expect_rejected(const json& header, const std::string& data,
                         std::vector<std::string> parts) {
        expect_rejected(safetensors_bytes(header.dump(), data), std::move(parts));
    }
    TempDir dir_;
};

}  // namespace

TEST(Safetensors, BaseFileIsValidAndZeroCopy) {
    TempDir dir;
    const fs::path p = dir / "ok.safetensors";
    const std::string header = base_header().dump();
    write_file(p, safetensors_bytes(header, base_data()));
    SafetensorsFile f(p);
    ASSERT_EQ(f.tensors().size(), 2u);
    EXPECT_EQ(f.metadata().at("format"), "pt");
    const TensorInfo& a = f.tensors().at("a");
    EXPECT_EQ(a.name, "a");
    EXPECT_EQ(a.dtype, DType::F32);
    EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
    EXPECT_EQ(a.numel(), 6);
    EXPECT_EQ(a.nbytes, 24u);
    EXPECT_EQ(a.file, p.string());
    for (size_t i = 0; i < kA.size(); ++i) {
        float v;
        std::memcpy(&v, static_cast<const char*>(a.data) + 4 * i, 4);
        EXPECT_EQ(v, kA[i]) << i;
    }
    const TensorInfo& b = f.tensors().at("b");
    EXPECT_EQ(b.dtype, DType::BF16);
    EXPECT_EQ(b.nbytes, 4u);
    uint16_t h[2];
    std::memcpy(h, b.data, 4);
    EXPECT_EQ(bf16_to_f32(h[0]), 1.0f);
    EXPECT_EQ(bf16_to_f32(h[1]), -2.0f);
    // Zero-copy: the data sits right after the header in the mapping, in file order.
    EXPECT_EQ(static_cast<const char*>(b.data) - static_cast<const char*>(a.data), 24);
}

TEST(Safetensors, HeaderPaddedWithSpacesAndEmptyFileOfTensors) {
    TempDir dir;
    // Writers pad the header with spaces to 8-byte alignment; that is valid.
    const fs::path p = dir / "pad.safetensors";
    write_file(p, safetensors_bytes(base_header().dump() + "       ", base_data()));
    EXPECT_EQ(SafetensorsFile(p).tensors().size(), 2u);
    // No tensors at all is a valid (if useless) file.
    const fs::path q = dir / "none.safetensors";
    write_file(q, safetensors_bytes("{}", ""));
    EXPECT_TRUE(SafetensorsFile(q).tensors().empty());
}

// Without header padding the data may sit at any address: still valid, read through memcpy.
TEST(Safetensors, UnpaddedHeaderGivesValidButPossiblyMisalignedData) {
    TempDir dir;
    const fs::path p = dir / "odd.safetensors";
    std::string header = base_header().dump();
    if ((8 + header.size()) % 4 == 0) header += ' ';
    write_file(p, safetensors_bytes_unpadded(header, base_data()));
    SafetensorsFile f(p);
    const TensorInfo& a = f.tensors().at("a");
    EXPECT_NE(reinterpret_cast<uintptr_t>(a.data) % 4, 0u);
    std::vector<float> got(6);
    std::memcpy(got.data(), a.data, 24);
    EXPECT_EQ(got, kA);
}

// A file written by Hugging Face's safetensors library (tools/gen_io_fixtures.py), values
// v[i] = (i - 3) * 0.25, so every dtype's decoding is checked against the reference writer.
TEST(Safetensors, ReadsFileWrittenByReferenceImplementation) {
    SafetensorsFile f(fs::path(FARSIGHT_FIXTURES_DIR) / "io" / "reference.safetensors");
    const auto& t = f.tensors();
    ASSERT_EQ(t.size(), 8u);
    EXPECT_EQ(f.metadata().at("note"), "farsight io fixture");
    auto ramp = [](int i) { return (i - 3) * 0.25; };

    const TensorInfo& f32 = t.at("f32");
    EXPECT_EQ(f32.dtype, DType::F32);
    EXPECT_EQ(f32.shape, (std::vector<int64_t>{2, 3}));
    std::vector<float> buf(6);
    convert_to_f32(DType::F32, f32.data, buf.data(), 6);
    for (int i = 0; i < 6; ++i) EXPECT_EQ(buf[i], ramp(i));

    const TensorInfo& f16 = t.at("f16");
    EXPECT_EQ(f16.dtype, DType::F16);
    for (int i = 0; i < 4; ++i) {
        uint16_t h;
        std::memcpy(&h, static_cast<const char*>(f16.data) + 2 * i, 2);
        EXPECT_EQ(f16_to_f32(h), ramp(i));
    }
    const TensorInfo& f64 = t.at("f64");
    EXPECT_EQ(f64.dtype, DType::F64);
    for (int i = 0; i < 2; ++i) {
        double d;
        std::memcpy(&d, static_cast<const char*>(f64.data) + 8 * i, 8);
        EXPECT_EQ(d, ramp(i));
    }
    const TensorInfo& i64 = t.at("i64");
    EXPECT_EQ(i64.dtype, DType::I64);
    int64_t iv[3];
    std::memcpy(iv, i64.data, 24);
    EXPECT_EQ(iv[0], -1);
    EXPECT_EQ(iv[1], int64_t{1} << 40);
    EXPECT_EQ(iv[2], 7);
    const TensorInfo& u8 = t.at("u8");
    EXPECT_EQ(u8.dtype, DType::U8);
    EXPECT_EQ(static_cast<const uint8_t*>(u8.data)[1], 255);
    const TensorInfo& bl = t.at("bool");
    EXPECT_EQ(bl.dtype, DType::BOOL);
    EXPECT_EQ(static_cast<const uint8_t*>(bl.data)[0], 1);
    EXPECT_EQ(static_cast<const uint8_t*>(bl.data)[1], 0);
    const TensorInfo& empty = t.at("empty");
    EXPECT_EQ(empty.shape, (std::vector<int64_t>{0, 4}));
    EXPECT_EQ(empty.nbytes, 0u);
    EXPECT_EQ(empty.numel(), 0);
    const TensorInfo& scalar = t.at("scalar");
    EXPECT_TRUE(scalar.shape.empty());
    EXPECT_EQ(scalar.numel(), 1);
    float s;
    std::memcpy(&s, scalar.data, 4);
    EXPECT_EQ(s, 3.0f);
}

// ---- MappedFile ----

TEST(MappedFile, MapsContentAndFollowsSymlinks) {
    TempDir dir;
    write_file(dir / "f.bin", "hello, mmap");
    fs::create_symlink(dir / "f.bin", dir / "link");
    MappedFile m(dir / "link");
    ASSERT_EQ(m.size(), 11u);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(m.data()), m.size()), "hello, mmap");
    EXPECT_EQ(m.path(), dir / "link");
}

TEST(MappedFile, EmptyFileMapsWithSizeZero) {
    TempDir dir;
    write_file(dir / "empty", "");
    MappedFile m(dir / "empty");
    EXPECT_EQ(m.size(), 0u);
    EXPECT_EQ(m.data(), nullptr);
}

TEST(MappedFile, MissingFile) {
    TempDir dir;
    const fs::path p = dir / "nope.safetensors";
    expect_error([&] { MappedFile m(p); }, {p.string(), "does not exist"});
}

TEST(MappedFile, Directory) {
    TempDir dir;
    expect_error([&] { MappedFile m(dir.path()); }, {dir.path().string(), "is a directory"});
}

TEST(MappedFile, BrokenSymlink) {
    TempDir dir;
    fs::create_symlink(dir / "gone", dir / "link");
    expect_error([&] { MappedFile m(dir / "link"); },
                 {(dir / "link").string(), "broken symbolic link", (dir / "gone").string()});
}

TEST(MappedFile, Unreadable) {
    if (::geteuid() == 0) GTEST_SKIP() << "root can read a mode-000 file";
    TempDir dir;
    write_file(dir / "secret", "x");
    fs::permissions(dir / "secret", fs::perms::none);
    expect_error([&] { MappedFile m(dir / "secret"); },
                 {(dir / "secret").string(), "Permission denied"});
}

// ---- malformed files: one test per check ----

TEST_F(SafetensorsErrors, EmptyFile) {
    expect_rejected("", {"0 bytes", "shorter than the 8-byte"});
}

TEST_F(SafetensorsErrors, ShorterThanEightBytes) {
    expect_rejected(std::string("\x02\x00\x00\x00\x00", 5), {"5 bytes", "shorter than the 8-byte"});
}

TEST_F(SafetensorsErrors, HeaderLengthBeyondFileIsTruncated) {
    const std::string full = safetensors_bytes(base_header().dump(), base_data());
    const size_t hlen = pad_header(base_header().dump()).size();
    // Cut inside the header.
    expect_rejected(full.substr(0, 8 + hlen / 2),
                    {"truncated", "header length says " + std::to_string(hlen)});
}

TEST_F(SafetensorsErrors, AbsurdHeaderLength) {
    expect_rejected(le64(200'000'000) + "{}", {"header length 200000000", "absurd"});
    expect_rejected(le64(~uint64_t{0}) + "{}", {"absurd"});
}

TEST_F(SafetensorsErrors, HeaderNotJson) {
    expect_rejected(safetensors_bytes("{\"a\": {\"dtype\": ", ""), {"not valid JSON"});
    // Invalid UTF-8 inside a string.
    expect_rejected(safetensors_bytes("{\"\xff\xfe\": 1}", ""), {"not valid JSON"});
}

TEST_F(SafetensorsErrors, HeaderNotObject) {
    expect_rejected(safetensors_bytes("[1, 2, 3]", ""), {"array, not an object"});
    expect_rejected(safetensors_bytes("\"hello\"", ""), {"string, not an object"});
}

TEST_F(SafetensorsErrors, DuplicateKey) {
    const std::string h = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                          R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
    expect_rejected(safetensors_bytes(h, std::string(8, '\0')), {"key 'a' appears twice"});
}

TEST_F(SafetensorsErrors, EntryNotObject) {
    json h = base_header();
    h["a"] = 5;
    expect_rejected(h, base_data(), {"tensor 'a'", "must be an object", "number"});
}

TEST_F(SafetensorsErrors, MissingFields) {
    for (const char* field : {"dtype", "shape", "data_offsets"}) {
        json h = base_header();
        h["b"].erase(field);
        expect_rejected(h, base_data(), {"tensor 'b'", std::string("missing field '") + field});
    }
}

TEST_F(SafetensorsErrors, WrongFieldTypes) {
    json h = base_header();
    h["a"]["dtype"] = 32;
    expect_rejected(h, base_data(), {"tensor 'a'", "'dtype' must be a string"});
    h = base_header();
    h["a"]["shape"] = "2x3";
    expect_rejected(h, base_data(), {"tensor 'a'", "'shape' must be an array"});
    h = base_header();
    h["a"]["shape"] = {2, 1.5};
    expect_rejected(h, base_data(), {"tensor 'a'", "shape entries must be integers", "1.5"});
    h = base_header();
    h["a"]["data_offsets"] = {0};
    expect_rejected(h, base_data(), {"tensor 'a'", "'data_offsets' must be an array [begin, end]"});
    h = base_header();
    h["a"]["data_offsets"] = {0, "24"};
    expect_rejected(h, base_data(), {"tensor 'a'", "non-negative integers"});
    h = base_header();
    h["a"]["data_offsets"] = {-4, 24};
    expect_rejected(h, base_data(), {"tensor 'a'", "non-negative integers"});
}

TEST_F(SafetensorsErrors, MetadataNotStringMap) {
    json h = base_header();
    h["__metadata__"]["step"] = 100;
    expect_rejected(h, base_data(), {"__metadata__", "'step'", "must be a string"});
    h = base_header();
    h["__metadata__"] = json::array();
    expect_rejected(h, base_data(), {"__metadata__", "must be an object"});
}

TEST_F(SafetensorsErrors, UnknownDtype) {
    json h = base_header();
    h["b"]["dtype"] = "Q7";
    expect_rejected(h, base_data(), {"tensor 'b'", "unknown dtype 'Q7'"});
    h["b"]["dtype"] = "bf16";  // dtype strings are case-sensitive upper case
    expect_rejected(h, base_data(), {"tensor 'b'", "unknown dtype 'bf16'"});
}

TEST_F(SafetensorsErrors, ValidButUnsupportedDtype) {
    json h = base_header();
    h["b"]["dtype"] = "I16";
    expect_rejected(h, base_data(), {"tensor 'b'", "dtype 'I16'", "not supported by farsight"});
    h["b"]["dtype"] = "F8_E4M3";
    h["b"]["shape"] = {4};
    expect_rejected(h, base_data(), {"tensor 'b'", "dtype 'F8_E4M3'", "not supported"});
}

TEST_F(SafetensorsErrors, NegativeDimension) {
    json h = base_header();
    h["a"]["shape"] = {-2, -3};
    expect_rejected(h, base_data(), {"tensor 'a'", "negative dimension -2"});
}

TEST_F(SafetensorsErrors, ShapeOverflow) {
    json h = base_header();
    h["a"]["shape"] = {int64_t{1} << 40, int64_t{1} << 40};
    expect_rejected(h, base_data(), {"tensor 'a'", "overflows"});
}

TEST_F(SafetensorsErrors, ShapeDoesNotMatchByteRange) {
    json h = base_header();
    h["a"]["shape"] = {2, 2};  // 16 bytes, range is 24
    expect_rejected(h, base_data(),
                    {"tensor 'a'", "shape [2, 2] x F32 (16 bytes)", "[0, 24) (24 bytes)"});
    h = base_header();
    h["b"]["dtype"] = "F32";  // 8 bytes, range is 4
    expect_rejected(h, base_data(), {"tensor 'b'", "does not match data_offsets"});
}

TEST_F(SafetensorsErrors, BeginAfterEnd) {
    json h = base_header();
    h["b"]["data_offsets"] = {28, 24};
    expect_rejected(h, base_data(), {"tensor 'b'", "begin 28 > end 24"});
}

TEST_F(SafetensorsErrors, TensorBeyondDataSectionIsTruncated) {
    // The file lost its last 2 bytes: tensor b now ends past the data section.
    const std::string data = base_data();
    expect_rejected(base_header(), data.substr(0, data.size() - 2),
                    {"truncated", "tensor 'b'", "ends at byte 28", "only 26 bytes"});
}

TEST_F(SafetensorsErrors, OverlappingTensors) {
    json h = base_header();
    h["b"]["data_offsets"] = {20, 24};
    // a = [0,24), b = [20,24): overlap; the file is 24 data bytes so nothing else fails first.
    expect_rejected(h, base_data().substr(0, 24), {"tensors 'a' and 'b' overlap", "[20, 24)"});
}

TEST_F(SafetensorsErrors, HoleBetweenTensors) {
    json h = base_header();
    h["b"]["data_offsets"] = {28, 32};
    expect_rejected(h, base_data() + std::string(4, '\0'),
                    {"hole in the data section", "[24, 28)", "'a' and 'b'"});
}

TEST_F(SafetensorsErrors, HoleAtStart) {
    json h = base_header();
    h["a"]["data_offsets"] = {4, 28};
    h["b"]["data_offsets"] = {28, 32};
    expect_rejected(h, "pad!" + base_data(), {"hole in the data section", "[0, 4)", "'a'"});
}

TEST_F(SafetensorsErrors, TrailingBytes) {
    expect_rejected(base_header(), base_data() + "junk", {"4 trailing bytes"});
}

TEST(MappedFile, NotARegularFile) {
    expect_error([] { MappedFile m("/dev/null"); }, {"/dev/null", "not a regular file"});
}

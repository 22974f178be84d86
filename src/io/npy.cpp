#include "io/npy.h"

#include <bit>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <string>
#include <variant>

#include "core/error.h"

namespace farsight {

namespace fs = std::filesystem;

namespace {

constexpr char kMagic[] = "\x93NUMPY";  // 6 bytes

std::string shape_tuple(const std::vector<int64_t>& shape) {
    std::string s = "(";
    for (size_t i = 0; i < shape.size(); ++i) {
        if (i) s += ", ";
        s += std::to_string(shape[i]);
    }
    if (shape.size() == 1) s += ",";
    return s + ")";
}

// A tiny parser for the header: a Python dict literal with string keys and values that are
// strings, True/False or tuples of non-negative integers.
using Value = std::variant<std::string, bool, std::vector<int64_t>>;

class HeaderParser {
  public:
    HeaderParser(const std::string& s, const std::string& file) : s_(s), file_(file) {}

    std::map<std::string, Value> parse_dict() {
        std::map<std::string, Value> out;
        expect('{');
        while (true) {
            skip_ws();
            if (peek() == '}') {
                ++i_;
                break;
            }
            std::string key = parse_string();
            expect(':');
            out[key] = parse_value();
            skip_ws();
            if (peek() == ',') {
                ++i_;
                continue;
            }
            expect('}');
            break;
        }
        return out;
    }

  private:
    [[noreturn]] void bad(const char* what) {
        fail("'{}': malformed .npy header ({} at offset {}): {}", file_, what, i_, s_);
    }
    void skip_ws() {
        while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
    }
    char peek() { return i_ < s_.size() ? s_[i_] : '\0'; }
    void expect(char c) {
        skip_ws();
        if (peek() != c) bad("unexpected character");
        ++i_;
    }
    std::string parse_string() {
        skip_ws();
        const char q = peek();
        if (q != '\'' && q != '"') bad("expected a string");
        const size_t start = ++i_;
        while (i_ < s_.size() && s_[i_] != q) ++i_;
        if (i_ >= s_.size()) bad("unterminated string");
        return s_.substr(start, i_++ - start);
    }
    Value parse_value() {
        skip_ws();
        const char c = peek();
        if (c == '\'' || c == '"') return parse_string();
        if (s_.compare(i_, 4, "True") == 0) {
            i_ += 4;
            return true;
        }
        if (s_.compare(i_, 5, "False") == 0) {
            i_ += 5;
            return false;
        }
        if (c == '(') {
            ++i_;
            std::vector<int64_t> dims;
            while (true) {
                skip_ws();
                if (peek() == ')') {
                    ++i_;
                    return dims;
                }
                if (!std::isdigit(static_cast<unsigned char>(peek()))) bad("expected a dimension");
                int64_t v = 0;
                while (std::isdigit(static_cast<unsigned char>(peek()))) {
                    if (v > (std::numeric_limits<int64_t>::max() - 9) / 10)
                        bad("dimension too large");
                    v = v * 10 + (s_[i_++] - '0');
                }
                dims.push_back(v);
                skip_ws();
                if (peek() == ',')
                    ++i_;
                else if (peek() != ')')
                    bad("expected ',' or ')'");
            }
        }
        bad("unsupported value");
    }

    const std::string& s_;
    const std::string& file_;
    size_t i_ = 0;
};

}  // namespace

void write_npy(const fs::path& path, const float* data, std::vector<int64_t> shape) {
    uint64_t n = 1;
    for (auto d : shape) {
        FS_CHECK(d >= 0, "write_npy('{}'): negative dimension in shape {}", path.string(),
                 shape_tuple(shape));
        n *= static_cast<uint64_t>(d);
    }
    std::string header =
        "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape_tuple(shape) + ", }";
    // magic(6) + version(2) + header_len(2) + header + '\n' must be a multiple of 64.
    const size_t unpadded = 10 + header.size() + 1;
    header.append((64 - unpadded % 64) % 64, ' ');
    header += '\n';
    FS_CHECK(header.size() <= 65535, "write_npy('{}'): header too long for format 1.0",
             path.string());

    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    FS_CHECK(out, "cannot create '{}': {}", path.string(), std::strerror(errno));
    out.write(kMagic, 6);
    const char version[2] = {1, 0};
    out.write(version, 2);
    const uint16_t hl = static_cast<uint16_t>(header.size());
    const char hlb[2] = {static_cast<char>(hl & 0xff), static_cast<char>(hl >> 8)};
    out.write(hlb, 2);
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    // Little-endian host assumed (x86-64 / aarch64), so the floats are written as they are.
    static_assert(std::endian::native == std::endian::little);
    if (n > 0) out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(n * 4));
    out.flush();
    FS_CHECK(out, "error writing '{}' (disk full?)", path.string());
}

NpyArray read_npy(const fs::path& path) {
    const std::string file = path.string();
    std::ifstream in(path, std::ios::binary);
    FS_CHECK(in, "cannot open '{}': {}", file, std::strerror(errno));
    in.seekg(0, std::ios::end);
    const std::streamoff fsize = in.tellg();
    in.seekg(0, std::ios::beg);
    FS_CHECK(fsize >= 0, "cannot determine the size of '{}'", file);
    std::string bytes(static_cast<size_t>(fsize), '\0');
    in.read(bytes.data(), fsize);
    FS_CHECK(in, "error reading '{}'", file);

    FS_CHECK(bytes.size() >= 10 && bytes.compare(0, 6, kMagic, 6) == 0,
             "'{}' is not a .npy file (missing \\x93NUMPY magic)", file);
    const int major = static_cast<uint8_t>(bytes[6]);
    size_t hlen = 0, hstart = 0;
    if (major == 1) {
        hlen = static_cast<uint8_t>(bytes[8]) |
               (static_cast<size_t>(static_cast<uint8_t>(bytes[9])) << 8);
        hstart = 10;
    } else if (major == 2 || major == 3) {
        FS_CHECK(bytes.size() >= 12, "'{}' is truncated inside the .npy header", file);
        for (int i = 3; i >= 0; --i) hlen = (hlen << 8) | static_cast<uint8_t>(bytes[8 + i]);
        hstart = 12;
    } else {
        fail("'{}': unsupported .npy format version {}.{}", file, major,
             static_cast<int>(static_cast<uint8_t>(bytes[7])));
    }
    FS_CHECK(hlen <= bytes.size() - hstart,
             "'{}' is truncated: .npy header length {} exceeds the file", file, hlen);
    const std::string header = bytes.substr(hstart, hlen);
    auto dict = HeaderParser(header, file).parse_dict();

    auto get = [&](const char* key) -> const Value& {
        auto it = dict.find(key);
        if (it == dict.end()) fail("'{}': .npy header has no '{}' key: {}", file, key, header);
        return it->second;
    };
    const auto* descr = std::get_if<std::string>(&get("descr"));
    const auto* fortran = std::get_if<bool>(&get("fortran_order"));
    const auto* shape = std::get_if<std::vector<int64_t>>(&get("shape"));
    FS_CHECK(descr && fortran && shape, "'{}': .npy header has a field of the wrong type: {}", file,
             header);
    size_t esize = 0;
    bool big_endian = false;
    if (*descr == "<f4" || *descr == ">f4") esize = 4;
    if (*descr == "<f8" || *descr == ">f8") esize = 8;
    FS_CHECK(esize != 0, "'{}': unsupported .npy dtype '{}' (only '<f4' and '<f8' are supported)",
             file, *descr);
    big_endian = (*descr)[0] == '>';

    NpyArray arr;
    arr.shape = *shape;
    uint64_t n = 1;
    for (auto d : arr.shape)
        FS_CHECK(!__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n),
                 "'{}': .npy shape {} is too large", file, shape_tuple(arr.shape));
    uint64_t need = 0;
    FS_CHECK(!__builtin_mul_overflow(n, esize, &need), "'{}': .npy shape {} is too large", file,
             shape_tuple(arr.shape));
    const size_t dstart = hstart + hlen;
    const size_t have = bytes.size() - dstart;
    FS_CHECK(have >= need, "'{}' is truncated: shape {} needs {} data bytes, file has {}", file,
             shape_tuple(arr.shape), need, have);
    FS_CHECK(have == need, "'{}': {} unexpected trailing bytes after the array data", file,
             have - need);

    arr.data.resize(n);
    const char* src = bytes.data() + dstart;
    auto load = [&](uint64_t i) -> double {
        unsigned char b[8];
        std::memcpy(b, src + i * esize, esize);
        if (big_endian)
            for (size_t k = 0; k < esize / 2; ++k) std::swap(b[k], b[esize - 1 - k]);
        if (esize == 4) {
            float f;
            std::memcpy(&f, b, 4);
            return f;
        }
        double d;
        std::memcpy(&d, b, 8);
        return d;
    };
    if (!*fortran || arr.shape.size() <= 1) {
        for (uint64_t i = 0; i < n; ++i) arr.data[i] = load(i);
    } else {
        // Fortran order: the first index varies fastest in the file. Walk C order and compute the
        // Fortran offset of each element.
        const size_t r = arr.shape.size();
        std::vector<uint64_t> fstride(r);
        uint64_t s = 1;
        for (size_t k = 0; k < r; ++k) {
            fstride[k] = s;
            s *= static_cast<uint64_t>(arr.shape[k]);
        }
        std::vector<int64_t> idx(r, 0);
        for (uint64_t i = 0; i < n; ++i) {
            uint64_t off = 0;
            for (size_t k = 0; k < r; ++k) off += static_cast<uint64_t>(idx[k]) * fstride[k];
            arr.data[i] = load(off);
            for (size_t k = r; k-- > 0;) {
                if (++idx[k] < arr.shape[k]) break;
                idx[k] = 0;
            }
        }
    }
    return arr;
}

}  // namespace farsight

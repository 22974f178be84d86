#pragma once
// Helpers shared by the tests/io suites: temporary folders, file writing, error-message checks,
// environment overrides.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"

namespace farsight::testing {

namespace fs = std::filesystem;

// A fresh folder under the system temp dir, removed (recursively) on destruction.
class TempDir {
  public:
    TempDir() {
        std::string tmpl = (fs::temp_directory_path() / "farsight-io-XXXXXX").string();
        std::vector<char> buf(tmpl.begin(), tmpl.end());
        buf.push_back('\0');
        char* p = ::mkdtemp(buf.data());
        if (p == nullptr) throw std::runtime_error("mkdtemp failed");
        path_ = p;
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const fs::path& path() const { return path_; }
    fs::path operator/(const std::string& name) const { return path_ / name; }

  private:
    fs::path path_;
};

inline void write_file(const fs::path& p, const std::string& bytes) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) throw std::runtime_error("cannot write " + p.string());
}

inline std::string read_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

inline std::string le64(uint64_t v) {
    std::string s(8, '\0');
    for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
    return s;
}

// The header padded with spaces so the data section starts 8-byte aligned, as writers do.
inline std::string pad_header(std::string header) {
    while (header.size() % 8 != 0) header += ' ';
    return header;
}

// Bytes of a safetensors file: 8-byte little-endian header length, (padded) header, data.
inline std::string safetensors_bytes(const std::string& header, const std::string& data) {
    const std::string h = pad_header(header);
    return le64(h.size()) + h + data;
}

// The same without padding: tensor data may then be misaligned in the mapping.
inline std::string safetensors_bytes_unpadded(const std::string& header, const std::string& data) {
    return le64(header.size()) + header + data;
}

template <typename T>
std::string raw_bytes(const std::vector<T>& v) {
    std::string s(v.size() * sizeof(T), '\0');
    if (!v.empty()) std::memcpy(s.data(), v.data(), s.size());
    return s;
}

// Runs fn, expects a farsight::Error whose message contains every one of `parts`.
inline void expect_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
    try {
        fn();
    } catch (const farsight::Error& e) {
        const std::string msg = e.what();
        for (const auto& p : parts)
            EXPECT_NE(msg.find(p), std::string::npos)
                << "message lacks \"" << p << "\":\n  " << msg;
        return;
    } catch (const std::exception& e) {
        ADD_FAILURE() << "threw a non-farsight exception: " << e.what();
        return;
    }
    ADD_FAILURE() << "no farsight::Error thrown (expected one mentioning \""
                  << (parts.empty() ? "" : parts[0]) << "\")";
}

// Sets / unsets environment variables for the lifetime of the object, then restores them.
class EnvOverride {
  public:
    void set(const std::string& name, const std::optional<std::string>& value) {
        if (!saved_.count(name)) {
            const char* old = std::getenv(name.c_str());
            saved_[name] = old ? std::optional<std::string>(old) : std::nullopt;
        }
        if (value)
            ::setenv(name.c_str(), value->c_str(), 1);
        else
            ::unsetenv(name.c_str());
    }
    ~EnvOverride() {
        for (const auto& [k, v] : saved_) {
            if (v)
                ::setenv(k.c_str(), v->c_str(), 1);
            else
                ::unsetenv(k.c_str());
        }
    }

  private:
    std::map<std::string, std::optional<std::string>> saved_;
};

}  // namespace farsight::testing

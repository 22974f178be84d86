// TEMPORARY (replaced by the io branch).
#include <cstring>
#include <fstream>
#include <string>

#include "core/error.h"
#include "io/npy.h"

namespace farsight {
void write_npy(const std::filesystem::path& path, const float* data, const std::vector<int64_t>& shape) {
    std::string sh = "(";
    int64_t n = 1;
    for (auto d : shape) sh += std::to_string(d) + ",", n *= d;
    sh += ")";
    std::string hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': " + sh + ", }";
    while ((10 + hdr.size() + 1) % 64) hdr += ' ';
    hdr += '\n';
    std::ofstream f(path, std::ios::binary);
    FS_CHECK(f.good(), "cannot write {}", path.string());
    f.write("\x93NUMPY\x01\x00", 8);
    const uint16_t len = static_cast<uint16_t>(hdr.size());
    f.write(reinterpret_cast<const char*>(&len), 2);
    f.write(hdr.data(), static_cast<std::streamsize>(hdr.size()));
    f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(n * 4));
}
NpyArray read_npy(const std::filesystem::path& path) {
    std::ifstream f(path, std::ios::binary);
    FS_CHECK(f.good(), "cannot open {}", path.string());
    char magic[10];
    f.read(magic, 10);
    uint16_t len;
    std::memcpy(&len, magic + 8, 2);
    std::string hdr(len, ' ');
    f.read(hdr.data(), len);
    NpyArray a;
    auto p = hdr.find("'shape': (") + 10;
    auto e = hdr.find(')', p);
    std::string s = hdr.substr(p, e - p);
    int64_t n = 1;
    size_t i = 0;
    while (i < s.size()) {
        size_t j = s.find(',', i);
        if (j == std::string::npos) j = s.size();
        std::string tok = s.substr(i, j - i);
        if (tok.find_first_of("0123456789") != std::string::npos) a.shape.push_back(std::stoll(tok)), n *= a.shape.back();
        i = j + 1;
    }
    const bool f8 = hdr.find("<f8") != std::string::npos;
    a.data.resize(static_cast<size_t>(n));
    if (f8) f.read(reinterpret_cast<char*>(a.data.data()), n * 8);
    else {
        std::vector<float> t(static_cast<size_t>(n));
        f.read(reinterpret_cast<char*>(t.data()), n * 4);
        for (size_t k = 0; k < t.size(); ++k) a.data[k] = t[k];
    }
    return a;
}
}  // namespace farsight

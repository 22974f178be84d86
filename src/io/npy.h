#pragma once
// NumPy .npy files (format spec: numpy.lib.format, versions 1.0/2.0/3.0).
// write_npy writes float32 ('<f4', C order, version 1.0, header padded to a multiple of 64 bytes);
// read_npy reads '<f4' or '<f8' (C or Fortran order) into doubles in C order.
#include <cstdint>
#include <filesystem>
#include <vector>

namespace farsight {

struct NpyArray {
    std::vector<int64_t> shape;  // empty for a 0-d array (one element)
    std::vector<double> data;    // C (row-major) order
    int64_t numel() const {
        int64_t n = 1;
        for (auto d : shape) n *= d;
        return n;
    }
};

// Writes numel(shape) floats. Throws Error naming the file if it cannot be written.
void write_npy(const std::filesystem::path& path, const float* data, std::vector<int64_t> shape);

// Throws Error naming the file and the problem (bad magic, unsupported dtype, truncated data...).
NpyArray read_npy(const std::filesystem::path& path);

}  // namespace farsight

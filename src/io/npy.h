#pragma once
// NumPy .npy files (format v1.0): float32 writer, float32/float64 reader.
#include <cstdint>
#include <filesystem>
#include <vector>

namespace farsight {

struct NpyArray {
    std::vector<int64_t> shape;
    std::vector<double> data;  // C order
};

void write_npy(const std::filesystem::path& path, const float* data, const std::vector<int64_t>& shape);
NpyArray read_npy(const std::filesystem::path& path);

}  // namespace farsight

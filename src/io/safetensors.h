#pragma once
// Memory-mapped safetensors files (single or sharded) and the WeightSource interface through
// which models get their tensors. Nothing is copied at load: TensorInfo::data points into the map.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace farsight {

struct TensorInfo {
    std::string name;
    DType dtype = DType::F32;
    std::vector<int64_t> shape;
    // Into the mapping (or owned storage for random weights). Aligned to the element size only
    // if the writer padded the header (HF writers pad it to 8 bytes; the format does not require
    // it): read through memcpy, or check alignment, before casting to float*/uint16_t*.
    const void* data = nullptr;
    size_t nbytes = 0;
    std::string file;            // where it came from, for error messages

    int64_t numel() const {
        int64_t n = 1;
        for (auto d : shape) n *= d;
        return n;
    }
};

// A read-only memory mapping of a whole file (RAII).
class MappedFile {
public:
    explicit MappedFile(const std::filesystem::path& path);  // throws Error naming the file
    ~MappedFile();
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;
    const std::byte* data() const { return data_; }
    size_t size() const { return size_; }
    const std::filesystem::path& path() const { return path_; }

private:
    std::filesystem::path path_;
    const std::byte* data_ = nullptr;
    size_t size_ = 0;
};

// One .safetensors file. The constructor validates everything: header length within the file,
// valid JSON, known dtypes, shape x dtype size == byte range, offsets inside the data section,
// no overlapping ranges. Errors name the file and the tensor.
class SafetensorsFile {
public:
    explicit SafetensorsFile(const std::filesystem::path& path);
    const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
    const std::map<std::string, std::string>& metadata() const { return metadata_; }

private:
    std::unique_ptr<MappedFile> map_;
    std::map<std::string, TensorInfo> tensors_;
    std::map<std::string, std::string> metadata_;
};

// Where a model's tensors come from.
class WeightSource {
public:
    virtual ~WeightSource() = default;
    virtual const TensorInfo* find(const std::string& name) const = 0;
    // Throws Error("tensor 'X' not found in <where>") when absent.
    const TensorInfo& get(const std::string& name) const;
    virtual std::string describe() const = 0;  // e.g. the folder path, for messages
    virtual std::vector<std::string> names() const = 0;
};

// model.safetensors, or model.safetensors.index.json + its shards, in a folder.
// Errors: missing files (names what was looked for), a shard listed in the index that is
// missing, a tensor whose shard does not contain it.
std::unique_ptr<WeightSource> open_safetensors_folder(const std::filesystem::path& folder);

}  // namespace farsight

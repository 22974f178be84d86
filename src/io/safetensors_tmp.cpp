// TEMPORARY minimal loader (replaced by the io branch).
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <cstring>
#include <fstream>
#include <set>

#include "core/error.h"
#include "io/hf_cache.h"
#include "io/safetensors.h"

namespace farsight {
MappedFile::MappedFile(const std::filesystem::path& path) : path_(path) {
    int fd = ::open(path.c_str(), O_RDONLY);
    FS_CHECK(fd >= 0, "cannot open {}", path.string());
    struct stat st;
    fstat(fd, &st);
    size_ = static_cast<size_t>(st.st_size);
    void* p = mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    ::close(fd);
    data_ = static_cast<const std::byte*>(p);
}
MappedFile::~MappedFile() {
    if (data_) munmap(const_cast<std::byte*>(data_), size_);
}
SafetensorsFile::SafetensorsFile(const std::filesystem::path& path) {
    map_ = std::make_unique<MappedFile>(path);
    uint64_t n;
    std::memcpy(&n, map_->data(), 8);
    auto j = nlohmann::json::parse(reinterpret_cast<const char*>(map_->data()) + 8,
                                   reinterpret_cast<const char*>(map_->data()) + 8 + n);
    const std::byte* base = map_->data() + 8 + n;
    for (auto& [k, v] : j.items()) {
        if (k == "__metadata__") continue;
        TensorInfo t;
        t.name = k;
        std::string dt = v["dtype"];
        t.dtype = dt == "F32" ? DType::F32 : dt == "BF16" ? DType::BF16 : DType::F16;
        t.shape = v["shape"].get<std::vector<int64_t>>();
        t.data = base + v["data_offsets"][0].get<size_t>();
        t.nbytes = v["data_offsets"][1].get<size_t>() - v["data_offsets"][0].get<size_t>();
        t.file = path.string();
        tensors_[k] = t;
    }
}
const TensorInfo& WeightSource::get(const std::string& name) const {
    const TensorInfo* t = find(name);
    FS_CHECK(t, "tensor '{}' not found in {}", name, describe());
    return *t;
}
namespace {
class Folder : public WeightSource {
public:
    explicit Folder(const std::filesystem::path& d) : dir_(d) {
        if (std::filesystem::exists(d / "model.safetensors.index.json")) {
            std::ifstream f(d / "model.safetensors.index.json");
            auto j = nlohmann::json::parse(f);
            std::set<std::string> shards;
            for (auto& [k, v] : j["weight_map"].items()) shards.insert(v.get<std::string>());
            for (auto& s : shards) files_.push_back(std::make_unique<SafetensorsFile>(d / s));
        } else {
            files_.push_back(std::make_unique<SafetensorsFile>(d / "model.safetensors"));
        }
    }
    const TensorInfo* find(const std::string& n) const override {
        for (auto& f : files_) {
            auto it = f->tensors().find(n);
            if (it != f->tensors().end()) return &it->second;
        }
        return nullptr;
    }
    std::string describe() const override { return dir_.string(); }
    std::vector<std::string> names() const override { return {}; }

private:
    std::filesystem::path dir_;
    std::vector<std::unique_ptr<SafetensorsFile>> files_;
};
}  // namespace
std::unique_ptr<WeightSource> open_safetensors_folder(const std::filesystem::path& folder) {
    return std::make_unique<Folder>(folder);
}
std::filesystem::path resolve_model_path(const std::string& arg) { return arg; }
}  // namespace farsight

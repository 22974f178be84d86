#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <unordered_map>

#include "core/error.h"

namespace farsight {

namespace fs = std::filesystem;
using nlohmann::json;

// ---------------------------------------------------------------------------------------------
// MappedFile

namespace {

// Closes a file descriptor on scope exit.
struct FdGuard {
    int fd = -1;
    ~FdGuard() {
        if (fd >= 0) ::close(fd);
    }
};

}  // namespace

MappedFile::MappedFile(const fs::path& path) : path_(path) {
    FdGuard guard;
    // open() follows symlinks, so Hugging Face cache snapshots (symlinks into blobs/) work.
    guard.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (guard.fd < 0) {
        const int err = errno;
        if (err == ENOENT) {
            std::error_code ec;
            if (fs::is_symlink(fs::symlink_status(path, ec)))
                fail("cannot open '{}': it is a broken symbolic link (target '{}' is missing)",
                     path.string(), fs::read_symlink(path, ec).string());
            fail("cannot open '{}': file does not exist", path.string());
        }
        fail("cannot open '{}': {}", path.string(), std::strerror(err));
    }
    struct stat st {};
    if (::fstat(guard.fd, &st) != 0)
        fail("cannot stat '{}': {}", path.string(), std::strerror(errno));
    if (S_ISDIR(st.st_mode)) fail("cannot map '{}': it is a directory, not a file", path.string());
    if (!S_ISREG(st.st_mode)) fail("cannot map '{}': not a regular file", path.string());
    size_ = static_cast<size_t>(st.st_size);
    if (size_ == 0) return;  // nothing to map; data() stays nullptr
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, guard.fd, 0);
    if (p == MAP_FAILED)
        fail("cannot memory-map '{}' ({} bytes): {}", path.string(), size_, std::strerror(errno));
    data_ = static_cast<const std::byte*>(p);
}

MappedFile::~MappedFile() {
    if (data_ != nullptr) ::munmap(const_cast<std::byte*>(data_), size_);
}

// ---------------------------------------------------------------------------------------------
// SafetensorsFile

namespace {

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // same limit as the reference implementation

// Safetensors dtype strings. Those farsight has no DType for are recognised (so the message can
// say "not supported" rather than "unknown") but rejected.
bool safetensors_dtype(const std::string& s, DType* out, bool* known) {
    static const std::unordered_map<std::string, DType> supported = {
        {"F64", DType::F64},   {"F32", DType::F32}, {"F16", DType::F16},
        {"BF16", DType::BF16}, {"I64", DType::I64}, {"I32", DType::I32},
        {"I8", DType::I8},     {"U8", DType::U8},   {"BOOL", DType::BOOL}};
    static const std::set<std::string> unsupported = {"I16",     "U16",     "U32",     "U64",
                                                      "F8_E5M2", "F8_E4M3", "F8_E8M0", "F4",
                                                      "F6_E2M3", "F6_E3M2", "C64"};
    auto it = supported.find(s);
    if (it != supported.end()) {
        *out = it->second;
        *known = true;
        return true;
    }
    *known = unsupported.count(s) != 0;
    return false;
}

std::string shape_str(const std::vector<int64_t>& shape) {
    std::string s = "[";
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
}

}  // namespace

SafetensorsFile::SafetensorsFile(const fs::path& path) : map_(std::make_unique<MappedFile>(path)) {
    const std::string file = path.string();
    const size_t size = map_->size();
    FS_CHECK(size >= 8,
             "'{}' is not a valid safetensors file: it is {} bytes long, shorter than the 8-byte "
             "header length (empty or truncated file?)",
             file, size);
    const std::byte* base = map_->data();
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(base[i]);
    FS_CHECK(n <= kMaxHeaderBytes,
             "'{}' is not a valid safetensors file: header length {} bytes is absurd (limit {}); "
             "the file is corrupt or not safetensors",
             file, n, kMaxHeaderBytes);
    FS_CHECK(n <= size - 8,
             "'{}' is truncated: header length says {} bytes but only {} bytes follow the 8-byte "
             "length (re-download the file)",
             file, n, size - 8);
    FS_CHECK(n >= 2, "'{}' is not a valid safetensors file: header of {} bytes is too short", file,
             n);
    const char* hdr = reinterpret_cast<const char*>(base + 8);

    // Parse, rejecting duplicate top-level keys (nlohmann would silently keep the last one).
    std::set<std::string> seen_keys;
    std::string dup_key;
    json::parser_callback_t cb = [&](int depth, json::parse_event_t ev, json& parsed) {
        if (ev == json::parse_event_t::key && depth == 1 && dup_key.empty()) {
            const auto& k = parsed.get_ref<const std::string&>();
            if (!seen_keys.insert(k).second) dup_key = k;
        }
        return true;
    };
    json header;
    try {
        header = json::parse(hdr, hdr + n, cb);
    } catch (const json::exception& e) {
        fail("'{}' has an invalid safetensors header: not valid JSON ({})", file, e.what());
    }
    FS_CHECK(header.is_object(),
             "'{}' has an invalid safetensors header: the JSON is {}, not an object", file,
             header.type_name());
    FS_CHECK(dup_key.empty(), "'{}' has an invalid safetensors header: key '{}' appears twice",
             file, dup_key);

    const uint64_t data_size = size - 8 - n;
    const std::byte* data = base + 8 + n;

    struct Range {
        uint64_t begin, end;
        const std::string* name;
    };
    std::vector<Range> ranges;
    ranges.reserve(header.size());

    for (auto& [name, entry] : header.items()) {
        if (name == "__metadata__") {
            FS_CHECK(entry.is_object(),
                     "'{}': __metadata__ must be an object of string values, got {}", file,
                     entry.type_name());
            for (auto& [k, v] : entry.items()) {
                FS_CHECK(v.is_string(),
                         "'{}': __metadata__ value for '{}' must be a string, got {}", file, k,
                         v.type_name());
                metadata_[k] = v.get<std::string>();
            }
            continue;
        }
        FS_CHECK(entry.is_object(), "'{}': tensor '{}': entry must be an object, got {}", file,
                 name, entry.type_name());
        for (const char* field : {"dtype", "shape", "data_offsets"})
            FS_CHECK(entry.contains(field), "'{}': tensor '{}': missing field '{}'", file, name,
                     field);

        TensorInfo t;
        t.name = name;
        t.file = file;

        const json& jd = entry["dtype"];
        FS_CHECK(jd.is_string(), "'{}': tensor '{}': field 'dtype' must be a string, got {}", file,
                 name, jd.type_name());
        const std::string ds = jd.get<std::string>();
        bool known = false;
        if (!safetensors_dtype(ds, &t.dtype, &known)) {
            if (known)
                fail(
                    "'{}': tensor '{}': dtype '{}' is valid safetensors but not supported by "
                    "farsight",
                    file, name, ds);
            fail(
                "'{}': tensor '{}': unknown dtype '{}' (expected one of F64, F32, F16, BF16, I64, "
                "I32, I8, U8, BOOL)",
                file, name, ds);
        }

        const json& js = entry["shape"];
        FS_CHECK(js.is_array(), "'{}': tensor '{}': field 'shape' must be an array, got {}", file,
                 name, js.type_name());
        uint64_t numel = 1;
        bool overflow = false;
        for (const json& d : js) {
            FS_CHECK(d.is_number_integer(),
                     "'{}': tensor '{}': shape entries must be integers, got {}", file, name,
                     d.dump());
            FS_CHECK(d.is_number_unsigned() || d.get<int64_t>() >= 0,
                     "'{}': tensor '{}': negative dimension {} in shape {}", file, name,
                     d.get<int64_t>(), js.dump());
            const uint64_t dim = d.get<uint64_t>();
            FS_CHECK(dim <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
                     "'{}': tensor '{}': dimension {} in shape is too large", file, name, dim);
            t.shape.push_back(static_cast<int64_t>(dim));
            overflow = overflow || __builtin_mul_overflow(numel, dim, &numel);
        }
        uint64_t nbytes = 0;
        overflow = overflow || __builtin_mul_overflow(numel, dtype_size(t.dtype), &nbytes);
        FS_CHECK(!overflow, "'{}': tensor '{}': shape {} overflows the byte size", file, name,
                 shape_str(t.shape));

        const json& jo = entry["data_offsets"];
        FS_CHECK(jo.is_array() && jo.size() == 2,
                 "'{}': tensor '{}': field 'data_offsets' must be an array [begin, end], got {}",
                 file, name, jo.dump());
        for (const json& o : jo)
            FS_CHECK(o.is_number_unsigned() || (o.is_number_integer() && o.get<int64_t>() >= 0),
                     "'{}': tensor '{}': data_offsets must be non-negative integers, got {}", file,
                     name, jo.dump());
        const uint64_t begin = jo[0].get<uint64_t>();
        const uint64_t end = jo[1].get<uint64_t>();
        FS_CHECK(begin <= end, "'{}': tensor '{}': data_offsets begin {} > end {}", file, name,
                 begin, end);
        FS_CHECK(end - begin == nbytes,
                 "'{}': tensor '{}': shape {} x {} ({} bytes) does not match data_offsets [{}, {}) "
                 "({} bytes)",
                 file, name, shape_str(t.shape), ds, nbytes, begin, end, end - begin);
        FS_CHECK(end <= data_size,
                 "'{}' is truncated: tensor '{}' ends at byte {} of the data section but the data "
                 "section has only {} bytes (re-download the file)",
                 file, name, end, data_size);
        t.nbytes = static_cast<size_t>(nbytes);
        t.data = data + begin;
        auto [it, inserted] = tensors_.emplace(name, std::move(t));
        ranges.push_back({begin, end, &it->first});
    }

    // Byte ranges must tile the data section exactly, like the reference implementation demands:
    // no overlap, no hole, nothing after the last tensor.
    std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {
        return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    uint64_t pos = 0;
    const std::string* prev = nullptr;
    for (const Range& r : ranges) {
        if (r.begin < pos)
            fail("'{}': tensors '{}' and '{}' overlap (bytes [{}, {}) of the data section)", file,
                 *prev, *r.name, r.begin, pos);
        if (r.begin > pos) {
            if (prev)
                fail(
                    "'{}': hole in the data section: bytes [{}, {}) between tensors '{}' and '{}' "
                    "belong to no tensor",
                    file, pos, r.begin, *prev, *r.name);
            fail(
                "'{}': hole in the data section: bytes [0, {}) before tensor '{}' belong to no "
                "tensor",
                file, r.begin, *r.name);
        }
        pos = r.end;
        prev = r.name;
    }
    FS_CHECK(pos == data_size,
             "'{}': {} trailing bytes after the last tensor's data (data section is {} bytes, "
             "tensors cover {}); the file is corrupt",
             file, data_size - pos, data_size, pos);
}

// ---------------------------------------------------------------------------------------------
// WeightSource

const TensorInfo& WeightSource::get(const std::string& name) const {
    const TensorInfo* t = find(name);
    if (t == nullptr) fail("tensor '{}' not found in {}", name, describe());
    return *t;
}

namespace {

class SafetensorsFolder final : public WeightSource {
  public:
    explicit SafetensorsFolder(std::string where) : where_(std::move(where)) {}

    const TensorInfo* find(const std::string& name) const override {
        auto it = index_.find(name);
        return it == index_.end() ? nullptr : it->second;
    }
    std::string describe() const override { return where_; }
    std::vector<std::string> names() const override {
        std::vector<std::string> out;
        out.reserve(index_.size());
        for (const auto& [k, v] : index_) out.push_back(k);
        return out;
    }

    std::string where_;
    std::vector<std::unique_ptr<SafetensorsFile>> files_;
    std::map<std::string, const TensorInfo*> index_;
};

json read_json_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    FS_CHECK(in, "cannot read '{}'", p.string());
    std::stringstream ss;
    ss << in.rdbuf();
    try {
        return json::parse(ss.str());
    } catch (const json::exception& e) {
        fail("'{}' is not valid JSON: {}", p.string(), e.what());
    }
}

// True if something is at `p`, counting a broken symlink (so opening it reports the link).
bool present(const fs::path& p) {
    std::error_code ec;
    return fs::exists(fs::symlink_status(p, ec));
}

}  // namespace

std::unique_ptr<WeightSource> open_safetensors_folder(const fs::path& folder) {
    std::error_code ec;
    FS_CHECK(fs::exists(folder, ec), "model folder '{}' does not exist", folder.string());
    FS_CHECK(fs::is_directory(folder, ec),
             "'{}' is not a folder (expected a model folder "
             "containing model.safetensors or model.safetensors.index.json)",
             folder.string());

    const fs::path index_path = folder / "model.safetensors.index.json";
    const fs::path single_path = folder / "model.safetensors";

    if (present(index_path)) {
        auto src = std::make_unique<SafetensorsFolder>(folder.string() + " (sharded, " +
                                                       index_path.filename().string() + ")");
        const json idx = read_json_file(index_path);
        FS_CHECK(idx.is_object() && idx.contains("weight_map") && idx["weight_map"].is_object(),
                 "'{}' has no \"weight_map\" object", index_path.string());
        std::map<std::string, const SafetensorsFile*> shards;
        for (auto& [tensor, shard_j] : idx["weight_map"].items()) {
            FS_CHECK(shard_j.is_string(), "'{}': weight_map entry for tensor '{}' is not a string",
                     index_path.string(), tensor);
            const std::string shard = shard_j.get<std::string>();
            const fs::path rel(shard);
            FS_CHECK(!shard.empty() && rel.is_relative() && rel.filename() == rel,
                     "'{}': shard '{}' for tensor '{}' must be a plain file name in the folder",
                     index_path.string(), shard, tensor);
            auto it = shards.find(shard);
            if (it == shards.end()) {
                const fs::path sp = folder / rel;
                FS_CHECK(present(sp),
                         "shard '{}' listed in '{}' (for tensor '{}') is missing from the folder",
                         shard, index_path.string(), tensor);
                src->files_.push_back(std::make_unique<SafetensorsFile>(sp));
                it = shards.emplace(shard, src->files_.back().get()).first;
            }
            const auto& ts = it->second->tensors();
            auto t = ts.find(tensor);
            FS_CHECK(t != ts.end(),
                     "tensor '{}' is listed in '{}' as stored in shard '{}', but that shard does "
                     "not contain it",
                     tensor, index_path.string(), shard);
            src->index_[tensor] = &t->second;
        }
        FS_CHECK(!src->index_.empty(), "'{}': weight_map is empty", index_path.string());
        return src;
    }
    if (present(single_path)) {
        auto src = std::make_unique<SafetensorsFolder>(single_path.string());
        src->files_.push_back(std::make_unique<SafetensorsFile>(single_path));
        for (const auto& [name, t] : src->files_.back()->tensors()) src->index_[name] = &t;
        return src;
    }
    std::string hint;
    if (fs::exists(folder / "pytorch_model.bin", ec) ||
        fs::exists(folder / "pytorch_model.bin.index.json", ec))
        hint =
            " (found a PyTorch .bin checkpoint, which is not supported: convert it to safetensors, "
            "e.g. load it with transformers and save_pretrained(..., safe_serialization=True))";
    fail("no model.safetensors or model.safetensors.index.json in '{}'{}", folder.string(), hint);
}

}  // namespace farsight

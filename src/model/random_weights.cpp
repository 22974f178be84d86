#include "model/random_weights.h"

#include <cmath>
#include <cstring>
#include <map>
#include <mutex>

#include "core/error.h"
#include "core/random.h"
#include "core/thread_pool.h"
#include "model/model.h"

namespace farsight {

namespace {


uint64_t hash_name(const std::string& s, uint64_t seed) {
    uint64_t h = 1469598103934665603ull ^ seed;
    for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
    return h;
}

class RandomWeights final : public WeightSource {
public:
    RandomWeights(const ModelConfig& cfg, DType dtype, uint64_t seed) : dtype_(dtype), seed_(seed) {
        FS_CHECK(dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16,
                 "random weights: dtype must be f32, f16 or bf16");
        for (const TensorSpec& s : expected_tensors(cfg)) specs_[s.name] = s;
    }

    const TensorInfo* find(const std::string& name) const override {
        std::lock_guard<std::mutex> lk(mu_);
        auto it = made_.find(name);
        if (it != made_.end()) return &it->second.info;
        auto sp = specs_.find(name);
        if (sp == specs_.end()) return nullptr;
        Entry& e = made_[name];
        generate(sp->second, e);
        return &e.info;
    }
    std::string describe() const override {
        return fmt::format("random weights (seed {}, {})", seed_, dtype_name(dtype_));
    }
    std::vector<std::string> names() const override {
        std::vector<std::string> v;
        for (const auto& [n, s] : specs_) v.push_back(n);
        return v;
    }

private:
    struct Entry {
        TensorInfo info;
        std::shared_ptr<void> storage;
    };

    void generate(const TensorSpec& s, Entry& e) const {
        int64_t n = 1;
        for (auto d : s.shape) n *= d;
        const size_t es = dtype_size(dtype_);
        e.storage = std::shared_ptr<void>(std::aligned_alloc(64, (static_cast<size_t>(n) * es + 63) / 64 * 64),
                                          std::free);
        FS_CHECK(e.storage != nullptr, "out of memory generating random tensor {}", s.name);
        const bool is_norm = s.name.find("norm") != std::string::npos;
        const bool is_bias = s.name.size() > 5 && s.name.compare(s.name.size() - 5, 5, ".bias") == 0;
        const bool is_embed = s.name.find("embed_tokens") != std::string::npos;
        // Uniform with std 1/sqrt(fan_in) for matrices, std 1 for embeddings; norms near 1.
        const double fan_in = s.shape.size() == 2 ? static_cast<double>(s.shape[1]) : 1.0;
        const float amp = is_embed ? std::sqrt(3.0f) : static_cast<float>(std::sqrt(3.0 / fan_in));
        const uint64_t base = hash_name(s.name, seed_);
        constexpr int64_t kChunk = 1 << 16;
        const int64_t chunks = (n + kChunk - 1) / kChunk;
        char* out = static_cast<char*>(e.storage.get());
        ThreadPool::global().parallel_for(chunks, [&](int64_t c0, int64_t c1, int) {
            float buf[1024];
            for (int64_t c = c0; c < c1; ++c) {
                uint64_t st = base + static_cast<uint64_t>(c) * 0x632be59bd9b4e019ull;
                const int64_t b = c * kChunk, end = std::min(n, b + kChunk);
                for (int64_t i = b; i < end; i += 1024) {
                    const int64_t m = std::min<int64_t>(1024, end - i);
                    for (int64_t j = 0; j < m; ++j) {
                        const float u = static_cast<float>(splitmix64(st) >> 40) * (1.0f / 16777216.0f);
                        const float r = 2.0f * u - 1.0f;  // [-1, 1)
                        buf[j] = is_norm ? 1.0f + 0.1f * r : (is_bias ? 0.1f * r : amp * r);
                    }
                    convert_from_f32(buf, dtype_, out + static_cast<size_t>(i) * es, static_cast<size_t>(m));
                }
            }
        });
        e.info.name = s.name;
        e.info.dtype = dtype_;
        e.info.shape = s.shape;
        e.info.data = e.storage.get();
        e.info.nbytes = static_cast<size_t>(n) * es;
        e.info.file = describe();
    }

    DType dtype_;
    uint64_t seed_;
    std::map<std::string, TensorSpec> specs_;
    mutable std::mutex mu_;
    mutable std::map<std::string, Entry> made_;
};

}  // namespace

std::unique_ptr<WeightSource> make_random_weights(const ModelConfig& cfg, DType dtype, uint64_t seed) {
    return std::make_unique<RandomWeights>(cfg, dtype, seed);
}

}  // namespace farsight

#pragma once
// A Session is a loaded model on a backend with its paged KV cache: the unit the CLI, the
// server and the tests work with. forward() runs one step for several sequences of different
// lengths (each appending tokens to its own block table).
#include <deque>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "io/config.h"
#include "kv/block_pool.h"
#include "model/model.h"

namespace farsight {

struct LoadOptions {
    std::string model;         // a model folder or an "org/name" in the Hugging Face cache
    std::string dummy;         // random weights: a preset name or a config.json path
    std::string config;        // a config.json to use instead of the model folder's (e.g. rope scaling)
    std::string device = "cpu";
    std::string dtype = "auto";  // weights: auto (CPU: as stored; GPU: bf16), f32, f16, bf16
    int threads = 0;             // CPU threads (0 = all cores)
    int64_t max_model_len = 0;   // longest sequence (0 = config max_position_embeddings)
    int64_t kv_tokens = 0;       // KV cache capacity in tokens (0 = sized automatically)
    int64_t block_size = 16;     // tokens per KV block
    double gpu_memory_fraction = 0.90;
    uint64_t seed = 0;           // random weights seed
    bool progress = false;       // print a load progress bar on stderr
};

// One sequence's part of a forward step.
struct SeqStep {
    BlockTable* table = nullptr;  // the sequence's KV blocks; tokens are appended after its cache
    std::span<const int32_t> tokens;
    bool all_logits = false;  // logits for every token (scoring) or only the last (generation)
};

class Session {
public:
    explicit Session(const LoadOptions& opts);
    ~Session();

    const ModelConfig& config() const { return model_->config(); }
    Model& model() { return *model_; }
    Backend& backend() { return *backend_; }
    BlockPool& pool() { return pool_; }
    const std::filesystem::path& model_dir() const { return model_dir_; }  // empty for --dummy
    int64_t max_model_len() const { return max_model_len_; }
    int64_t kv_capacity_tokens() const { return pool_.num_blocks() * block_size_; }
    int64_t block_size() const { return block_size_; }
    double load_seconds() const { return load_seconds_; }

    // Runs one forward step; returns logits [rows, vocab] where rows are, per step in order,
    // all of its tokens (all_logits) or its last token.
    std::vector<float> forward(std::span<SeqStep> steps);

    // Runs one step and samples one token per sequence where the logits are
    // (Backend::sample_rows; backend/sampling.h): params[i] for steps[i], which must not ask for
    // all_logits. Reads back only the ids (and the chosen tokens' logprobs when `logprobs` is
    // not null); no [rows, vocab] vector is made.
    std::vector<int32_t> forward_sample(std::span<SeqStep> steps, std::span<const RowSampling> params,
                                        std::vector<float>* logprobs = nullptr);
    // Whether generation should use forward_sample where the sampling parameters allow: the
    // backend prefers it (CUDA) and FARSIGHT_DEVICE_SAMPLING is not 0.
    bool device_sampling() const;

    // Pipelined decode: forward_sample in two halves, so that the next step is queued before
    // this one's ids are read back and the device does not wait for the host between steps.
    // forward_sample_enqueue queues a step and its sampling. With tokens_from_previous every
    // sequence's one token is the id the previous enqueued step drew for the same row (the same
    // sequences in the same order, one placeholder token each; on the device where the backend
    // can, else from the host). At most two outstanding; forward_sample_collect returns the
    // oldest one's ids (and logprobs when enqueued with want_logprobs). forward_sample and
    // forward need none outstanding.
    void forward_sample_enqueue(std::span<SeqStep> steps, std::span<const RowSampling> params,
                                bool tokens_from_previous = false, bool want_logprobs = false);
    std::vector<int32_t> forward_sample_collect(std::vector<float>* logprobs = nullptr);
    size_t outstanding() const { return outstanding_.size(); }
    // device_sampling() and FARSIGHT_PIPELINE is not 0: generation pipelines its decode steps.
    bool pipelined_decode() const;

    // Convenience: logits for every position of one sequence, in a fresh cache (freed after).
    std::vector<float> score(std::span<const int32_t> ids);

private:
    void build_meta(std::span<SeqStep> steps);
    std::unique_ptr<Backend> backend_;
    std::shared_ptr<const WeightSource> weights_;
    std::unique_ptr<Model> model_;
    std::filesystem::path model_dir_;
    BlockPool pool_;
    int64_t block_size_ = 16;
    int64_t max_model_len_ = 0;
    double load_seconds_ = 0;
    std::optional<RopeFreqs> static_rope_;
    BatchMeta meta_;
    struct Outstanding {
        size_t rows = 0;
        bool logprobs = false;
        bool ready = false;  // results already on the host (backends without sample_feed)
        std::vector<int32_t> ids;
        std::vector<float> lps;
    };
    std::deque<Outstanding> outstanding_;
};

}  // namespace farsight

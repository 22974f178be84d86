#pragma once
// A loaded Llama-family decoder on a backend. The forward pass is written once, from the shared
// layer helpers below, for every architecture in model/arch.h.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "io/config.h"
#include "io/safetensors.h"

namespace farsight {

struct TensorSpec {
    std::string name;
    std::vector<int64_t> shape;
    bool matrix = true;  // false: norm weight or bias (kept in the activation dtype)
};
// The tensors a config implies (HF names and shapes), in load order.
std::vector<TensorSpec> expected_tensors(const ModelConfig& c);
int64_t count_parameters(const ModelConfig& c);
// Checks that every expected tensor is present with the right shape and a loadable dtype
// (throws Error naming the tensor and file); returns their total size in bytes.
size_t validate_weights(const ModelConfig& c, const WeightSource& w);

using ProgressFn = std::function<void(size_t done_bytes, size_t total_bytes)>;

class Model {
public:
    // Validates every tensor (presence, shape, dtype) against the config, then loads them.
    Model(ModelConfig cfg, std::shared_ptr<const WeightSource> weights, Backend& backend,
          std::optional<DType> weight_dtype = std::nullopt, const ProgressFn& progress = {});

    const ModelConfig& config() const { return cfg_; }
    Backend& backend() { return be_; }
    DType weight_dtype() const { return wdtype_; }
    size_t weight_bytes() const { return weight_bytes_; }
    // Bytes one decode step must read per sequence at context ctx: every weight matrix (the
    // embedding table only as lm_head when tied) plus the K and V of ctx cached tokens.
    size_t decode_bytes(int64_t ctx) const;

    // One forward step over meta (the KV cache must be initialised). Writes the logits of
    // meta.logit_rows to `logits` ([rows, vocab] float32, host).
    void forward(const BatchMeta& meta, float* logits);
    // The same step, leaving the logits on the backend: returns f32 [logit rows, vocab], a view
    // of the model's workspace valid until the next step (for Backend::sample_rows).
    Tensor forward_device(const BatchMeta& meta);

private:
    struct Layer {
        Tensor ln1, ln2;
        Tensor q, k, v, qkv;      // qkv when the backend fuses, else q/k/v
        Tensor bq, bk, bv, bqkv;  // biases (empty when absent)
        Tensor o, bo;
        Tensor gate, up, gate_up, bgate, bup, bgate_up;
        Tensor down, bdown;
    };
    Tensor load(const std::string& name, bool matrix, int64_t rows, int64_t cols);
    Tensor load_opt(const std::string& name, bool present, int64_t rows, int64_t cols);
    void ensure_workspace(int64_t tokens, int64_t logit_rows);

    ModelConfig cfg_;
    std::shared_ptr<const WeightSource> weights_;
    Backend& be_;
    DType wdtype_;
    bool fused_;
    size_t weight_bytes_ = 0;
    ProgressFn progress_;
    size_t progress_total_ = 0;
    Tensor embed_, norm_, lm_head_;
    std::vector<Layer> layers_;
    std::vector<AttnParams> attn_;
    // workspace
    int64_t ws_tokens_ = 0, ws_rows_ = 0;
    uint64_t ws_id_ = 0;  // changes whenever the workspace moves (Backend::begin_step)
    Tensor x_, h_, qkv_, attn_out_, o_, gu_, act_, down_, last_, logits_;
};

}  // namespace farsight

#pragma once
// The backend interface: everything the model code needs from a device. The model code
// (src/model/) only calls these; the CPU backend (src/backend/cpu/) and the CUDA backend
// (src/backend/cuda/) implement them. Tensors are 2-D, row-major, contiguous
// ([rows, cols]); activations are [tokens, features], weights are [out_features, in_features].
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backend/sampling.h"
#include "core/dtype.h"

namespace farsight {

struct TensorInfo;

enum class DeviceKind { CPU, CUDA };

struct Tensor {
    std::shared_ptr<void> owner;  // keeps the storage alive (null when borrowed, e.g. an mmap)
    void* data = nullptr;         // device pointer
    DType dtype = DType::F32;
    int64_t rows = 0, cols = 0;

    int64_t numel() const { return rows * cols; }
    size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_bits(dtype) / 8; }
    size_t row_bytes() const { return static_cast<size_t>(cols) * dtype_bits(dtype) / 8; }
    // Rows [r0, r0+n) as a view sharing the storage.
    Tensor rows_view(int64_t r0, int64_t n) const {
        Tensor t = *this;
        t.data = static_cast<char*>(data) + r0 * row_bytes();
        t.rows = n;
        return t;
    }
    bool empty() const { return data == nullptr; }
};

// Geometry of the paged KV cache: per layer, K and V pools of
// [num_blocks, block_size, num_kv_heads, head_dim].
struct KVLayout {
    int64_t num_layers = 0;
    int64_t num_blocks = 0;
    int64_t block_size = 16;
    int64_t num_kv_heads = 0;
    int64_t head_dim = 0;
    DType dtype = DType::F32;
    size_t bytes_per_block() const {  // K+V, all layers
        return static_cast<size_t>(2 * num_layers * block_size * num_kv_heads * head_dim) *
               dtype_size(dtype);
    }
};

// Rotary frequencies for one group of sequences (dynamic NTK / longrope make them depend on
// the sequence length, so a batch may carry several variants).
struct RopeFreqs {
    std::vector<float> inv_freq;  // [rotary_dim / 2]
    float attention_scaling = 1.0f;  // multiplies cos and sin (yarn, longrope)
};

// One sequence within a forward batch.
struct SeqSlice {
    int32_t q_start = 0;       // first row of this sequence's tokens in the batch
    int32_t q_len = 0;         // tokens computed in this step
    int32_t n_past = 0;        // tokens already in the KV cache before this step
    int32_t rope_variant = 0;  // index into BatchMeta::rope
    int32_t block_table_offset = 0;  // into BatchMeta::block_tables
    int32_t n_blocks = 0;
    int32_t context_len() const { return n_past + q_len; }
};

// Everything a forward step needs besides the weights; built on the host by the model runner,
// handed to the backend once per step (the CUDA backend uploads it).
struct BatchMeta {
    std::vector<int32_t> tokens;        // [T]
    std::vector<int32_t> positions;     // [T]
    std::vector<int32_t> slot_mapping;  // [T]: block * block_size + offset in the KV pools
    std::vector<SeqSlice> seqs;
    std::vector<int32_t> block_tables;  // concatenated per-sequence block tables
    std::vector<int32_t> logit_rows;    // rows of the batch whose logits are wanted
    std::vector<RopeFreqs> rope;
    int32_t max_context_len = 0;
    // Pipelined decode (Backend::sample_feed()): token t is the id the last sample_rows_enqueue
    // drew for its row t (still on the device); `tokens` holds placeholders.
    bool tokens_from_last_sample = false;
    int64_t num_tokens() const { return static_cast<int64_t>(tokens.size()); }
};

// Attention geometry of one layer.
struct AttnParams {
    int64_t num_heads = 0, num_kv_heads = 0, head_dim = 0, rotary_dim = 0;
    float scale = 1.0f;  // softmax scale (1/sqrt(head_dim))
    int64_t window = 0;  // sliding window (0 = full): query at p sees keys k with p - k < window
};

class Backend {
public:
    virtual ~Backend() = default;
    virtual std::string name() const = 0;
    virtual DeviceKind kind() const = 0;
    virtual std::string device_description() const = 0;
    // dtype of activations this backend computes in (f32 on CPU; bf16/f16 on CUDA).
    virtual DType activation_dtype() const = 0;

    // dtype of the residual stream (embedding output, rmsnorm input, add_rmsnorm residual);
    // every other activation is activation_dtype().
    virtual DType residual_dtype() const { return activation_dtype(); }
    // dtype the backend keeps matrices in when the user does not choose (CPU: as stored).
    virtual DType default_weight_dtype(DType stored) const = 0;

    // ---- memory ----
    virtual Tensor alloc(DType dtype, int64_t rows, int64_t cols) = 0;
    // A weight as [rows, cols] in `dtype` (converting if needed). The CPU backend may borrow
    // src.data without copying when no conversion is needed; the caller keeps src alive.
    virtual Tensor load_weight(const TensorInfo& src, DType dtype, int64_t rows, int64_t cols) = 0;
    // Several row-blocks concatenated into one weight (fused qkv, gate_up); all of one
    // column count. A missing (nullptr) part is filled with zeros (absent biases).
    virtual Tensor load_concat(const std::vector<const TensorInfo*>& parts,
                               const std::vector<int64_t>& part_rows, DType dtype,
                               int64_t cols) = 0;
    virtual void to_host_f32(const Tensor& t, float* dst) = 0;
    // Whether the model should fuse q/k/v and gate/up weights into one matrix each (a copy at
    // load; pays on GPUs). The CPU backend keeps the memory-mapped tensors as they are.
    virtual bool fuse_weights() const = 0;
    virtual size_t free_memory() const = 0;

    // ---- KV cache ----
    virtual void init_kv(const KVLayout& layout) = 0;
    virtual const KVLayout& kv_layout() const = 0;

    // ---- per-forward metadata ----
    virtual void begin_forward(const BatchMeta& meta) = 0;

    // ---- whole steps (CUDA graphs; optional: the CPU backend keeps these defaults) ----
    // The model runs one step as:
    //   rows = step_rows(meta);                       // size the op tensors to `rows`
    //   if (!begin_step(meta, id)) { ops over `rows` rows; lm_head over the logit rows,
    //                                 padded by rows - meta.num_tokens() }
    //   end_step();                                   // then read the first logit rows back
    // step_rows: meta.num_tokens(), or more when the backend pads a graph-eligible step (every
    // sequence has q_len == 1 and one logit row) up to a recorded batch size. Padding rows are
    // dummy one-token sequences writing a reserved scratch KV block; their logit rows follow
    // the real ones and are never read.
    virtual int64_t step_rows(const BatchMeta& meta) const { return meta.num_tokens(); }
    // begin_forward(meta) (padded as step_rows says), plus recording: `tensors_id` identifies
    // the caller's op tensors (it must change whenever any of them moves; weights never move).
    // Returns true when the ops of this step are already recorded for these rows and tensors:
    // the caller skips them. Returns false when the caller must issue the ops (the backend may
    // be recording them). Calling begin_forward directly never pads nor records.
    virtual bool begin_step(const BatchMeta& meta, uint64_t tensors_id) {
        (void)tensors_id;
        begin_forward(meta);
        return false;
    }
    // After the step's last op: finishes a recording and runs (replays) it.
    virtual void end_step() {}

    // ---- ops (all read the current BatchMeta where they need it) ----
    // out[t] = table[meta.tokens[t]]
    virtual void embedding(const Tensor& table, Tensor& out) = 0;
    // out = rmsnorm(x) * w
    virtual void rmsnorm(const Tensor& x, const Tensor& w, float eps, Tensor& out) = 0;
    // residual += x; out = rmsnorm(residual) * w
    virtual void add_rmsnorm(Tensor& residual, const Tensor& x, const Tensor& w, float eps,
                             Tensor& out) = 0;
    // out[:, col0 : col0 + w.rows] = x @ w^T (+ bias); x [T, in], w [out, in], bias [1, out].
    // out may be wider than w.rows (writing one part of a fused qkv / gate_up activation).
    virtual void linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& out,
                        int64_t col0 = 0) = 0;
    // qkv [T, (H + 2*KVH) * D]: rotate the q and k heads in place (rotate_half convention) at
    // meta.positions with meta.rope[seq.rope_variant].
    virtual void rope(Tensor& qkv, const AttnParams& p) = 0;
    // Store k, v of qkv into layer `layer`'s cache at meta.slot_mapping, then causal attention
    // of each sequence's queries over its cached keys/values -> out [T, H * D].
    virtual void attention(int64_t layer, const Tensor& qkv, const AttnParams& p, Tensor& out) = 0;
    // rope(qkv, p) then attention(layer, qkv, p, out): what the model calls per layer. A backend
    // may fuse the rotation with the KV-cache store or with the attention itself (the CUDA
    // backend does both); afterwards qkv's q and k columns are unspecified (rotated or not).
    virtual void rope_attention(int64_t layer, Tensor& qkv, const AttnParams& p, Tensor& out);
    // gate_up [T, 2I] -> out [T, I] = silu(gate) * up
    virtual void silu_mul(const Tensor& gate_up, Tensor& out) = 0;
    // linear(x, W, bias, gate_up) then silu_mul(gate_up, out) for a fused [2I, in] gate_up
    // weight: what the model calls. A backend may skip gate_up (the CUDA backend does for one
    // row); its contents are unspecified afterwards.
    virtual void linear_silu(const Tensor& x, const Tensor& W, const Tensor* bias,
                             Tensor& gate_up, Tensor& out);
    // ---- fused one-row decode ops (optional; the CPU backend has none) ----
    // Whether a step of `rows` rows whose matrices have at most `max_k` columns may run each
    // layer as norm_linear, rope_attention, linear_residual, norm_linear,
    // silu_linear_residual (the same arithmetic as the separate ops, fewer kernels).
    virtual bool fused_decode(int64_t rows, int64_t max_k) const {
        (void)rows;
        (void)max_k;
        return false;
    }
    // out = (rmsnorm(residual) * w) @ W^T (+ bias)
    virtual void norm_linear(const Tensor& residual, const Tensor& w, float eps, const Tensor& W,
                             const Tensor* bias, Tensor& out);
    // residual += x @ W^T (+ bias), the product rounded to the activation dtype first
    virtual void linear_residual(const Tensor& x, const Tensor& W, const Tensor* bias,
                                 Tensor& residual);
    // residual += (silu(gate) * up) @ W^T (+ bias) for gate_up [T, 2I]
    virtual void silu_linear_residual(const Tensor& gate_up, const Tensor& W, const Tensor* bias,
                                      Tensor& residual);
    // out[i] = x[rows[i]] for rows = meta.logit_rows
    virtual void gather_logit_rows(const Tensor& x, Tensor& out) = 0;
    // ---- sampling where the logits are (backend/sampling.h gives the exact algorithm) ----
    // One token per row of `logits` (f32 [rows, vocab], e.g. Model::forward_device's result):
    // ids[r] (and logprobs[r], the chosen token's log-softmax, when not null) for params[r];
    // params, ids and logprobs have logits.rows entries.
    // The default reads the rows back and runs sample_rows_reference (the CPU backend's path);
    // the CUDA backend samples on the device and reads back only ids and logprobs.
    virtual void sample_rows(const Tensor& logits, const RowSampling* params, int32_t* ids,
                             float* logprobs);
    // Whether callers should prefer sample_rows over reading the logits back (CUDA: yes; the
    // CPU backend keeps its callers on the logits path).
    virtual bool prefers_device_sampling() const { return false; }
    // ---- pipelined sampling (decode without a host round trip between steps) ----
    // Whether a step may take its tokens from the last enqueued sampling on the device
    // (BatchMeta::tokens_from_last_sample), so that it can be queued before that sampling's ids
    // are read back (CUDA: yes). Such a backend implements the two calls below: sample_rows
    // without waiting, at most two outstanding, collected in order by sample_rows_collect (ids
    // and, when asked at enqueue, logprobs: one per row). The defaults refuse.
    virtual bool sample_feed() const { return false; }
    virtual void sample_rows_enqueue(const Tensor& logits, const RowSampling* params,
                                     bool want_logprobs);
    virtual void sample_rows_collect(int32_t* ids, float* logprobs);
    virtual void synchronize() = 0;
};

std::unique_ptr<Backend> make_cpu_backend(int n_threads = 0);
// Throws Error when built without CUDA or no device is present.
std::unique_ptr<Backend> make_cuda_backend(int device = 0);
// Same, with the activation dtype chosen: DType::BF16 (default) or DType::F16.
std::unique_ptr<Backend> make_cuda_backend_with(int device, DType activation_dtype);
bool cuda_available();

}  // namespace farsight

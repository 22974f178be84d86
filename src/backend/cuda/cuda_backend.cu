// The CUDA backend: device memory, weight upload, per-forward metadata, op dispatch, cuBLASLt.
#include "backend/cuda/cuda_backend.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/kernels.cuh"
#include "io/safetensors.h"

namespace farsight {
namespace cuda {
namespace {

cudaDataType_t cuda_type(DType dt) {
    switch (dt) {
        case DType::BF16:
            return CUDA_R_16BF;
        case DType::F16:
            return CUDA_R_16F;
        case DType::F32:
            return CUDA_R_32F;
        default:
            fail("CUDA backend: no cuBLAS type for dtype {}", dtype_name(dt));
    }
}

unsigned alignment_of(const void* p) {
    auto a = reinterpret_cast<uintptr_t>(p);
    unsigned al = 256;
    while (al > 1 && a % al != 0) al /= 2;
    return al;
}

// A stream-ordered caching allocator: freed blocks go back to per-size free lists and are
// handed out again, so that steady-state forward passes never call cudaMalloc. Blocks are
// only reused after the backend's stream has consumed their previous contents (frees happen
// on the host while work may still be queued; all our work is on one stream, so reuse by a
// later launch on that stream is ordered after it).
class CachingAllocator {
  public:
    ~CachingAllocator() {
        for (auto& [size, list] : free_)
            for (void* p : list) cudaFree(p);
    }
    void* get(size_t bytes, size_t* rounded) {
        size_t sz = round(bytes);
        *rounded = sz;
        {
            std::lock_guard<std::mutex> lk(mu_);
            auto it = free_.find(sz);
            if (it != free_.end() && !it->second.empty()) {
                void* p = it->second.back();
                it->second.pop_back();
                return p;
            }
        }
        void* p = nullptr;
        cudaError_t e = cudaMalloc(&p, sz);
        if (e != cudaSuccess) {
            cudaGetLastError();
            release_cached();
            FS_CUDA(cudaMalloc(&p, sz));
        }
        return p;
    }
    void put(void* p, size_t rounded) {
        std::lock_guard<std::mutex> lk(mu_);
        free_[rounded].push_back(p);
    }
    void release_cached() {
        std::lock_guard<std::mutex> lk(mu_);
        for (auto& [size, list] : free_)
            for (void* p : list) cudaFree(p);
        free_.clear();
    }

  private:
    static size_t round(size_t b) {
        if (b <= 4096) return 4096;
        // power-of-two classes with 4 steps each (<= 19% waste)
        size_t p = 4096;
        while (p * 2 < b) p *= 2;
        size_t step = p / 4;
        return ((b + step - 1) / step) * step;
    }
    std::mutex mu_;
    std::map<size_t, std::vector<void*>> free_;
};

struct LtPlan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
    bool use_gemv = false;
    LtPlan() = default;
    LtPlan(const LtPlan&) = delete;
    LtPlan& operator=(const LtPlan&) = delete;
    ~LtPlan() {
        if (c) cublasLtMatrixLayoutDestroy(c);
        if (b) cublasLtMatrixLayoutDestroy(b);
        if (a) cublasLtMatrixLayoutDestroy(a);
        if (op) cublasLtMatmulDescDestroy(op);
    }
};

constexpr size_t kLtWorkspace = 32u << 20;
constexpr size_t kStageBytes = 16u << 20;  // per pinned staging buffer (two of them)

// out[T,N] = x[T,K] @ W[N,K]^T (+bias) through cuBLASLt. Column-major view: C(N x T) =
// W^T(N x K, from K x N col-major) * x(K x T).
std::unique_ptr<LtPlan> make_lt_plan(cublasLtHandle_t h, DType dt, int64_t T, int64_t N, int64_t K,
                                     bool bias, unsigned align_a, unsigned align_b,
                                     unsigned align_c, size_t workspace, DType out_dt,
                                     std::vector<cublasLtMatmulAlgo_t>* candidates = nullptr,
                                     int max_candidates = 1) {
    auto plan = std::make_unique<LtPlan>();
    cudaDataType_t ct = cuda_type(dt);
    const cudaDataType_t ot = cuda_type(out_dt);  // f32 output for logits
    FS_CUBLAS(cublasLtMatmulDescCreate(&plan->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    FS_CUBLAS(
        cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    FS_CUBLAS(
        cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    if (bias) {
        cublasLtEpilogue_t ep = CUBLASLT_EPILOGUE_BIAS;
        FS_CUBLAS(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep,
                                                 sizeof(ep)));
        FS_CUBLAS(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &ct,
                                                 sizeof(ct)));
    }
    FS_CUBLAS(cublasLtMatrixLayoutCreate(&plan->a, ct, K, N, K));
    FS_CUBLAS(cublasLtMatrixLayoutCreate(&plan->b, ct, K, T, K));
    FS_CUBLAS(cublasLtMatrixLayoutCreate(&plan->c, ot, N, T, N));
    cublasLtMatmulPreference_t pref = nullptr;
    FS_CUBLAS(cublasLtMatmulPreferenceCreate(&pref));
    std::unique_ptr<std::remove_pointer_t<cublasLtMatmulPreference_t>,
                    decltype(&cublasLtMatmulPreferenceDestroy)>
        pref_guard(pref, &cublasLtMatmulPreferenceDestroy);
    FS_CUBLAS(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                   &workspace, sizeof(workspace)));
    uint32_t al[3] = {align_a, align_b, align_c};
    FS_CUBLAS(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                                   &al[0], sizeof(uint32_t)));
    FS_CUBLAS(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                                   &al[1], sizeof(uint32_t)));
    FS_CUBLAS(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                                   &al[2], sizeof(uint32_t)));
    FS_CUBLAS(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                                   &al[2], sizeof(uint32_t)));
    std::vector<cublasLtMatmulHeuristicResult_t> res(
        static_cast<size_t>(std::max(max_candidates, 1)));
    int n = 0;
    FS_CUBLAS(cublasLtMatmulAlgoGetHeuristic(h, plan->op, plan->a, plan->b, plan->c, plan->c, pref,
                                             static_cast<int>(res.size()), res.data(), &n));
    FS_CHECK(n > 0, "cuBLASLt found no algorithm for a {}x{}x{} {} matmul", T, N, K,
             dtype_name(dt));
    plan->algo = res[0].algo;
    if (candidates)
        for (int i = 0; i < n; ++i)
            if (res[static_cast<size_t>(i)].state == CUBLAS_STATUS_SUCCESS)
                candidates->push_back(res[static_cast<size_t>(i)].algo);
    return plan;
}

void lt_run(cublasLtHandle_t h, LtPlan& plan, const void* x, const void* w, const void* bias,
            void* out, void* ws, size_t ws_bytes, cudaStream_t st) {
    if (bias)
        FS_CUBLAS(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                                 sizeof(bias)));
    const float alpha = 1.0f, beta = 0.0f;
    FS_CUBLAS(cublasLtMatmul(h, plan.op, &alpha, w, plan.a, x, plan.b, &beta, out, plan.c, out,
                             plan.c, &plan.algo, ws, ws_bytes, st));
}

struct DevSeqCheck {
    static_assert(sizeof(SeqSlice) == 6 * sizeof(int32_t), "SeqSlice layout changed");
};

// FARSIGHT_SKIP_OPS=norm,rope,kv,attn,silu,linear (profiling only: see docs/cuda_perf.md).
enum : unsigned {
    kSkipNorm = 1,
    kSkipRope = 2,
    kSkipKv = 4,
    kSkipAttn = 8,
    kSkipSilu = 16,
    kSkipLinear = 32
};
unsigned parse_skip_ops(const char* env) {
    if (!env) return 0;
    unsigned m = 0;
    std::string s(env), tok;
    s += ',';
    for (char c : s) {
        if (c != ',') {
            tok += c;
            continue;
        }
        if (tok == "norm")
            m |= kSkipNorm;
        else if (tok == "rope")
            m |= kSkipRope;
        else if (tok == "kv")
            m |= kSkipKv;
        else if (tok == "attn")
            m |= kSkipAttn;
        else if (tok == "silu")
            m |= kSkipSilu;
        else if (tok == "linear")
            m |= kSkipLinear;
        else if (!tok.empty())
            fail("FARSIGHT_SKIP_OPS: unknown op '{}' (norm, rope, kv, attn, silu, linear)", tok);
        tok.clear();
    }
    if (m)
        std::fprintf(stderr, "FARSIGHT_SKIP_OPS=%s: skipping ops, results are wrong (profiling)\n",
                     env);
    return m;
}

class CudaBackend final : public Backend {
  public:
    CudaBackend(int device, DType act) : device_(device), act_(act) {
        FS_CHECK(act == DType::BF16 || act == DType::F16,
                 "CUDA backend: activation dtype must be bf16 or f16, got {}", dtype_name(act));
        int count = 0;
        cudaError_t e = cudaGetDeviceCount(&count);
        if (e != cudaSuccess || count == 0)
            fail("no CUDA device available ({}); use the CPU backend",
                 e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        FS_CHECK(device >= 0 && device < count, "CUDA device {} does not exist ({} present)",
                 device, count);
        FS_CUDA(cudaSetDevice(device));
        FS_CUDA(cudaGetDeviceProperties(&props_, device));
        stream_ = std::make_unique<Stream>();
        lt_ = std::make_unique<LtHandle>();
        alloc_ = std::make_shared<CachingAllocator>();
        lt_ws_ = DeviceBuffer(kLtWorkspace);
        for (auto& s : stage_) s = PinnedBuffer(kStageBytes);
        for (auto& s : stage_dev_) s = DeviceBuffer(kStageBytes);
        for (auto& ev : stage_ev_) ev = std::make_unique<Event>(cudaEventDisableTiming);
        meta_ev_ = std::make_unique<Event>(cudaEventDisableTiming);
        const char* g = std::getenv("FARSIGHT_GEMV");
        if (g) gemv_mode_ = std::atoi(g);  // 0: never, 1: always when supported, 2: auto
        const char* fu = std::getenv("FARSIGHT_FUSED");
        fused_enabled_ = fu && fu[0] == '1';
        const char* tn = std::getenv("FARSIGHT_LINEAR_TUNE");
        tune_enabled_ = !(tn && tn[0] == '0');
        const char* cg = std::getenv("FARSIGHT_CUDA_GRAPHS");
        graphs_enabled_ = !(cg && cg[0] == '0');
        const char* rd = std::getenv("FARSIGHT_RESIDUAL");
        residual_act_ = rd && std::string(rd) == "act";
        skip_ops_ = parse_skip_ops(std::getenv("FARSIGHT_SKIP_OPS"));
        const char* gg = std::getenv("FARSIGHT_GATED_GEMV");
        gated_gemv_ = !(gg && gg[0] == '0');
        const char* dr = std::getenv("FARSIGHT_DECODE_ROPE");
        rope_in_decode_ = !(dr && dr[0] == '0');
        gmeta_ev_ = std::make_unique<Event>(cudaEventDisableTiming);
        for (auto& ev : samp_ev_) ev = std::make_unique<Event>(cudaEventDisableTiming);
    }
    ~CudaBackend() override {
        if (capturing_) {
            cudaGraph_t g = nullptr;
            cudaStreamEndCapture(stream_->get(), &g);
            if (g) cudaGraphDestroy(g);
        }
        if (stream_) cudaStreamSynchronize(stream_->get());
        graphs_.clear();
    }

    std::string name() const override { return "cuda"; }
    DeviceKind kind() const override { return DeviceKind::CUDA; }
    std::string device_description() const override {
        return fmt::format("{} (sm_{}{}, {} SMs, {:.1f} GiB), activations {}", props_.name,
                           props_.major, props_.minor, props_.multiProcessorCount,
                           static_cast<double>(props_.totalGlobalMem) / (1u << 30),
                           dtype_name(act_));
    }
    DType activation_dtype() const override { return act_; }
    DType default_weight_dtype(DType) const override { return act_; }
    // f32 residual stream: one rounding less per layer than transformers' bf16 residual
    // (FARSIGHT_RESIDUAL=act restores transformers' exact rounding).
    DType residual_dtype() const override { return residual_act_ ? act_ : DType::F32; }
    bool fuse_weights() const override { return true; }

    Tensor alloc(DType dtype, int64_t rows, int64_t cols) override {
        FS_CHECK(rows >= 0 && cols >= 0, "alloc: bad shape [{}, {}]", rows, cols);
        Tensor t;
        t.dtype = dtype;
        t.rows = rows;
        t.cols = cols;
        size_t bytes = std::max<size_t>(t.nbytes(), 1);
        size_t rounded = 0;
        void* p = alloc_->get(bytes, &rounded);
        auto a = alloc_;
        t.owner = std::shared_ptr<void>(p, [a, rounded](void* q) { a->put(q, rounded); });
        t.data = p;
        return t;
    }

    Tensor load_weight(const TensorInfo& src, DType dtype, int64_t rows, int64_t cols) override {
        FS_CHECK(src.numel() == rows * cols, "tensor '{}' in {} has {} elements, expected [{}, {}]",
                 src.name, src.file, src.numel(), rows, cols);
        Tensor t = alloc_weight(dtype, rows, cols);
        upload(src, dtype, t.data);
        return t;
    }

    Tensor load_concat(const std::vector<const TensorInfo*>& parts,
                       const std::vector<int64_t>& part_rows, DType dtype, int64_t cols) override {
        FS_CHECK(parts.size() == part_rows.size(), "load_concat: {} parts but {} row counts",
                 parts.size(), part_rows.size());
        int64_t rows = 0;
        for (auto r : part_rows) rows += r;
        Tensor t = alloc_weight(dtype, rows, cols);
        int64_t r0 = 0;
        for (size_t i = 0; i < parts.size(); ++i) {
            Tensor view = t.rows_view(r0, part_rows[i]);
            if (parts[i] == nullptr) {
                FS_CUDA(cudaMemsetAsync(view.data, 0, view.nbytes(), stream_->get()));
            } else {
                FS_CHECK(parts[i]->numel() == part_rows[i] * cols,
                         "tensor '{}' in {} has {} elements, expected [{}, {}]", parts[i]->name,
                         parts[i]->file, parts[i]->numel(), part_rows[i], cols);
                upload(*parts[i], dtype, view.data);
            }
            r0 += part_rows[i];
        }
        return t;
    }

    void to_host_f32(const Tensor& t, float* dst) override {
        size_t n = static_cast<size_t>(t.numel());
        if (n == 0) return;
        size_t esz = dtype_size(t.dtype);
        size_t chunk_elems = kStageBytes / std::max<size_t>(esz, 4) / 4 * 4;
        for (size_t off = 0; off < n; off += chunk_elems) {
            size_t cnt = std::min(chunk_elems, n - off);
            FS_CUDA(cudaMemcpyAsync(stage_[0].get(), static_cast<const char*>(t.data) + off * esz,
                                    cnt * esz, cudaMemcpyDeviceToHost, stream_->get()));
            FS_CUDA(cudaStreamSynchronize(stream_->get()));
            convert_to_f32(t.dtype, stage_[0].get(), dst + off, cnt);
        }
    }

    size_t free_memory() const override {
        size_t free_b = 0, total = 0;
        FS_CUDA(cudaMemGetInfo(&free_b, &total));
        return free_b;
    }

    void init_kv(const KVLayout& layout) override {
        FS_CHECK(layout.dtype == act_,
                 "CUDA backend: KV cache dtype {} must equal the activation dtype {}",
                 dtype_name(layout.dtype), dtype_name(act_));
        FS_CHECK(layout.num_layers > 0 && layout.num_blocks > 0 && layout.block_size > 0 &&
                     layout.num_kv_heads > 0 && layout.head_dim > 0,
                 "init_kv: bad KV layout");
        invalidate_graphs();
        kv_ = DeviceBuffer();
        // one more block than asked for: the scratch block padding rows of recorded steps write
        kv_ = DeviceBuffer(layout.bytes_per_block() * (layout.num_blocks + 1));
        kv_layout_ = layout;
    }
    const KVLayout& kv_layout() const override { return kv_layout_; }

    void begin_forward(const BatchMeta& meta) override { begin_forward_impl(meta, false); }
    int64_t step_rows(const BatchMeta& meta) const override {
        const int64_t b = graph_bucket(meta);
        return b > 0 ? b : meta.num_tokens();
    }
    bool begin_step(const BatchMeta& meta, uint64_t tensors_id) override;
    void end_step() override;
    void embedding(const Tensor& table, Tensor& out) override;
    void rmsnorm(const Tensor& x, const Tensor& w, float eps, Tensor& out) override;
    void add_rmsnorm(Tensor& residual, const Tensor& x, const Tensor& w, float eps,
                     Tensor& out) override;
    void linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& out,
                int64_t col0 = 0) override;
    void rope(Tensor& qkv, const AttnParams& p) override;
    void attention(int64_t layer, const Tensor& qkv, const AttnParams& p, Tensor& out) override;
    // Single-token steps: the decode kernel rotates and stores itself; other steps: one kernel
    // rotates q/k and stores k/v (rope_store_kernel), then the attention kernels.
    void rope_attention(int64_t layer, Tensor& qkv, const AttnParams& p, Tensor& out) override;
    void silu_mul(const Tensor& gate_up, Tensor& out) override;
    // One row: a GEMV that streams the gate and up rows of each output and writes silu * up.
    void linear_silu(const Tensor& x, const Tensor& W, const Tensor* bias, Tensor& gate_up,
                     Tensor& out) override;
    void gather_logit_rows(const Tensor& x, Tensor& out) override;
    void sample_rows(const Tensor& logits, const RowSampling* params, int32_t* ids,
                     float* logprobs) override;
    void sample_rows_enqueue(const Tensor& logits, const RowSampling* params,
                             bool want_logprobs) override;
    void sample_rows_collect(int32_t* ids, float* logprobs) override;
    bool prefers_device_sampling() const override { return true; }
    bool sample_feed() const override { return true; }
    bool fused_decode(int64_t rows, int64_t max_k) const override {
        return fused_enabled_ && rows == 1 && max_k > 0 && max_k % 8 == 0 &&
               gemv1_supported(1, max_k);
    }
    void norm_linear(const Tensor& residual, const Tensor& w, float eps, const Tensor& W,
                     const Tensor* bias, Tensor& out) override;
    void linear_residual(const Tensor& x, const Tensor& W, const Tensor* bias,
                         Tensor& residual) override;
    void silu_linear_residual(const Tensor& gate_up, const Tensor& W, const Tensor* bias,
                              Tensor& residual) override;
    void synchronize() override { FS_CUDA(cudaStreamSynchronize(stream_->get())); }
    CudaGraphStats graph_stats() const { return stats_; }

  private:
    void begin_forward_impl(const BatchMeta& meta, bool pad);
    // Checks of rope(); returns half the rotary dims.
    int64_t check_rope(const Tensor& qkv, const AttnParams& p) const;
    // attention(): stores k/v (launch_kv_store) when rope_half < 0, else rotates and stores in
    // one kernel (launch_rope_store, rotary dims 2 * rope_half), then attends.
    void attention_impl(int64_t layer, const Tensor& qkv, const AttnParams& p, Tensor& out,
                        int64_t rope_half);
    // Batch size a step is recorded at (0: run it eagerly).
    int64_t graph_bucket(const BatchMeta& meta) const {
        const int64_t T = meta.num_tokens();
        if (!graphs_enabled_ || kv_.get() == nullptr || T < 1 || T > kMaxGraphRows) return 0;
        if (meta.seqs.size() != static_cast<size_t>(T) ||
            meta.logit_rows.size() != static_cast<size_t>(T))
            return 0;
        for (const SeqSlice& q : meta.seqs)
            if (q.q_len != 1) return 0;
        size_t inv = 0;  // rope arrays have fixed capacities in recorded steps
        for (const RopeFreqs& r : meta.rope) inv += r.inv_freq.size();
        if (meta.rope.size() > static_cast<size_t>(kMaxGraphRows) ||
            inv >
                static_cast<size_t>(kMaxGraphRows * std::max<int64_t>(kv_layout_.head_dim / 2, 1)))
            return 0;
        int64_t b = 1;
        while (b < T) b *= 2;
        return b;
    }
    void invalidate_graphs() { graphs_.clear(); }
    void abort_capture() {
        if (!capturing_) return;
        capturing_ = false;
        cudaGraph_t g = nullptr;
        cudaStreamEndCapture(stream_->get(), &g);  // the failed step's partial recording
        if (g) cudaGraphDestroy(g);
        cudaGetLastError();
        graphs_.erase(cur_graph_);
    }
    // Workspace of the split-K decode attention for a step of n decode tokens (either kernel).
    size_t decode_ws_bytes(int64_t n, const AttnParams& p, int64_t ctx) const {
        size_t bytes = 0;
        for (bool tc : {false, true}) {
            const int64_t splits =
                splitk_choose_splits(act_, n, p.num_heads, p.num_kv_heads, p.head_dim, ctx,
                                     props_.multiProcessorCount, tc);
            bytes = std::max(bytes, splitk_workspace_bytes(n, p.num_heads, p.head_dim, splits));
        }
        return bytes;
    }

    Tensor alloc_weight(DType dtype, int64_t rows, int64_t cols) {
        FS_CHECK(dtype == DType::BF16 || dtype == DType::F16 || dtype == DType::F32,
                 "CUDA backend: weights can be stored as bf16, f16 or f32, not {}",
                 dtype_name(dtype));
        Tensor t;
        t.dtype = dtype;
        t.rows = rows;
        t.cols = cols;
        auto buf = std::make_shared<DeviceBuffer>(std::max<size_t>(t.nbytes(), 1));
        t.data = buf->get();
        t.owner = buf;
        return t;
    }

    // Streams src (host) into dst (device, `dtype`) through two pinned staging buffers.
    void upload(const TensorInfo& src, DType dtype, void* dst) {
        FS_CHECK(src.dtype == DType::F32 || src.dtype == DType::F16 || src.dtype == DType::BF16,
                 "tensor '{}' in {}: dtype {} cannot be loaded (need f32, f16 or bf16)", src.name,
                 src.file, dtype_name(src.dtype));
        FS_CHECK(src.data != nullptr, "tensor '{}' has no data", src.name);
        const size_t n = static_cast<size_t>(src.numel());
        const size_t in_sz = dtype_size(src.dtype), out_sz = dtype_size(dtype);
        const size_t chunk = kStageBytes / in_sz;
        const char* s = static_cast<const char*>(src.data);
        char* d = static_cast<char*>(dst);
        int k = 0;
        for (size_t off = 0; off < n; off += chunk, k ^= 1) {
            size_t cnt = std::min(chunk, n - off);
            // the staging pair k is free once its previous copy/convert has run
            FS_CUDA(cudaEventSynchronize(stage_ev_[k]->get()));
            std::memcpy(stage_[k].get(), s + off * in_sz, cnt * in_sz);
            if (src.dtype == dtype) {
                FS_CUDA(cudaMemcpyAsync(d + off * out_sz, stage_[k].get(), cnt * in_sz,
                                        cudaMemcpyHostToDevice, stream_->get()));
            } else {
                FS_CUDA(cudaMemcpyAsync(stage_dev_[k].get(), stage_[k].get(), cnt * in_sz,
                                        cudaMemcpyHostToDevice, stream_->get()));
                launch_convert(src.dtype, stage_dev_[k].get(), dtype, d + off * out_sz, cnt,
                               stream_->get());
            }
            FS_CUDA(cudaEventRecord(stage_ev_[k]->get(), stream_->get()));
        }
    }

    void check_act(const Tensor& t, const char* what) const {
        FS_CHECK(t.dtype == act_, "{}: tensor dtype {} differs from the activation dtype {}", what,
                 dtype_name(t.dtype), dtype_name(act_));
    }
    // The residual stream may be f32 (residual_dtype()) or the activation dtype.
    void check_res(const Tensor& t, const char* what) const {
        FS_CHECK(t.dtype == act_ || t.dtype == DType::F32,
                 "{}: tensor dtype {} is neither f32 nor the activation dtype {}", what,
                 dtype_name(t.dtype), dtype_name(act_));
    }
    void need_meta(const char* what) const {
        FS_CHECK(have_meta_, "{}: begin_forward() must be called first", what);
    }

    int device_;
    DType act_;
    cudaDeviceProp props_{};
    std::unique_ptr<Stream> stream_;
    std::unique_ptr<LtHandle> lt_;
    std::shared_ptr<CachingAllocator> alloc_;
    DeviceBuffer lt_ws_;
    PinnedBuffer stage_[2];
    DeviceBuffer stage_dev_[2];
    std::unique_ptr<Event> stage_ev_[2];
    DeviceBuffer kv_;
    KVLayout kv_layout_;

    // per-forward metadata
    BatchMeta meta_;
    bool have_meta_ = false;
    PinnedBuffer meta_host_;
    DeviceBuffer meta_dev_;
    std::unique_ptr<Event> meta_ev_;
    bool meta_ev_recorded_ = false;
    DevMeta dm_;
    std::vector<int32_t> decode_tokens_, prefill_tiles_;
    int64_t max_decode_ctx_ = 0;
    bool single_token_seqs_ = false;  // every sequence of the step has q_len 1
    bool gated_gemv_ = true;          // FARSIGHT_GATED_GEMV=0: one-row linear_silu unfused
    bool rope_in_decode_ = true;      // FARSIGHT_DECODE_ROPE=0: rope_store kernel instead
    PinnedBuffer samp_host_[2];  // sample_rows: parameters up, ids and logprobs down
    DeviceBuffer samp_dev_;
    std::unique_ptr<Event> samp_ev_[2];  // each parity's download done
    struct SampPending {
        int parity;
        int64_t rows;
        bool logprobs;
    };
    std::deque<SampPending> samp_pending_;
    int samp_parity_ = 0;
    const int32_t* samp_last_ids_ = nullptr;  // the last enqueued sampling's ids (device)
    int64_t samp_last_rows_ = 0;
    DeviceBuffer attn_ws_;
    DeviceBuffer attn_cnt_;  // decode attention arrival counters: zero between launches

    // recorded decode steps (CUDA graphs), one per (batch bucket, caller tensors id)
    static constexpr int64_t kMaxGraphRows = 256;
    struct GraphExec {
        cudaGraphExec_t exec = nullptr;
        bool warmed = false;  // ran once eagerly (plans made, buffers sized) for this key
        GraphExec() = default;
        GraphExec(const GraphExec&) = delete;
        GraphExec& operator=(const GraphExec&) = delete;
        ~GraphExec() {
            if (exec) cudaGraphExecDestroy(exec);
        }
    };
    using GraphKey = std::pair<int64_t, uint64_t>;  // (2 * bucket + long context, tensors)
    std::map<GraphKey, GraphExec> graphs_;
    bool graphs_enabled_ = true;
    bool residual_act_ = false;  // FARSIGHT_RESIDUAL=act: residual stream in the activation dtype
    // FARSIGHT_SKIP_OPS (profiling only, wrong results): ops that return without launching,
    // so that a bench run shows what each op costs inside the real pipelined step.
    unsigned skip_ops_ = 0;
    bool skip(unsigned op) const { return (skip_ops_ & op) != 0; }
    int64_t graph_bucket_ = 0;  // bucket of the current step (0: eager)
    bool capturing_ = false, replay_ = false;
    GraphKey cur_graph_{0, 0};
    CudaGraphStats stats_;
    // fixed-address metadata of recorded steps (kernel arguments point into it)
    PinnedBuffer gmeta_host_;
    DeviceBuffer gmeta_dev_;
    std::unique_ptr<Event> gmeta_ev_;
    bool gmeta_ev_recorded_ = false;
    int64_t gmeta_bt_cap_ = 0, gmeta_inv_cap_ = 0;  // capacities (entries)

    // linear plans
    using PlanKey = std::tuple<int, int64_t, int64_t, int64_t, bool, unsigned, unsigned, unsigned>;
    std::map<PlanKey, std::unique_ptr<LtPlan>> plans_;
    static constexpr int64_t kGemvMaxT = 1;  // decode rows that always take the GEMV kernel
    int gemv_mode_ = 2;
    bool tune_enabled_ = true;
    // FARSIGHT_FUSED=1: batch-1 decode through the fused GEMV ops (measured slower on the H200,
    // 180 vs 227 tok/s for llama2-7b: every block stages its input row before streaming W)
    bool fused_enabled_ = false;
    void gemv1(Gemv1Op op, const Tensor& x, const Tensor* ln, float eps, const Tensor& W,
               const Tensor* bias, Tensor& out, int64_t K);
    DeviceBuffer flush_;  // evicts the L2 cache between timed runs of the linear tuning
};

void CudaBackend::begin_forward_impl(const BatchMeta& meta_in, bool pad) {
    if (capturing_) abort_capture();  // the previous step failed while being recorded
    const int64_t T0 = meta_in.num_tokens();
    FS_CHECK(meta_in.positions.size() == static_cast<size_t>(T0) &&
                 meta_in.slot_mapping.size() == static_cast<size_t>(T0),
             "begin_forward: tokens/positions/slot_mapping sizes differ ({}/{}/{})", T0,
             meta_in.positions.size(), meta_in.slot_mapping.size());
    FS_CHECK(!meta_in.rope.empty() || T0 == 0, "begin_forward: no rope variant given");
    for (size_t s = 0; s < meta_in.seqs.size(); ++s) {
        const SeqSlice& q = meta_in.seqs[s];
        FS_CHECK(q.q_start >= 0 && q.q_len >= 0 && q.q_start + q.q_len <= T0,
                 "begin_forward: sequence {} rows [{}, {}) outside the batch of {} tokens", s,
                 q.q_start, q.q_start + q.q_len, T0);
        FS_CHECK(q.rope_variant >= 0 && q.rope_variant < static_cast<int32_t>(meta_in.rope.size()),
                 "begin_forward: sequence {} uses rope variant {} of {}", s, q.rope_variant,
                 meta_in.rope.size());
        FS_CHECK(q.block_table_offset >= 0 && q.n_blocks >= 0 &&
                     q.block_table_offset + q.n_blocks <=
                         static_cast<int32_t>(meta_in.block_tables.size()),
                 "begin_forward: sequence {} block table out of range", s);
    }
    for (size_t i = 0; i < meta_in.logit_rows.size(); ++i)
        FS_CHECK(meta_in.logit_rows[i] >= 0 && meta_in.logit_rows[i] < T0,
                 "begin_forward: logit row {} outside the batch of {} tokens",
                 meta_in.logit_rows[i], T0);
    if (kv_layout_.num_blocks > 0) {
        const int64_t slots = kv_layout_.num_blocks * kv_layout_.block_size;
        for (int64_t t = 0; t < T0; ++t)
            FS_CHECK(meta_in.slot_mapping[t] < slots,  // negative: not stored (padding)
                     "begin_forward: slot {} of token {} beyond the KV cache ({} slots)",
                     meta_in.slot_mapping[t], t, slots);
        for (int32_t b : meta_in.block_tables)
            FS_CHECK(b >= 0 && b < kv_layout_.num_blocks,
                     "begin_forward: block {} outside the KV cache ({} blocks)", b,
                     kv_layout_.num_blocks);
    }

    // Graph-eligible steps are padded to their bucket with dummy one-token sequences on the
    // scratch block (index num_blocks, allocated beyond the pool init_kv was asked for).
    int64_t bucket = pad ? graph_bucket(meta_in) : 0;
    meta_ = meta_in;
    if (bucket > 0) {
        const int32_t scratch = static_cast<int32_t>(kv_layout_.num_blocks);
        for (int64_t i = T0; i < bucket; ++i) {
            SeqSlice d;
            d.q_start = static_cast<int32_t>(i);
            d.q_len = 1;
            d.n_past = 0;
            d.rope_variant = 0;
            d.block_table_offset = static_cast<int32_t>(meta_.block_tables.size());
            d.n_blocks = 1;
            meta_.block_tables.push_back(scratch);
            meta_.tokens.push_back(0);
            meta_.positions.push_back(0);
            meta_.slot_mapping.push_back(static_cast<int32_t>(scratch * kv_layout_.block_size));
            meta_.logit_rows.push_back(static_cast<int32_t>(i));
            meta_.seqs.push_back(d);
        }
    }
    const BatchMeta& meta = meta_;
    const int64_t T = meta.num_tokens();
    std::vector<int32_t> token_seq(static_cast<size_t>(T), 0);
    decode_tokens_.clear();
    prefill_tiles_.clear();
    max_decode_ctx_ = 0;
    single_token_seqs_ = !meta.seqs.empty();
    for (const SeqSlice& q : meta.seqs) single_token_seqs_ = single_token_seqs_ && q.q_len == 1;
    const int64_t D = kv_layout_.head_dim;
    int prefill_tile_q = kPrefillTileQ;
    for (size_t s = 0; s < meta.seqs.size(); ++s) {
        const SeqSlice& q = meta.seqs[s];
        for (int32_t j = 0; j < q.q_len; ++j) token_seq[q.q_start + j] = static_cast<int32_t>(s);
        bool tiled = q.q_len >= 8 && prefill_supported(D);
        if (tiled) {
            prefill_tile_q = prefill_tile_rows(D, act_);  // 128 on the sm90 kernel
            for (int32_t q0 = 0; q0 < q.q_len; q0 += prefill_tile_q) {
                prefill_tiles_.push_back(static_cast<int32_t>(s));
                prefill_tiles_.push_back(q0);
            }
        } else {
            for (int32_t j = 0; j < q.q_len; ++j) decode_tokens_.push_back(q.q_start + j);
            max_decode_ctx_ = std::max<int64_t>(max_decode_ctx_, q.n_past + q.q_len);
        }
    }

    std::vector<int32_t> rope_off, rope_half;
    std::vector<float> inv, scal;
    for (const auto& r : meta.rope) {
        rope_off.push_back(static_cast<int32_t>(inv.size()));
        rope_half.push_back(static_cast<int32_t>(r.inv_freq.size()));
        inv.insert(inv.end(), r.inv_freq.begin(), r.inv_freq.end());
        scal.push_back(r.attention_scaling);
    }
    // recorded steps need every array at a fixed address: fixed capacities per array
    const int64_t inv_cap = kMaxGraphRows * std::max<int64_t>(D / 2, 1);

    enum {
        P_TOK,
        P_POS,
        P_SLOT,
        P_LR,
        P_TS,
        P_DT,
        P_PT,
        P_SEQ,
        P_RO,
        P_RH,
        P_RS,
        P_INV,
        P_BT,
        P_N
    };
    struct Part {
        const void* src;
        size_t bytes;
        size_t off;
    };
    Part parts[P_N] = {
        {meta.tokens.data(), static_cast<size_t>(T) * 4, 0},
        {meta.positions.data(), static_cast<size_t>(T) * 4, 0},
        {meta.slot_mapping.data(), static_cast<size_t>(T) * 4, 0},
        {meta.logit_rows.data(), meta.logit_rows.size() * 4, 0},
        {token_seq.data(), token_seq.size() * 4, 0},
        {decode_tokens_.data(), decode_tokens_.size() * 4, 0},
        {prefill_tiles_.data(), prefill_tiles_.size() * 4, 0},
        {meta.seqs.data(), meta.seqs.size() * sizeof(SeqSlice), 0},
        {rope_off.data(), rope_off.size() * 4, 0},
        {rope_half.data(), rope_half.size() * 4, 0},
        {scal.data(), scal.size() * 4, 0},
        {inv.data(), inv.size() * 4, 0},
        {meta.block_tables.data(), meta.block_tables.size() * 4, 0},
    };
    auto r256 = [](size_t b) { return (b + 255) / 256 * 256; };
    char* base = nullptr;
    if (bucket > 0) {
        const int64_t bt = static_cast<int64_t>(meta.block_tables.size());
        if (bt > gmeta_bt_cap_ || inv_cap > gmeta_inv_cap_ || !gmeta_dev_.get()) {
            // grows: recorded steps point at the old buffer
            invalidate_graphs();
            FS_CUDA(cudaStreamSynchronize(stream_->get()));
            gmeta_bt_cap_ = std::max<int64_t>({2 * bt, gmeta_bt_cap_, 4096});
            gmeta_inv_cap_ = inv_cap;
            gmeta_dev_ = DeviceBuffer();
            gmeta_host_ = PinnedBuffer();
            gmeta_ev_recorded_ = false;
        }
        const size_t rows_b = r256(kMaxGraphRows * 4);
        const size_t caps[P_N] = {rows_b,
                                  rows_b,
                                  rows_b,
                                  rows_b,
                                  rows_b,
                                  rows_b,
                                  256,
                                  r256(kMaxGraphRows * sizeof(SeqSlice)),
                                  rows_b,
                                  rows_b,
                                  rows_b,
                                  r256(static_cast<size_t>(gmeta_inv_cap_) * 4),
                                  r256(static_cast<size_t>(gmeta_bt_cap_) * 4)};
        size_t total = 0;
        for (int i = 0; i < P_N; ++i) {
            FS_CHECK(parts[i].bytes <= caps[i], "begin_forward: recorded-step metadata overflow");
            parts[i].off = total;
            total += caps[i];
        }
        if (!gmeta_dev_.get()) {
            gmeta_dev_ = DeviceBuffer(total);
            gmeta_host_ = PinnedBuffer(total);
        }
        if (gmeta_ev_recorded_) FS_CUDA(cudaEventSynchronize(gmeta_ev_->get()));
        for (const auto& p : parts)
            if (p.bytes) std::memcpy(gmeta_host_.as<char>() + p.off, p.src, p.bytes);
        // two copies: everything before the block tables (small), then the used block tables
        const size_t head = parts[P_INV].off + parts[P_INV].bytes;
        FS_CUDA(cudaMemcpyAsync(gmeta_dev_.get(), gmeta_host_.get(), head, cudaMemcpyHostToDevice,
                                stream_->get()));
        if (parts[P_BT].bytes)
            FS_CUDA(cudaMemcpyAsync(gmeta_dev_.as<char>() + parts[P_BT].off,
                                    gmeta_host_.as<char>() + parts[P_BT].off, parts[P_BT].bytes,
                                    cudaMemcpyHostToDevice, stream_->get()));
        FS_CUDA(cudaEventRecord(gmeta_ev_->get(), stream_->get()));
        gmeta_ev_recorded_ = true;
        base = gmeta_dev_.as<char>();
    } else {
        size_t total = 0;
        for (auto& p : parts) {
            p.off = total;
            total += r256(p.bytes);
        }
        total = std::max<size_t>(total, 256);
        // the previous upload must have left the pinned buffer before we overwrite it
        if (meta_ev_recorded_) FS_CUDA(cudaEventSynchronize(meta_ev_->get()));
        meta_host_.ensure(total);
        if (meta_dev_.size() < total) {
            // buffers still in use by queued kernels: wait before freeing
            FS_CUDA(cudaStreamSynchronize(stream_->get()));
            meta_dev_.ensure(total);
        }
        for (const auto& p : parts)
            if (p.bytes) std::memcpy(meta_host_.as<char>() + p.off, p.src, p.bytes);
        FS_CUDA(cudaMemcpyAsync(meta_dev_.get(), meta_host_.get(), total, cudaMemcpyHostToDevice,
                                stream_->get()));
        FS_CUDA(cudaEventRecord(meta_ev_->get(), stream_->get()));
        meta_ev_recorded_ = true;
        base = meta_dev_.as<char>();
    }

    auto at = [&](int i) { return reinterpret_cast<const int32_t*>(base + parts[i].off); };
    dm_ = DevMeta{};
    dm_.tokens = at(P_TOK);
    dm_.positions = at(P_POS);
    dm_.slot_mapping = at(P_SLOT);
    dm_.block_tables = at(P_BT);
    dm_.logit_rows = at(P_LR);
    dm_.token_seq = at(P_TS);
    dm_.seqs = reinterpret_cast<const SeqSlice*>(base + parts[P_SEQ].off);
    dm_.inv_freq = reinterpret_cast<const float*>(base + parts[P_INV].off);
    dm_.rope_offset = at(P_RO);
    dm_.rope_half = at(P_RH);
    dm_.rope_scaling = reinterpret_cast<const float*>(base + parts[P_RS].off);
    dm_.decode_tokens = at(P_DT);
    dm_.prefill_tiles = at(P_PT);
    dm_.num_tokens = static_cast<int>(T);
    dm_.num_seqs = static_cast<int>(meta.seqs.size());
    dm_.num_decode_tokens = static_cast<int>(decode_tokens_.size());
    dm_.num_prefill_tiles = static_cast<int>(prefill_tiles_.size() / 2);
    dm_.prefill_tile_q = prefill_tile_q;
    graph_bucket_ = bucket;
    have_meta_ = true;
    if (meta_in.tokens_from_last_sample) {  // after the upload: the ids replace the placeholders
        FS_CHECK(samp_last_ids_ != nullptr && samp_last_rows_ == meta_in.num_tokens(),
                 "forward: the step takes its {} tokens from the last sampling, which drew {}",
                 meta_in.num_tokens(), samp_last_rows_);
        FS_CUDA(cudaMemcpyAsync(const_cast<int32_t*>(dm_.tokens), samp_last_ids_,
                                static_cast<size_t>(samp_last_rows_) * sizeof(int32_t),
                                cudaMemcpyDeviceToDevice, stream_->get()));
    }
}

bool CudaBackend::begin_step(const BatchMeta& meta, uint64_t tensors_id) {
    begin_forward_impl(meta, true);
    replay_ = false;
    if (graph_bucket_ == 0) return false;
    // the key: the bucket, whether the longest context takes the long-context decode kernel
    // (decode_tc_min_ctx), and the caller's tensors
    cur_graph_ = {graph_bucket_ * 2 + (max_decode_ctx_ >= decode_tc_min_ctx() ? 1 : 0), tensors_id};
    // graphs of this bucket recorded for tensors the caller has since moved are dead
    for (auto it = graphs_.lower_bound({graph_bucket_ * 2, 0});
         it != graphs_.end() && it->first.first / 2 == graph_bucket_;)
        it = it->first.second != tensors_id ? graphs_.erase(it) : std::next(it);
    GraphExec& g = graphs_[cur_graph_];
    if (g.exec) {
        replay_ = true;
        return true;
    }
    if (!g.warmed) {  // first time: run eagerly (makes the plans, sizes the workspaces)
        g.warmed = true;
        return false;
    }
    FS_CUDA(cudaStreamBeginCapture(stream_->get(), cudaStreamCaptureModeThreadLocal));
    capturing_ = true;
    return false;
}

void CudaBackend::end_step() {
    if (capturing_) {
        capturing_ = false;
        cudaGraph_t graph = nullptr;
        cudaError_t e = cudaStreamEndCapture(stream_->get(), &graph);
        if (e != cudaSuccess || graph == nullptr) {
            cudaGetLastError();
            graphs_.erase(cur_graph_);
            graphs_enabled_ = false;  // recording does not work here: stay eager from now on
            fail(
                "CUDA graph capture of a decode step failed ({}); set FARSIGHT_CUDA_GRAPHS=0 "
                "to run without graphs",
                cudaGetErrorString(e));
        }
        cudaGraphExec_t exec = nullptr;
        e = cudaGraphInstantiate(&exec, graph, 0);
        cudaGraphDestroy(graph);
        if (e != cudaSuccess) {
            cudaGetLastError();
            graphs_.erase(cur_graph_);
            graphs_enabled_ = false;
            fail(
                "CUDA graph instantiation failed ({}); set FARSIGHT_CUDA_GRAPHS=0 to run "
                "without graphs",
                cudaGetErrorString(e));
        }
        graphs_[cur_graph_].exec = exec;
        ++stats_.captures;
        replay_ = true;
    }
    if (replay_) {
        replay_ = false;
        auto it = graphs_.find(cur_graph_);
        FS_CHECK(it != graphs_.end() && it->second.exec, "end_step: no recorded step to run");
        FS_CUDA(cudaGraphLaunch(it->second.exec, stream_->get()));
        ++stats_.replays;
    }
}

void CudaBackend::embedding(const Tensor& table, Tensor& out) {
    need_meta("embedding");
    check_res(out, "embedding");
    const int64_t T = meta_.num_tokens();
    FS_CHECK(out.rows == T && out.cols == table.cols,
             "embedding: out is [{}, {}], expected [{}, {}]", out.rows, out.cols, T, table.cols);
    for (int64_t t = 0; t < T; ++t)
        FS_CHECK(meta_.tokens[t] >= 0 && meta_.tokens[t] < table.rows,
                 "embedding: token id {} outside the vocabulary of {}", meta_.tokens[t],
                 table.rows);
    launch_embedding(out.dtype, table.dtype, table.data, table.rows, table.cols, dm_.tokens, T,
                     out.data, stream_->get());
}

void CudaBackend::rmsnorm(const Tensor& x, const Tensor& w, float eps, Tensor& out) {
    check_res(x, "rmsnorm");
    check_act(out, "rmsnorm");
    FS_CHECK(w.numel() == x.cols && out.rows == x.rows && out.cols == x.cols,
             "rmsnorm: shapes x [{}, {}], w {} elements, out [{}, {}]", x.rows, x.cols, w.numel(),
             out.rows, out.cols);
    if (skip(kSkipNorm)) return;
    launch_rmsnorm(act_, w.dtype, x.dtype, x.data, w.data, eps, out.data, nullptr, x.rows, x.cols,
                   stream_->get());
}

void CudaBackend::add_rmsnorm(Tensor& residual, const Tensor& x, const Tensor& w, float eps,
                              Tensor& out) {
    check_act(x, "add_rmsnorm");
    check_res(residual, "add_rmsnorm");
    check_act(out, "add_rmsnorm");
    FS_CHECK(w.numel() == x.cols && out.rows == x.rows && out.cols == x.cols &&
                 residual.rows == x.rows && residual.cols == x.cols,
             "add_rmsnorm: shapes residual [{}, {}], x [{}, {}], w {}, out [{}, {}]", residual.rows,
             residual.cols, x.rows, x.cols, w.numel(), out.rows, out.cols);
    if (skip(kSkipNorm)) return;
    launch_rmsnorm(act_, w.dtype, residual.dtype, x.data, w.data, eps, out.data, residual.data,
                   x.rows, x.cols, stream_->get());
}

void CudaBackend::linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& out,
                         int64_t col0) {
    FS_CHECK(col0 == 0, "linear: the CUDA backend fuses weights and writes whole rows (col0 {})",
             col0);
    check_act(x, "linear");
    if (out.dtype != DType::F32) check_act(out, "linear");  // f32 out: logits
    FS_CHECK(w.dtype == act_,
             "linear: weight dtype {} must equal the activation dtype {} on the CUDA backend",
             dtype_name(w.dtype), dtype_name(act_));
    const int64_t T = x.rows, K = x.cols, N = w.rows;
    FS_CHECK(w.cols == K && out.rows == T && out.cols == N,
             "linear: x [{}, {}] @ w[{}, {}]^T -> out [{}, {}] do not fit", T, K, w.rows, w.cols,
             out.rows, out.cols);
    const Tensor* b = (bias && !bias->empty()) ? bias : nullptr;
    if (b)
        FS_CHECK(b->numel() == N && b->dtype == act_,
                 "linear: bias has {} elements of {}, expected {} of {}", b->numel(),
                 dtype_name(b->dtype), N, dtype_name(act_));
    if (T == 0 || skip(kSkipLinear)) return;
    cudaStream_t st = stream_->get();
    const bool gemv_ok = gemv_mode_ != 0 && out.dtype == act_ && gemv_supported(T, N, K) &&
                         alignment_of(x.data) >= 16 && alignment_of(w.data) >= 16;
    PlanKey key{static_cast<int>(act_) * 16 + static_cast<int>(out.dtype),
                T,
                N,
                K,
                b != nullptr,
                alignment_of(w.data),
                alignment_of(x.data),
                alignment_of(out.data)};
    auto it = plans_.find(key);
    if (it == plans_.end()) {
        // One-row shapes (batch-1 decode) always take the GEMV kernel (bf16/f16 out) or
        // cuBLASLt's heuristic choice (f32 logits): a fixed choice, so results do not depend
        // on timing. Batched shapes (1 < T <= 256) try cuBLASLt's first algorithms and the GEMV
        // kernel (T <= 16) on the real operands once, timed with the L2 cache flushed (weights
        // stream from memory in a real step; timing them L2-resident favours tiles that
        // re-read W), and keep the fastest.
        // FARSIGHT_LINEAR_TUNE=0: heuristic choice for every shape (reproducible runs).
        const bool tune =
            !capturing_ && tune_enabled_ && gemv_mode_ == 2 && T > kGemvMaxT && T <= 256;
        std::vector<cublasLtMatmulAlgo_t> algos;
        auto plan = make_lt_plan(lt_->get(), act_, T, N, K, b != nullptr, std::get<5>(key),
                                 std::get<6>(key), std::get<7>(key), lt_ws_.size(), out.dtype,
                                 &algos, tune ? 8 : 1);
        if (gemv_ok && (gemv_mode_ == 1 || (gemv_mode_ == 2 && T <= kGemvMaxT))) {
            plan->use_gemv = true;
        } else if (tune) {
            auto run_lt = [&](const cublasLtMatmulAlgo_t& algo) {
                const void* bp = b ? b->data : nullptr;
                if (bp)
                    FS_CUBLAS(cublasLtMatmulDescSetAttribute(
                        plan->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof(bp)));
                const float alpha = 1.0f, beta = 0.0f;
                return cublasLtMatmul(lt_->get(), plan->op, &alpha, w.data, plan->a, x.data,
                                      plan->b, &beta, out.data, plan->c, out.data, plan->c, &algo,
                                      lt_ws_.get(), lt_ws_.size(), st);
            };
            const size_t flush_bytes =
                std::max<size_t>(static_cast<size_t>(props_.l2CacheSize) * 2, 64u << 20);
            if (flush_.size() < flush_bytes) flush_ = DeviceBuffer(flush_bytes);
            Event e0, e1;
            auto time_it = [&](auto&& f) {
                f();  // warm (and first-use costs)
                float total = 0;
                for (int r = 0; r < 3; ++r) {
                    FS_CUDA(cudaMemsetAsync(flush_.get(), r, flush_.size(), st));  // evicts W
                    FS_CUDA(cudaEventRecord(e0.get(), st));
                    f();
                    FS_CUDA(cudaEventRecord(e1.get(), st));
                    FS_CUDA(cudaEventSynchronize(e1.get()));
                    float ms = 0;
                    FS_CUDA(cudaEventElapsedTime(&ms, e0.get(), e1.get()));
                    total += ms;
                }
                return total;
            };
            float best = 1e30f;
            for (const auto& algo : algos) {
                if (run_lt(algo) != CUBLAS_STATUS_SUCCESS) continue;  // not runnable here
                const float ms = time_it([&] { (void)run_lt(algo); });
                if (ms < best) {
                    best = ms;
                    plan->algo = algo;
                }
            }
            if (gemv_ok && time_it([&] {
                               launch_gemv(act_, x.data, w.data, b ? b->data : nullptr, out.data, T,
                                           N, K, props_.multiProcessorCount, st);
                           }) < best)
                plan->use_gemv = true;
        }
        it = plans_.emplace(key, std::move(plan)).first;
    }
    if (it->second->use_gemv)
        launch_gemv(act_, x.data, w.data, b ? b->data : nullptr, out.data, T, N, K,
                    props_.multiProcessorCount, st);
    else
        lt_run(lt_->get(), *it->second, x.data, w.data, b ? b->data : nullptr, out.data,
               lt_ws_.get(), lt_ws_.size(), st);
}

int64_t CudaBackend::check_rope(const Tensor& qkv, const AttnParams& p) const {
    need_meta("rope");
    check_act(qkv, "rope");
    const int64_t T = meta_.num_tokens();
    FS_CHECK(qkv.rows == T && qkv.cols == (p.num_heads + 2 * p.num_kv_heads) * p.head_dim,
             "rope: qkv is [{}, {}], expected [{}, {}]", qkv.rows, qkv.cols, T,
             (p.num_heads + 2 * p.num_kv_heads) * p.head_dim);
    FS_CHECK(p.rotary_dim % 2 == 0 && p.rotary_dim <= p.head_dim && p.rotary_dim > 0,
             "rope: rotary_dim {} must be even and within head_dim {}", p.rotary_dim, p.head_dim);
    const int64_t half = p.rotary_dim / 2;
    FS_CHECK(T == 0 || !meta_.seqs.empty(), "rope: the batch has tokens but no sequences");
    for (size_t v = 0; v < meta_.rope.size(); ++v)
        FS_CHECK(static_cast<int64_t>(meta_.rope[v].inv_freq.size()) == half,
                 "rope: variant {} has {} frequencies, rotary_dim {} needs {}", v,
                 meta_.rope[v].inv_freq.size(), p.rotary_dim, half);
    return half;
}

void CudaBackend::rope(Tensor& qkv, const AttnParams& p) {
    const int64_t half = check_rope(qkv, p);
    if (skip(kSkipRope)) return;
    launch_rope(act_, qkv.data, meta_.num_tokens(), qkv.cols, p.num_heads + p.num_kv_heads,
                p.head_dim, half, dm_, stream_->get());
}

void CudaBackend::rope_attention(int64_t layer, Tensor& qkv, const AttnParams& p, Tensor& out) {
    const int64_t half = check_rope(qkv, p);
    attention_impl(layer, qkv, p, out, half);
}

void CudaBackend::attention(int64_t layer, const Tensor& qkv, const AttnParams& p, Tensor& out) {
    attention_impl(layer, qkv, p, out, -1);
}

void CudaBackend::attention_impl(int64_t layer, const Tensor& qkv, const AttnParams& p, Tensor& out,
                                 int64_t rope_half) {
    need_meta("attention");
    check_act(qkv, "attention");
    check_act(out, "attention");
    const KVLayout& L = kv_layout_;
    FS_CHECK(kv_.get() != nullptr, "attention: init_kv() was not called");
    FS_CHECK(layer >= 0 && layer < L.num_layers, "attention: layer {} of {}", layer, L.num_layers);
    FS_CHECK(p.num_kv_heads == L.num_kv_heads && p.head_dim == L.head_dim,
             "attention: layer geometry ({} kv heads, head_dim {}) differs from the KV cache "
             "({} kv heads, head_dim {})",
             p.num_kv_heads, p.head_dim, L.num_kv_heads, L.head_dim);
    FS_CHECK(p.num_heads % p.num_kv_heads == 0, "attention: {} heads not a multiple of {}",
             p.num_heads, p.num_kv_heads);
    const int64_t T = meta_.num_tokens();
    FS_CHECK(qkv.rows == T && qkv.cols == (p.num_heads + 2 * p.num_kv_heads) * p.head_dim,
             "attention: qkv is [{}, {}], expected [{}, {}]", qkv.rows, qkv.cols, T,
             (p.num_heads + 2 * p.num_kv_heads) * p.head_dim);
    FS_CHECK(out.rows == T && out.cols == p.num_heads * p.head_dim,
             "attention: out is [{}, {}], expected [{}, {}]", out.rows, out.cols, T,
             p.num_heads * p.head_dim);
    if (T == 0) return;
    for (size_t s = 0; s < meta_.seqs.size(); ++s) {
        const SeqSlice& q = meta_.seqs[s];
        FS_CHECK(static_cast<int64_t>(q.n_blocks) * L.block_size >= q.n_past + q.q_len,
                 "attention: sequence {} has {} KV blocks of {} for {} tokens", s, q.n_blocks,
                 L.block_size, q.n_past + q.q_len);
    }
    cudaStream_t st = stream_->get();
    const size_t pool_elems =  // per layer: num_blocks + the scratch block
        static_cast<size_t>((L.num_blocks + 1) * L.block_size * L.num_kv_heads * L.head_dim);
    char* kbase = kv_.as<char>() + static_cast<size_t>(layer) * 2 * pool_elems * dtype_size(act_);
    char* vbase = kbase + pool_elems * dtype_size(act_);
    // Steps of one new token per sequence (decode): the decode attention kernel rotates q/k and
    // stores k/v itself (head_dim 64/128, full rotary). Otherwise one kernel rotates and stores.
    // decode kernel of this step (decode_tc_applies: FARSIGHT_DECODE, batch, context); recorded
    // steps are keyed on the context side of the choice (decode_long_)
    const bool use_tc =
        dm_.num_decode_tokens > 0 && decode_tc_applies(p.num_heads, p.num_kv_heads, p.head_dim,
                                                       dm_.num_decode_tokens, max_decode_ctx_);
    const bool rope_in_decode = rope_half >= 0 && single_token_seqs_ && rope_in_decode_ &&
                                2 * rope_half == p.head_dim &&
                                (p.head_dim == 64 || p.head_dim == 128) &&
                                dm_.num_prefill_tiles == 0 && !skip(kSkipRope | kSkipKv) &&
                                // FARSIGHT_DECODE=tc_norope: the tc kernel without it
                                !(use_tc && !decode_tc_fold_rope());
    if (rope_in_decode) {
    } else if (rope_half < 0) {
        if (!skip(kSkipKv))
            launch_kv_store(act_, qkv.data, T, qkv.cols, p.num_heads, p.num_kv_heads, p.head_dim,
                            dm_.slot_mapping, kbase, vbase, st);
    } else if (!skip(kSkipRope | kSkipKv)) {
        launch_rope_store(act_, qkv.data, T, qkv.cols, p.num_heads, p.num_kv_heads, p.head_dim,
                          rope_half, dm_, kbase, vbase, props_.multiProcessorCount, st);
    }
    if (skip(kSkipAttn)) return;
    AttnLaunch a{act_,       qkv.data,     qkv.cols, kbase,   vbase,    p.num_heads, p.num_kv_heads,
                 p.head_dim, L.block_size, p.window, p.scale, out.data, out.cols};
    a.rope_store = rope_in_decode ? 1 : 0;
    a.pool_slots = (L.num_blocks + 1) * L.block_size;
    a.tc = use_tc ? 1 : 0;
    if (dm_.num_prefill_tiles > 0) launch_attention_prefill(a, dm_, st);
    if (dm_.num_decode_tokens > 0) {
        // Recorded steps must not depend on context lengths: the split count then depends only
        // on the batch (and a sliding window); the kernel derives partitions from the lengths.
        int64_t ctx = graph_bucket_ > 0 ? 0 : max_decode_ctx_;
        if (p.window > 0) ctx = ctx > 0 ? std::min<int64_t>(ctx, p.window) : p.window;
        const int64_t n = dm_.num_decode_tokens;
        const int64_t splits =
            splitk_choose_splits(act_, n, p.num_heads, p.num_kv_heads, p.head_dim, ctx,
                                 props_.multiProcessorCount, use_tc);
        size_t need = splitk_workspace_bytes(n, p.num_heads, p.head_dim, splits);
        if (graph_bucket_ > 0)  // one size for every bucket: growing would move recorded steps
            for (int64_t b = 1; b <= kMaxGraphRows; b *= 2)
                need = std::max(need, decode_ws_bytes(b, p, ctx));
        const size_t need_cnt =  // arrival counters (a bucket's n never exceeds kMaxGraphRows)
            static_cast<size_t>(
                splitk_counter_count(std::max<int64_t>(n, kMaxGraphRows), p.num_heads)) *
            sizeof(int);
        if (attn_ws_.size() < need || attn_cnt_.size() < need_cnt) {
            FS_CHECK(!capturing_, "attention: workspace grew while recording a step");
            FS_CUDA(cudaStreamSynchronize(st));
            invalidate_graphs();
            attn_ws_.ensure(need);
            if (attn_cnt_.size() < need_cnt) {
                attn_cnt_.ensure(need_cnt);
                // on the backend's stream (non-blocking: a legacy-stream memset would not be
                // ordered before the kernels that count in it)
                FS_CUDA(cudaMemsetAsync(attn_cnt_.get(), 0, attn_cnt_.size(), st));
            }
        }
        launch_attention_splitk(a, dm_, n, splits, attn_ws_.get(), attn_cnt_.as<int>(), st);
    }
}

void CudaBackend::silu_mul(const Tensor& gate_up, Tensor& out) {
    check_act(gate_up, "silu_mul");
    check_act(out, "silu_mul");
    FS_CHECK(gate_up.cols % 2 == 0 && out.rows == gate_up.rows && out.cols == gate_up.cols / 2,
             "silu_mul: gate_up [{}, {}] -> out [{}, {}]", gate_up.rows, gate_up.cols, out.rows,
             out.cols);
    if (skip(kSkipSilu)) return;
    launch_silu_mul(act_, gate_up.data, out.data, gate_up.rows, out.cols, stream_->get());
}

void CudaBackend::linear_silu(const Tensor& x, const Tensor& W, const Tensor* bias, Tensor& gate_up,
                              Tensor& out) {
    const Tensor* b = (bias && !bias->empty()) ? bias : nullptr;
    const int64_t I = W.rows / 2, K = x.cols;
    const bool one_row = x.rows == 1 && gemv_mode_ != 0 && gated_gemv_ &&
                         alignment_of(x.data) >= 16 && alignment_of(W.data) >= 16 &&
                         W.rows % 2 == 0 && W.cols == K && W.dtype == act_ && x.dtype == act_ &&
                         out.dtype == act_ && out.rows == 1 && out.cols == I &&
                         (!b || (b->dtype == act_ && b->numel() == 2 * I)) &&
                         gemv_supported(1, 2 * I, K) && !skip(kSkipLinear | kSkipSilu);
    if (!one_row) return Backend::linear_silu(x, W, bias, gate_up, out);
    launch_gemv_silu(act_, x.data, W.data, b ? b->data : nullptr, out.data, I, K,
                     props_.multiProcessorCount, stream_->get());
}

void CudaBackend::gemv1(Gemv1Op op, const Tensor& x, const Tensor* ln, float eps, const Tensor& W,
                        const Tensor* bias, Tensor& out, int64_t K) {
    FS_CHECK(W.dtype == act_, "fused linear: weight dtype {} must equal the activation dtype {}",
             dtype_name(W.dtype), dtype_name(act_));
    const int64_t N = W.rows;
    FS_CHECK(x.rows == 1 && out.rows == 1 && W.cols == K && out.cols == N,
             "fused linear: x [{}, {}] @ W [{}, {}]^T -> out [{}, {}] (one row, K = {})", x.rows,
             x.cols, W.rows, W.cols, out.rows, out.cols, K);
    FS_CHECK(gemv1_supported(N, K), "fused linear: unsupported shape N={} K={}", N, K);
    const Tensor* b = (bias && !bias->empty()) ? bias : nullptr;
    if (b)
        FS_CHECK(b->numel() == N && b->dtype == act_, "fused linear: bias has {} elements of {}",
                 b->numel(), dtype_name(b->dtype));
    FS_CHECK(alignment_of(x.data) >= 16 && alignment_of(W.data) >= 16,
             "fused linear: operands must be 16-byte aligned");
    const DType res_dt = op == Gemv1Op::NormIn ? x.dtype : out.dtype;
    launch_gemv1(act_, op, res_dt, ln ? ln->dtype : act_, x.data, ln ? ln->data : nullptr, eps,
                 W.data, b ? b->data : nullptr, out.data, N, K, props_.multiProcessorCount,
                 stream_->get());
}

void CudaBackend::norm_linear(const Tensor& residual, const Tensor& w, float eps, const Tensor& W,
                              const Tensor* bias, Tensor& out) {
    check_res(residual, "norm_linear");
    check_act(out, "norm_linear");
    FS_CHECK(w.numel() == residual.cols, "norm_linear: norm weight has {} elements, residual {}",
             w.numel(), residual.cols);
    gemv1(Gemv1Op::NormIn, residual, &w, eps, W, bias, out, residual.cols);
}

void CudaBackend::linear_residual(const Tensor& x, const Tensor& W, const Tensor* bias,
                                  Tensor& residual) {
    check_act(x, "linear_residual");
    check_res(residual, "linear_residual");
    gemv1(Gemv1Op::AddToResidual, x, nullptr, 0.0f, W, bias, residual, x.cols);
}

void CudaBackend::silu_linear_residual(const Tensor& gate_up, const Tensor& W, const Tensor* bias,
                                       Tensor& residual) {
    check_act(gate_up, "silu_linear_residual");
    check_res(residual, "silu_linear_residual");
    FS_CHECK(gate_up.cols % 2 == 0, "silu_linear_residual: gate_up has {} columns", gate_up.cols);
    gemv1(Gemv1Op::SiluInAddToResidual, gate_up, nullptr, 0.0f, W, bias, residual,
          gate_up.cols / 2);
}

void CudaBackend::gather_logit_rows(const Tensor& x, Tensor& out) {
    need_meta("gather_logit_rows");
    const int64_t n = static_cast<int64_t>(meta_.logit_rows.size());
    FS_CHECK(out.rows == n && out.cols == x.cols && out.dtype == x.dtype,
             "gather_logit_rows: out [{}, {}] {}, expected [{}, {}] {}", out.rows, out.cols,
             dtype_name(out.dtype), n, x.cols, dtype_name(x.dtype));
    for (int32_t r : meta_.logit_rows)
        FS_CHECK(r >= 0 && r < x.rows, "gather_logit_rows: row {} of {}", r, x.rows);
    launch_gather_rows(x.data, x.row_bytes(), dm_.logit_rows, n, out.data, stream_->get());
}

void CudaBackend::sample_rows(const Tensor& logits, const RowSampling* params, int32_t* ids,
                              float* logprobs) {
    sample_rows_enqueue(logits, params, logprobs != nullptr);
    sample_rows_collect(ids, logprobs);
}

// Parameters go up from, and ids / logprobs come down to, one of two pinned buffers (the two
// samplings that may be outstanding); the device side is one buffer whose ids the next step
// may take as its tokens (sample_feed).
void CudaBackend::sample_rows_enqueue(const Tensor& logits, const RowSampling* params,
                                      bool want_logprobs) {
    FS_CHECK(logits.dtype == DType::F32, "sample_rows: logits must be f32");
    FS_CHECK(samp_pending_.size() < 2, "sample_rows_enqueue: two samplings are already outstanding");
    const int64_t n = logits.rows;
    FS_CHECK(n == 0 || (logits.cols > 0 && logits.cols < (int64_t(1) << 30)),
             "sample_rows: vocabulary of {}", logits.cols);
    const int par = samp_parity_;
    samp_parity_ ^= 1;
    samp_pending_.push_back({par, n, want_logprobs});
    samp_last_ids_ = nullptr;
    samp_last_rows_ = 0;
    if (n == 0) return;
    const size_t pbytes = static_cast<size_t>(n) * sizeof(RowSampling);
    const size_t obytes = static_cast<size_t>(n) * (sizeof(int32_t) + sizeof(float));
    cudaStream_t st = stream_->get();
    if (samp_dev_.size() < pbytes + obytes) {
        FS_CUDA(cudaStreamSynchronize(st));  // queued copies may still use the old buffer
        samp_dev_.ensure(pbytes + obytes);
    }
    // this parity's previous sampling was collected (its copies are done): the buffer is free
    samp_host_[par].ensure(pbytes + obytes);
    std::memcpy(samp_host_[par].get(), params, pbytes);
    char* dev = samp_dev_.as<char>();
    char* host = samp_host_[par].as<char>();
    FS_CUDA(cudaMemcpyAsync(dev, host, pbytes, cudaMemcpyHostToDevice, st));
    int32_t* d_ids = reinterpret_cast<int32_t*>(dev + pbytes);
    float* d_lp = reinterpret_cast<float*>(dev + pbytes + static_cast<size_t>(n) * sizeof(int32_t));
    launch_sample_rows(static_cast<const float*>(logits.data), n, logits.cols,
                       reinterpret_cast<const RowSampling*>(dev), d_ids,
                       want_logprobs ? d_lp : nullptr, st);
    FS_CUDA(cudaMemcpyAsync(host + pbytes, dev + pbytes, want_logprobs ? obytes : obytes / 2,
                            cudaMemcpyDeviceToHost, st));
    FS_CUDA(cudaEventRecord(samp_ev_[par]->get(), st));
    samp_last_ids_ = d_ids;
    samp_last_rows_ = n;
}

void CudaBackend::sample_rows_collect(int32_t* ids, float* logprobs) {
    FS_CHECK(!samp_pending_.empty(), "sample_rows_collect: nothing outstanding");
    const SampPending p = samp_pending_.front();
    samp_pending_.pop_front();
    if (p.rows == 0) return;
    FS_CHECK(!logprobs || p.logprobs, "sample_rows_collect: logprobs were not asked for");
    FS_CUDA(cudaEventSynchronize(samp_ev_[p.parity]->get()));
    const char* host = samp_host_[p.parity].as<char>() + static_cast<size_t>(p.rows) * sizeof(RowSampling);
    std::memcpy(ids, host, static_cast<size_t>(p.rows) * sizeof(int32_t));
    if (logprobs)
        std::memcpy(logprobs, host + static_cast<size_t>(p.rows) * sizeof(int32_t),
                    static_cast<size_t>(p.rows) * sizeof(float));
}

double median(std::vector<float> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

}  // namespace
}  // namespace cuda

namespace cuda {
bool pdl_enabled() {
    static const bool on = [] {
        const char* e = std::getenv("FARSIGHT_PDL");
        if (e && e[0] == '0') return false;
        int dev = 0, major = 0;
        if (cudaGetDevice(&dev) != cudaSuccess ||
            cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
            cudaGetLastError();
            return false;
        }
        return major >= 9;
    }();
    return on;
}
}  // namespace cuda

bool cuda_available() {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
        cudaGetLastError();
        return false;
    }
    return count > 0;
}

std::unique_ptr<Backend> make_cuda_backend_with(int device, DType activation_dtype) {
    return std::make_unique<cuda::CudaBackend>(device, activation_dtype);
}

CudaGraphStats cuda_graph_stats(const Backend& backend) {
    const auto* b = dynamic_cast<const cuda::CudaBackend*>(&backend);
    return b ? b->graph_stats() : CudaGraphStats{};
}

std::unique_ptr<Backend> make_cuda_backend(int device) {
    return make_cuda_backend_with(device, DType::BF16);
}

DeviceRoofline measure_device_roofline(int device) {
    using namespace cuda;
    FS_CHECK(cuda_available(), "no CUDA device available for the roofline measurement");
    FS_CUDA(cudaSetDevice(device));
    cudaDeviceProp props{};
    FS_CUDA(cudaGetDeviceProperties(&props, device));
    DeviceRoofline r;
    r.device_name = props.name;
    r.total_mem = props.totalGlobalMem;
    Stream stream;
    cudaStream_t st = stream.get();
    Event e0, e1;
    // copy: 1 GiB each way (or a quarter of memory on small devices)
    size_t bytes = std::min<size_t>(size_t(1) << 30, props.totalGlobalMem / 8);
    {
        DeviceBuffer a(bytes), b(bytes);
        launch_fill_random(DType::F32, a.get(), bytes / 4, 1, 1.0f, st);
        for (int i = 0; i < 3; ++i)
            FS_CUDA(cudaMemcpyAsync(b.get(), a.get(), bytes, cudaMemcpyDeviceToDevice, st));
        std::vector<float> ms;
        for (int i = 0; i < 10; ++i) {
            FS_CUDA(cudaEventRecord(e0.get(), st));
            FS_CUDA(cudaMemcpyAsync(b.get(), a.get(), bytes, cudaMemcpyDeviceToDevice, st));
            FS_CUDA(cudaEventRecord(e1.get(), st));
            FS_CUDA(cudaEventSynchronize(e1.get()));
            float t = 0;
            FS_CUDA(cudaEventElapsedTime(&t, e0.get(), e1.get()));
            ms.push_back(t);
        }
        r.copy_gbps = 2.0 * bytes / (median(ms) * 1e-3) / 1e9;
    }
    {
        const int64_t n = 8192;
        const size_t elems = static_cast<size_t>(n * n);
        DeviceBuffer a(elems * 2), b(elems * 2), c(elems * 2), ws(kLtWorkspace);
        launch_fill_random(DType::BF16, a.get(), elems, 2, 1.0f, st);
        launch_fill_random(DType::BF16, b.get(), elems, 3, 1.0f, st);
        LtHandle h;
        auto plan = make_lt_plan(h.get(), DType::BF16, n, n, n, false, 256, 256, 256, ws.size(),
                                 DType::BF16);
        for (int i = 0; i < 3; ++i)
            lt_run(h.get(), *plan, a.get(), b.get(), nullptr, c.get(), ws.get(), ws.size(), st);
        std::vector<float> ms;
        for (int i = 0; i < 10; ++i) {
            FS_CUDA(cudaEventRecord(e0.get(), st));
            lt_run(h.get(), *plan, a.get(), b.get(), nullptr, c.get(), ws.get(), ws.size(), st);
            FS_CUDA(cudaEventRecord(e1.get(), st));
            FS_CUDA(cudaEventSynchronize(e1.get()));
            float t = 0;
            FS_CUDA(cudaEventElapsedTime(&t, e0.get(), e1.get()));
            ms.push_back(t);
        }
        r.bf16_gemm_tflops = 2.0 * n * n * n / (median(ms) * 1e-3) / 1e12;
    }
    FS_CUDA(cudaStreamSynchronize(st));
    return r;
}

}  // namespace farsight

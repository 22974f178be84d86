#include "engine/session.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "core/error.h"
#include "io/hf_cache.h"
#include "model/random_weights.h"
#include "model/rope.h"

namespace farsight {

namespace {

ProgressFn progress_bar() {
    auto last = std::make_shared<int>(-1);
    return [last](size_t done, size_t total) {
        if (total < (size_t(64) << 20)) return;  // small models load instantly
        const int pct = total ? static_cast<int>(100.0 * static_cast<double>(done) / static_cast<double>(total)) : 100;
        if (pct == *last) return;
        *last = pct;
        const int w = 30, filled = pct * w / 100;
        std::fprintf(stderr, "\rloading weights [%.*s%*s] %3d%% (%.2f / %.2f GB)", filled,
                     "##############################", w - filled, "", pct,
                     static_cast<double>(done) / 1e9, static_cast<double>(total) / 1e9);
        if (pct >= 100) std::fprintf(stderr, "\n");
    };
}

}  // namespace

Session::Session(const LoadOptions& o) {
    const auto t0 = std::chrono::steady_clock::now();
    std::optional<DType> wdtype;
    if (o.dtype != "auto") {
        DType d;
        FS_CHECK(parse_dtype(o.dtype, &d), "unknown --dtype \"{}\" (use auto, f32, f16 or bf16)", o.dtype);
        wdtype = d;
    }
    ModelConfig cfg;
    if (!o.dummy.empty()) {
        if (auto p = preset_config(o.dummy)) cfg = *p;
        else if (std::filesystem::exists(o.dummy)) cfg = parse_model_config(std::filesystem::path(o.dummy));
        else {
            std::string names;
            for (const auto& n : preset_names()) names += " " + n;
            fail("--dummy \"{}\" is neither a preset nor a config.json file (presets:{})", o.dummy, names);
        }
    } else {
        FS_CHECK(!o.model.empty(), "no model given (use -m MODEL_DIR_OR_REPO_ID or --dummy PRESET)");
        model_dir_ = resolve_model_path(o.model);
        cfg = parse_model_config(o.config.empty() ? model_dir_ / "config.json" : std::filesystem::path(o.config));
    }
    if (o.device == "cpu") {
        backend_ = make_cpu_backend(o.threads);
    } else if (o.device == "cuda" || o.device.rfind("cuda:", 0) == 0) {
        // GPU activations are 16-bit: the model's own 16-bit type, f16 for f32 models (more
        // mantissa than bf16), or what --dtype asks for.
        FS_CHECK(!wdtype || *wdtype != DType::F32,
                 "the CUDA backend computes in bf16 or f16 (--dtype bf16|f16), not f32");
        const DType want = wdtype.value_or(cfg.dtype);
        backend_ = make_cuda_backend_with(o.device.size() > 5 ? std::stoi(o.device.substr(5)) : 0,
                                          want == DType::BF16 ? DType::BF16 : DType::F16);
    } else {
        fail("unknown device \"{}\" (use cpu or cuda[:N])", o.device);
    }
    if (!o.dummy.empty()) weights_ = make_random_weights(cfg, wdtype.value_or(cfg.dtype), o.seed);
    else weights_ = open_safetensors_folder(model_dir_);
    model_ = std::make_unique<Model>(cfg, weights_, *backend_, wdtype,
                                     o.progress ? progress_bar() : ProgressFn{});

    block_size_ = o.block_size;
    FS_CHECK(block_size_ > 0, "block size must be positive");
    max_model_len_ = o.max_model_len > 0 ? o.max_model_len : cfg.context_length();
    KVLayout kv;
    kv.num_layers = cfg.num_layers;
    kv.block_size = block_size_;
    kv.num_kv_heads = cfg.num_kv_heads;
    kv.head_dim = cfg.head_dim;
    kv.dtype = backend_->activation_dtype();
    int64_t tokens = o.kv_tokens;
    if (tokens <= 0) {
        // Enough for a few full-length sequences, within a share of free memory.
        const double frac = backend_->kind() == DeviceKind::CPU ? 0.25 : o.gpu_memory_fraction;
        const double budget = static_cast<double>(backend_->free_memory()) * frac;
        const int64_t by_mem = static_cast<int64_t>(budget / static_cast<double>(kv.bytes_per_block())) * block_size_;
        tokens = std::min<int64_t>(4 * max_model_len_, by_mem);
        FS_CHECK(tokens >= block_size_, "not enough memory for a KV cache ({} bytes per block)",
                 kv.bytes_per_block());
    }
    kv.num_blocks = (tokens + block_size_ - 1) / block_size_;
    backend_->init_kv(kv);
    pool_ = BlockPool(kv.num_blocks);
    if (!rope_depends_on_length(cfg)) static_rope_ = rope_freqs(cfg, 0);
    load_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

Session::~Session() = default;

void Session::build_meta(std::span<SeqStep> steps) {
    const ModelConfig& cfg = config();
    BatchMeta& m = meta_;
    m.tokens.clear();
    m.positions.clear();
    m.slot_mapping.clear();
    m.seqs.clear();
    m.block_tables.clear();
    m.logit_rows.clear();
    m.rope.clear();
    m.max_context_len = 0;
    m.tokens_from_last_sample = false;
    if (static_rope_) m.rope.push_back(*static_rope_);
    for (SeqStep& s : steps) {
        FS_CHECK(s.table && !s.tokens.empty(), "forward: empty sequence step");
        const int64_t n_past = s.table->num_cached();
        const int64_t n = static_cast<int64_t>(s.tokens.size());
        FS_CHECK(n_past + n <= max_model_len_,
                 "sequence of {} tokens exceeds the maximum model length {} (--max-model-len)",
                 n_past + n, max_model_len_);
        s.table->reserve(pool_, n_past + n, block_size_);
        SeqSlice sl;
        sl.q_start = static_cast<int32_t>(m.tokens.size());
        sl.q_len = static_cast<int32_t>(n);
        sl.n_past = static_cast<int32_t>(n_past);
        sl.block_table_offset = static_cast<int32_t>(m.block_tables.size());
        sl.n_blocks = static_cast<int32_t>(s.table->blocks().size());
        if (static_rope_) {
            sl.rope_variant = 0;
        } else {
            RopeFreqs rf = rope_freqs(cfg, n_past + n);
            int32_t idx = -1;
            for (size_t i = 0; i < m.rope.size(); ++i)
                if (m.rope[i].inv_freq == rf.inv_freq && m.rope[i].attention_scaling == rf.attention_scaling)
                    idx = static_cast<int32_t>(i);
            if (idx < 0) {
                idx = static_cast<int32_t>(m.rope.size());
                m.rope.push_back(std::move(rf));
            }
            sl.rope_variant = idx;
        }
        m.block_tables.insert(m.block_tables.end(), s.table->blocks().begin(), s.table->blocks().end());
        for (int64_t j = 0; j < n; ++j) {
            const int32_t tok = s.tokens[static_cast<size_t>(j)];
            FS_CHECK(tok >= 0 && tok < cfg.vocab_size, "token id {} is outside the vocabulary [0, {})",
                     tok, cfg.vocab_size);
            m.tokens.push_back(tok);
            m.positions.push_back(static_cast<int32_t>(n_past + j));
            m.slot_mapping.push_back(s.table->slot(n_past + j, block_size_));
            if (s.all_logits || j == n - 1) m.logit_rows.push_back(static_cast<int32_t>(m.tokens.size() - 1));
        }
        m.max_context_len = std::max<int32_t>(m.max_context_len, static_cast<int32_t>(n_past + n));
        m.seqs.push_back(sl);
    }
}

std::vector<float> Session::forward(std::span<SeqStep> steps) {
    FS_CHECK(outstanding_.empty(), "forward: {} pipelined steps are still outstanding",
             outstanding_.size());
    build_meta(steps);
    std::vector<float> logits(meta_.logit_rows.size() * static_cast<size_t>(config().vocab_size));
    model_->forward(meta_, logits.data());
    for (SeqStep& s : steps) s.table->set_cached(s.table->num_cached() + static_cast<int64_t>(s.tokens.size()));
    return logits;
}

std::vector<int32_t> Session::forward_sample(std::span<SeqStep> steps, std::span<const RowSampling> params,
                                             std::vector<float>* logprobs) {
    FS_CHECK(params.size() == steps.size(), "forward_sample: {} sequences but {} parameter sets",
             steps.size(), params.size());
    for (const SeqStep& s : steps)
        FS_CHECK(!s.all_logits, "forward_sample: a sequence asks for all logits (use forward)");
    FS_CHECK(outstanding_.empty(), "forward_sample: {} pipelined steps are still outstanding",
             outstanding_.size());
    build_meta(steps);
    Tensor lg = model_->forward_device(meta_);
    for (SeqStep& s : steps) s.table->set_cached(s.table->num_cached() + static_cast<int64_t>(s.tokens.size()));
    std::vector<int32_t> ids(steps.size());
    if (logprobs) logprobs->assign(steps.size(), 0.0f);
    backend_->sample_rows(lg, params.data(), ids.data(), logprobs ? logprobs->data() : nullptr);
    return ids;
}

void Session::forward_sample_enqueue(std::span<SeqStep> steps, std::span<const RowSampling> params,
                                     bool tokens_from_previous, bool want_logprobs) {
    FS_CHECK(params.size() == steps.size(), "forward_sample: {} sequences but {} parameter sets",
             steps.size(), params.size());
    FS_CHECK(outstanding_.size() < 2, "forward_sample_enqueue: two steps are already outstanding");
    for (const SeqStep& s : steps)
        FS_CHECK(!s.all_logits, "forward_sample: a sequence asks for all logits (use forward)");
    const bool feed = tokens_from_previous && backend_->sample_feed();
    std::vector<SeqStep> fed;  // without a device feed: the previous ids, from the host
    if (tokens_from_previous) {
        FS_CHECK(!outstanding_.empty() && outstanding_.back().rows == steps.size(),
                 "forward_sample_enqueue: the step takes its tokens from the previous one, which "
                 "sampled {} rows for {} sequences",
                 outstanding_.empty() ? 0 : outstanding_.back().rows, steps.size());
        for (const SeqStep& s : steps)
            FS_CHECK(s.tokens.size() == 1,
                     "forward_sample_enqueue: a step fed by the previous one has one token per "
                     "sequence");
        if (!feed) {
            const Outstanding& prev = outstanding_.back();
            fed.assign(steps.begin(), steps.end());
            for (size_t i = 0; i < fed.size(); ++i)
                fed[i].tokens = std::span<const int32_t>(&prev.ids[i], 1);
            steps = fed;
        }
    }
    build_meta(steps);
    meta_.tokens_from_last_sample = feed;
    Tensor lg = model_->forward_device(meta_);
    for (SeqStep& s : steps) s.table->set_cached(s.table->num_cached() + static_cast<int64_t>(s.tokens.size()));
    Outstanding o;
    o.rows = steps.size();
    o.logprobs = want_logprobs;
    if (backend_->sample_feed()) {
        backend_->sample_rows_enqueue(lg, params.data(), want_logprobs);
    } else {  // sampled now: the next step takes the ids from the host
        o.ids.resize(o.rows);
        if (want_logprobs) o.lps.resize(o.rows);
        backend_->sample_rows(lg, params.data(), o.ids.data(), want_logprobs ? o.lps.data() : nullptr);
        o.ready = true;
    }
    outstanding_.push_back(std::move(o));
}

std::vector<int32_t> Session::forward_sample_collect(std::vector<float>* logprobs) {
    FS_CHECK(!outstanding_.empty(), "forward_sample_collect: no step is outstanding");
    FS_CHECK(!logprobs || outstanding_.front().logprobs,
             "forward_sample_collect: the step was queued without logprobs");
    Outstanding o = std::move(outstanding_.front());
    outstanding_.pop_front();
    if (!o.ready) {
        o.ids.resize(o.rows);
        if (o.logprobs) o.lps.resize(o.rows);
        backend_->sample_rows_collect(o.ids.data(), o.logprobs ? o.lps.data() : nullptr);
    }
    if (logprobs) *logprobs = std::move(o.lps);
    return std::move(o.ids);
}

bool Session::pipelined_decode() const {
    static const bool enabled = [] {
        const char* e = std::getenv("FARSIGHT_PIPELINE");
        return !(e && e[0] == '0');
    }();
    return enabled && device_sampling();
}

bool Session::device_sampling() const {
    static const bool enabled = [] {
        const char* e = std::getenv("FARSIGHT_DEVICE_SAMPLING");
        return !(e && e[0] == '0');
    }();
    return enabled && backend_->prefers_device_sampling();
}

std::vector<float> Session::score(std::span<const int32_t> ids) {
    BlockTable table;
    SeqStep step{&table, ids, true};
    std::vector<float> out;
    try {
        out = forward(std::span<SeqStep>(&step, 1));
    } catch (...) {
        table.release(pool_);
        throw;
    }
    table.release(pool_);
    return out;
}

}  // namespace farsight

// farsight bench: decode/prefill throughput next to the memory-bandwidth roofline measured in
// the same run.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "backend/cpu/matmul.h"
#include "cli/command.h"
#include "cli/common.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "engine/session.h"
#ifdef FARSIGHT_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif

namespace farsight::cli {
namespace {

struct BenchOpts {
    LoadOptions load;
    // GPU sweep (device cuda)
    std::vector<int> prefill_lens = {512, 2048, 8192, 32768};
    std::vector<int> decode_ctxs = {128, 8192, 32768};
    std::vector<int> decode_batches = {1, 8, 32, 64};
    int batch_ctx = 1024;
    std::string commit;
    int prompt = 64;
    int decode = 32;
    std::vector<int> batches = {1};
    std::string json_out;
    size_t bw_bytes_mb = 1024;
    bool logits_readback =
        false;  // decode steps read the logits back instead of sampling greedily on the device
};

double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

std::string iso_date() {
    std::time_t t = std::time(nullptr);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
    return buf;
}

void write_json(const BenchOpts& o, const nlohmann::json& out) {
    if (o.json_out.empty()) return;
    std::ofstream f(o.json_out);
    FS_CHECK(f.good(), "cannot write {}", o.json_out);
    f << out.dump(2) << "\n";
    fmt::print("wrote {}\n", o.json_out);
}

// FLOPs of a forward over n new tokens after `past` cached ones: 2 per weight per token
// (embedding excluded) plus causal attention (q.k and p.v).
[[maybe_unused]] double forward_flops(const ModelConfig& c, int64_t n, int64_t past) {
    const double H = static_cast<double>(c.hidden_size),
                 I = static_cast<double>(c.intermediate_size);
    const double Q = static_cast<double>(c.q_dim()), KV = static_cast<double>(c.kv_dim());
    const double per_layer = H * (Q + 2 * KV) + Q * H + 3 * H * I;
    const double matmul =
        2.0 * n *
        (static_cast<double>(c.num_layers) * per_layer + H * static_cast<double>(c.vocab_size));
    // keys seen by query i: past + i + 1
    const double keys =
        static_cast<double>(n) * static_cast<double>(past) + static_cast<double>(n) * (n + 1) / 2.0;
    const double attn = 2.0 * 2.0 * static_cast<double>(c.num_layers) *
                        static_cast<double>(c.num_heads) * static_cast<double>(c.head_dim) * keys;
    return matmul + attn;
}

// Decode steps as a server runs them: greedy sampling on the backend, only ids come back
// (unless --logits-readback, FARSIGHT_DEVICE_SAMPLING=0 or a backend that reads logits back).
// Records which in out["decode_sampling"].
class DecodeStep {
  public:
    DecodeStep(Session& s, bool logits_readback, nlohmann::json& out)
        : s_(s),
          on_device_(!logits_readback && s.device_sampling()),
          pipelined_(on_device_ && s.pipelined_decode()) {
        out["decode_sampling"] = on_device_ ? "device_greedy" : "logits_readback";
        out["decode_pipelined"] = pipelined_;
    }
    // Pipelined (Session::forward_sample_enqueue): each step after the first takes its tokens
    // from the step before on the device and is queued before that step's ids are read back.
    bool pipelined() const { return pipelined_; }
    void enqueue(std::span<SeqStep> steps, bool from_previous) {
        rows_.assign(steps.size(), RowSampling{});
        s_.forward_sample_enqueue(steps, rows_, from_previous);
    }
    void collect() { (void)s_.forward_sample_collect(); }
    void operator()(std::span<SeqStep> steps) {
        if (!on_device_) {
            (void)s_.forward(steps);
            return;
        }
        rows_.assign(steps.size(), RowSampling{});
        (void)s_.forward_sample(steps, rows_);
    }

  private:
    Session& s_;
    bool on_device_, pipelined_;
    std::vector<RowSampling> rows_;
};

int run_bench_gpu(const BenchOpts& o, nlohmann::json& out) {
#ifndef FARSIGHT_HAVE_CUDA
    (void)o;
    (void)out;
    fail("bench --device {}: this farsight was built without CUDA", o.load.device);
#else
    const DeviceRoofline roof = measure_device_roofline(0);
    out["device_name"] = roof.device_name;
    out["commit"] = o.commit;
    out["roofline"] = {{"copy_gbps_read_plus_write", roof.copy_gbps},
                       {"bf16_gemm_tflops", roof.bf16_gemm_tflops},
                       {"total_mem_bytes", roof.total_mem}};
    fmt::print("device: {} | copy {:.0f} GB/s (read+write) | bf16 GEMM {:.0f} TFLOP/s\n",
               roof.device_name, roof.copy_gbps, roof.bf16_gemm_tflops);
    LoadOptions lo = o.load;
    lo.progress = true;
    if (lo.max_model_len == 0) {
        int m = 0;
        for (int x : o.prefill_lens) m = std::max(m, x);
        for (int x : o.decode_ctxs) m = std::max(m, x + o.decode + 8);
        if (!o.decode_batches.empty()) m = std::max(m, o.batch_ctx + o.decode + 8);
        lo.max_model_len = m;
    }
    Session s(lo);
    const ModelConfig& c = s.config();
    Backend& be = s.backend();
    size_t min_free = be.free_memory();
    auto track = [&] { min_free = std::min(min_free, be.free_memory()); };
    DecodeStep decode_step(s, o.logits_readback, out);
    out["load_seconds"] = s.load_seconds();
    out["weights_bytes"] = s.model().weight_bytes();
    out["kv_capacity_tokens"] = s.kv_capacity_tokens();
    fmt::print("model: {} ({:.2f} GB of {} weights), KV cache {} tokens, loaded in {:.1f} s\n",
               out["model"].get<std::string>(), static_cast<double>(s.model().weight_bytes()) / 1e9,
               dtype_name(s.model().weight_dtype()), s.kv_capacity_tokens(), s.load_seconds());
    std::mt19937 rng(1);
    std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(c.vocab_size) - 1);
    auto ids = [&](int n) {
        std::vector<int32_t> v(static_cast<size_t>(n));
        for (auto& x : v) x = tok(rng);
        return v;
    };

    // ---- prefill ----
    nlohmann::json pre = nlohmann::json::array();
    for (int n : o.prefill_lens) {
        if (n > s.kv_capacity_tokens() || n > s.max_model_len()) continue;
        const auto p = ids(n);
        double best = 1e30;
        for (int rep = 0; rep < 2; ++rep) {  // first run warms up (plans, allocator)
            BlockTable t;
            SeqStep st{&t, p, false};
            be.synchronize();
            const double t0 = now_s();
            s.forward(std::span<SeqStep>(&st, 1));
            be.synchronize();
            best = std::min(best, now_s() - t0);
            track();
            t.release(s.pool());
        }
        const double flops = forward_flops(c, n, 0);
        const double mfu = 100.0 * flops / best / (roof.bf16_gemm_tflops * 1e12);
        fmt::print(
            "prefill {:6d} tokens: {:8.3f} s  {:9.0f} tok/s  MFU {:5.1f}% of measured bf16 GEMM "
            "rate\n",
            n, best, n / best, mfu);
        pre.push_back({{"tokens", n},
                       {"seconds", best},
                       {"tok_s", n / best},
                       {"model_tflop", flops / 1e12},
                       {"mfu_pct", mfu}});
    }
    out["prefill"] = pre;

    // ---- decode: contexts are filled without computing them (timing depends only on lengths) ----
    auto decode_run = [&](int B, int ctx) -> nlohmann::json {
        if (static_cast<int64_t>(B) * (ctx + o.decode + 4) > s.kv_capacity_tokens() ||
            ctx + o.decode + 4 > s.max_model_len())
            return nullptr;
        std::vector<BlockTable> tables(static_cast<size_t>(B));
        for (auto& t : tables) {
            t.reserve(s.pool(), ctx, s.block_size());
            t.set_cached(ctx);
        }
        std::vector<int32_t> last(static_cast<size_t>(B));
        std::vector<double> times;
        auto make_steps = [&] {
            std::vector<SeqStep> steps;
            for (int b = 0; b < B; ++b) {
                last[static_cast<size_t>(b)] = tok(rng);
                steps.push_back({&tables[static_cast<size_t>(b)],
                                 std::span<const int32_t>(&last[static_cast<size_t>(b)], 1),
                                 false});
            }
            return steps;
        };
        if (decode_step.pipelined()) {
            // a step's time: from one read-back of ids to the next (steady state)
            std::vector<double> marks;
            for (int i = 0; i < o.decode + 4; ++i) {
                auto steps = make_steps();  // tokens after the first: fed on the device
                decode_step.enqueue(steps, i > 0);
                if (i > 0) {
                    decode_step.collect();
                    marks.push_back(now_s());
                }
            }
            decode_step.collect();
            marks.push_back(now_s());
            for (size_t k = 3; k < marks.size(); ++k) times.push_back(marks[k] - marks[k - 1]);
        } else {
            for (int i = 0; i < o.decode + 3; ++i) {
                auto steps = make_steps();
                const double t0 = now_s();
                decode_step(steps);  // reads back the ids or the logits: includes the device sync
                if (i >= 3) times.push_back(now_s() - t0);
            }
        }
        track();
        for (auto& t : tables) t.release(s.pool());
        std::sort(times.begin(), times.end());
        const double med = times[times.size() / 2];
        const int64_t mid = ctx + o.decode / 2;
        const double kv =
            static_cast<double>(s.model().decode_bytes(mid) - s.model().decode_bytes(0));
        const double bytes = static_cast<double>(s.model().decode_bytes(0)) + B * kv;
        // roofline: reading those bytes once at the measured copy bandwidth
        const double roof_s = bytes / (roof.copy_gbps * 1e9);
        const double pct = 100.0 * roof_s / med;
        fmt::print(
            "decode batch {:3d} ctx {:6d}: {:8.1f} tok/s ({:7.3f} ms/step) | {:6.0f} GB/s | "
            "{:5.1f}% of roofline\n",
            B, ctx, B / med, med * 1e3, bytes / med / 1e9, pct);
        return {{"batch", B},
                {"context", ctx},
                {"tok_s", B / med},
                {"step_ms", med * 1e3},
                {"bytes_per_step", bytes},
                {"gbps", bytes / med / 1e9},
                {"pct_of_roofline", pct}};
    };
    nlohmann::json dec = nlohmann::json::array();
    for (int ctx : o.decode_ctxs)
        if (auto r = decode_run(1, ctx); !r.is_null()) dec.push_back(r);
    for (int B : o.decode_batches)
        if (auto r = decode_run(B, o.batch_ctx); !r.is_null()) dec.push_back(r);
    out["decode"] = dec;
    out["peak_device_memory_bytes"] = roof.total_mem - min_free;
    fmt::print("peak device memory in use: {:.2f} GB of {:.2f} GB\n",
               static_cast<double>(roof.total_mem - min_free) / 1e9,
               static_cast<double>(roof.total_mem) / 1e9);
    write_json(o, out);
    return 0;
#endif
}

int run_bench(const BenchOpts& o) {
    nlohmann::json out;
    out["date"] = iso_date();
    out["model"] = o.load.dummy.empty() ? o.load.model : "dummy:" + o.load.dummy;
    out["device"] = o.load.device;
    double copy_gbps = 0;
    if (o.load.device == "cpu") {
        ThreadPool pool(o.load.threads);
        const size_t bytes = o.bw_bytes_mb << 20;
        copy_gbps = cpu::measure_copy_bandwidth(pool, bytes);
        const double read_gbps = cpu::measure_read_bandwidth(pool, bytes);
        out["roofline"] = {{"copy_gbps_read_plus_write", copy_gbps},
                           {"read_gbps", read_gbps},
                           {"threads", pool.size()}};
        fmt::print(
            "memory bandwidth: copy {:.2f} GB/s (read+write), read {:.2f} GB/s ({} threads)\n",
            copy_gbps, read_gbps, pool.size());
    } else {
        return run_bench_gpu(o, out);
    }

    LoadOptions lo = o.load;
    const int maxb = *std::max_element(o.batches.begin(), o.batches.end());
    if (lo.kv_tokens == 0) lo.kv_tokens = static_cast<int64_t>(maxb) * (o.prompt + o.decode + 16);
    lo.progress = true;
    Session s(lo);
    const ModelConfig& c = s.config();
    DecodeStep decode_step(s, o.logits_readback, out);
    out["load_seconds"] = s.load_seconds();
    out["weights_bytes"] = s.model().weight_bytes();
    out["weight_dtype"] = std::string(dtype_name(s.model().weight_dtype()));
    out["backend"] = s.backend().device_description();
    fmt::print("model: {} {} ({:.2f} GB of {} weights) on {}, loaded in {:.1f} s\n", c.architecture,
               out["model"].get<std::string>(), static_cast<double>(s.model().weight_bytes()) / 1e9,
               dtype_name(s.model().weight_dtype()), s.backend().device_description(),
               s.load_seconds());

    std::mt19937 rng(1);
    std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(c.vocab_size) - 1);
    nlohmann::json runs = nlohmann::json::array();
    for (int B : o.batches) {
        std::vector<BlockTable> tables(static_cast<size_t>(B));
        std::vector<std::vector<int32_t>> prompts(static_cast<size_t>(B));
        for (auto& p : prompts) {
            p.resize(static_cast<size_t>(o.prompt));
            for (auto& x : p) x = tok(rng);
        }
        // prefill
        std::vector<SeqStep> steps;
        for (int b = 0; b < B; ++b)
            steps.push_back(
                {&tables[static_cast<size_t>(b)], prompts[static_cast<size_t>(b)], false});
        double t0 = now_s();
        s.forward(steps);
        s.backend().synchronize();
        const double prefill_s = now_s() - t0;
        // decode
        std::vector<int32_t> last(static_cast<size_t>(B));
        std::vector<double> step_s;
        for (int i = 0; i < o.decode; ++i) {
            steps.clear();
            for (int b = 0; b < B; ++b) {
                last[static_cast<size_t>(b)] = tok(rng);
                steps.push_back({&tables[static_cast<size_t>(b)],
                                 std::span<const int32_t>(&last[static_cast<size_t>(b)], 1),
                                 false});
            }
            t0 = now_s();
            decode_step(steps);
            s.backend().synchronize();
            step_s.push_back(now_s() - t0);
        }
        for (auto& t : tables) t.release(s.pool());
        std::vector<double> sorted = step_s;
        std::sort(sorted.begin(), sorted.end());
        const double med = sorted[sorted.size() / 2];
        const int64_t mid_ctx = o.prompt + o.decode / 2;
        // Weights are read once per step for the whole batch; KV per sequence.
        const double bytes =
            static_cast<double>(s.model().decode_bytes(mid_ctx)) +
            static_cast<double>(B - 1) *
                static_cast<double>(s.model().decode_bytes(mid_ctx) - s.model().decode_bytes(0));
        const double tok_s = B / med;
        const double gbps = bytes / med / 1e9;
        const double pct = 100.0 * gbps / copy_gbps;
        fmt::print(
            "batch {:3d} | prefill {} tok: {:8.1f} tok/s | decode: {:8.2f} tok/s ({:6.1f} ms/step) "
            "| "
            "{:6.2f} GB/s = {:5.1f}% of copy bandwidth\n",
            B, o.prompt, B * o.prompt / prefill_s, tok_s, med * 1e3, gbps, pct);
        runs.push_back({{"batch", B},
                        {"prompt_tokens", o.prompt},
                        {"decode_steps", o.decode},
                        {"prefill_tok_s", B * o.prompt / prefill_s},
                        {"decode_tok_s", tok_s},
                        {"decode_step_ms_median", med * 1e3},
                        {"decode_bytes_per_step", bytes},
                        {"decode_gbps", gbps},
                        {"pct_of_copy_bandwidth", pct}});
    }
    out["runs"] = runs;
    write_json(o, out);
    return 0;
}

Register reg(
    "bench", "Measure prefill/decode throughput against the memory-bandwidth roofline",
    [](CLI::App& app) -> RunFn {
        auto o = std::make_shared<BenchOpts>();
        add_model_options(app, o->load);
        app.add_option("--prompt", o->prompt, "Prompt tokens per sequence")->capture_default_str();
        app.add_option("--decode", o->decode, "Decode steps to time")->capture_default_str();
        app.add_option("--batch", o->batches, "Batch sizes to run (several allowed)")
            ->capture_default_str();
        app.add_option("--bw-mb", o->bw_bytes_mb, "Buffer size (MiB) of the bandwidth measurement")
            ->capture_default_str();
        app.add_option("--json", o->json_out, "Write the results as JSON to this file");
        app.add_option("--prefill-lens", o->prefill_lens, "GPU: prompt lengths to time prefill at")
            ->capture_default_str();
        app.add_option("--decode-ctx", o->decode_ctxs, "GPU: contexts for batch-1 decode")
            ->capture_default_str();
        app.add_option("--decode-batches", o->decode_batches,
                       "GPU: batch sizes for decode at --batch-ctx")
            ->capture_default_str();
        app.add_option("--batch-ctx", o->batch_ctx, "GPU: context of the batched decode runs")
            ->capture_default_str();
        app.add_option("--commit", o->commit, "Commit id recorded in the JSON");
        app.add_flag("--logits-readback", o->logits_readback,
                     "Decode steps read every logit row back (the old measurement) instead of "
                     "sampling greedily on the device (only ids come back; CUDA)");
        return [o] { return run_bench(*o); };
    });

}  // namespace
}  // namespace farsight::cli

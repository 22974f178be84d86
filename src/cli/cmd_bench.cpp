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

namespace farsight::cli {
namespace {

struct BenchOpts {
    LoadOptions load;
    int prompt = 64;
    int decode = 32;
    std::vector<int> batches = {1};
    std::string json_out;
    size_t bw_bytes_mb = 1024;
};

double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string iso_date() {
    std::time_t t = std::time(nullptr);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
    return buf;
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
        out["roofline"] = {{"copy_gbps_read_plus_write", copy_gbps}, {"read_gbps", read_gbps},
                           {"threads", pool.size()}};
        fmt::print("memory bandwidth: copy {:.2f} GB/s (read+write), read {:.2f} GB/s ({} threads)\n",
                   copy_gbps, read_gbps, pool.size());
    } else {
        fail("bench on {}: the CUDA benchmark is not built into this binary", o.load.device);
    }

    LoadOptions lo = o.load;
    const int maxb = *std::max_element(o.batches.begin(), o.batches.end());
    if (lo.kv_tokens == 0) lo.kv_tokens = static_cast<int64_t>(maxb) * (o.prompt + o.decode + 16);
    lo.progress = true;
    Session s(lo);
    const ModelConfig& c = s.config();
    out["load_seconds"] = s.load_seconds();
    out["weights_bytes"] = s.model().weight_bytes();
    out["weight_dtype"] = std::string(dtype_name(s.model().weight_dtype()));
    out["backend"] = s.backend().device_description();
    fmt::print("model: {} {} ({:.2f} GB of {} weights) on {}, loaded in {:.1f} s\n", c.architecture,
               out["model"].get<std::string>(), static_cast<double>(s.model().weight_bytes()) / 1e9,
               dtype_name(s.model().weight_dtype()), s.backend().device_description(), s.load_seconds());

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
        for (int b = 0; b < B; ++b) steps.push_back({&tables[static_cast<size_t>(b)], prompts[static_cast<size_t>(b)], false});
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
                steps.push_back({&tables[static_cast<size_t>(b)], std::span<const int32_t>(&last[static_cast<size_t>(b)], 1), false});
            }
            t0 = now_s();
            s.forward(steps);
            s.backend().synchronize();
            step_s.push_back(now_s() - t0);
        }
        for (auto& t : tables) t.release(s.pool());
        std::vector<double> sorted = step_s;
        std::sort(sorted.begin(), sorted.end());
        const double med = sorted[sorted.size() / 2];
        const int64_t mid_ctx = o.prompt + o.decode / 2;
        // Weights are read once per step for the whole batch; KV per sequence.
        const double bytes = static_cast<double>(s.model().decode_bytes(mid_ctx)) +
                             static_cast<double>(B - 1) * static_cast<double>(s.model().decode_bytes(mid_ctx) - s.model().decode_bytes(0));
        const double tok_s = B / med;
        const double gbps = bytes / med / 1e9;
        const double pct = 100.0 * gbps / copy_gbps;
        fmt::print("batch {:3d} | prefill {} tok: {:8.1f} tok/s | decode: {:8.2f} tok/s ({:6.1f} ms/step) | "
                   "{:6.2f} GB/s = {:5.1f}% of copy bandwidth\n",
                   B, o.prompt, B * o.prompt / prefill_s, tok_s, med * 1e3, gbps, pct);
        runs.push_back({{"batch", B}, {"prompt_tokens", o.prompt}, {"decode_steps", o.decode},
                        {"prefill_tok_s", B * o.prompt / prefill_s}, {"decode_tok_s", tok_s},
                        {"decode_step_ms_median", med * 1e3}, {"decode_bytes_per_step", bytes},
                        {"decode_gbps", gbps}, {"pct_of_copy_bandwidth", pct}});
    }
    out["runs"] = runs;
    if (!o.json_out.empty()) {
        std::ofstream f(o.json_out);
        FS_CHECK(f.good(), "cannot write {}", o.json_out);
        f << out.dump(2) << "\n";
        fmt::print("wrote {}\n", o.json_out);
    }
    return 0;
}

Register reg("bench", "Measure prefill/decode throughput against the memory-bandwidth roofline",
             [](CLI::App& app) -> RunFn {
                 auto o = std::make_shared<BenchOpts>();
                 add_model_options(app, o->load);
                 app.add_option("--prompt", o->prompt, "Prompt tokens per sequence")->capture_default_str();
                 app.add_option("--decode", o->decode, "Decode steps to time")->capture_default_str();
                 app.add_option("--batch", o->batches, "Batch sizes to run (several allowed)")->capture_default_str();
                 app.add_option("--bw-mb", o->bw_bytes_mb, "Buffer size (MiB) of the bandwidth measurement")
                     ->capture_default_str();
                 app.add_option("--json", o->json_out, "Write the results as JSON to this file");
                 return [o] { return run_bench(*o); };
             });

}  // namespace
}  // namespace farsight::cli

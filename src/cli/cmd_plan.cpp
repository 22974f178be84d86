// farsight plan: memory plan for a model on a device — weights, KV cache, workspace — and the
// longest context that fits.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "cli/common.h"
#include "core/error.h"
#include "io/hf_cache.h"
#include "model/model.h"

namespace farsight::cli {
namespace {

struct PlanOpts {
    LoadOptions load;
    int64_t ctx = 0;
    int64_t batch = 1;
    int64_t chunk = 8192;
    bool json = false;
};

// Activation bytes of one forward over `tokens` tokens (the model's workspace buffers).
size_t workspace_bytes(const ModelConfig& c, int64_t tokens, size_t act) {
    const int64_t per_token = 4 * c.hidden_size + (c.q_dim() + 2 * c.kv_dim()) + c.q_dim() + 3 * c.intermediate_size;
    return static_cast<size_t>(tokens * per_token) * act + static_cast<size_t>(c.vocab_size) * act * 16;
}

int run_plan(const PlanOpts& o) {
    ModelConfig cfg;
    if (!o.load.dummy.empty()) {
        auto p = preset_config(o.load.dummy);
        cfg = p ? *p : parse_model_config(std::filesystem::path(o.load.dummy));
    } else {
        FS_CHECK(!o.load.model.empty(), "no model given (use -m MODEL or --dummy PRESET)");
        cfg = parse_model_config(resolve_model_path(o.load.model) / "config.json");
    }
    const bool gpu = o.load.device != "cpu";
    std::unique_ptr<Backend> be = gpu ? make_cuda_backend(o.load.device.size() > 5 ? std::stoi(o.load.device.substr(5)) : 0)
                                      : make_cpu_backend(1);
    DType wdt = gpu ? be->activation_dtype() : cfg.dtype;
    if (o.load.dtype != "auto") FS_CHECK(parse_dtype(o.load.dtype, &wdt), "unknown --dtype {}", o.load.dtype);
    const size_t act = dtype_size(be->activation_dtype());
    const size_t weights = static_cast<size_t>(count_parameters(cfg)) * dtype_size(wdt);
    const size_t kv_per_token = static_cast<size_t>(2 * cfg.num_layers * cfg.kv_dim()) * act;
    const int64_t ctx = o.ctx > 0 ? o.ctx : cfg.context_length();
    const int64_t chunk = std::min(o.chunk, ctx);
    const size_t work = workspace_bytes(cfg, chunk, act);
    const size_t free_b = be->free_memory();
    const double frac = gpu ? o.load.gpu_memory_fraction : 0.9;
    const double usable = static_cast<double>(free_b) * frac;
    const size_t need = weights + work + kv_per_token * static_cast<size_t>(ctx * o.batch);
    const double room = usable - static_cast<double>(weights + work);
    const int64_t max_ctx = room > 0 ? static_cast<int64_t>(room / static_cast<double>(kv_per_token) / static_cast<double>(o.batch)) : 0;
    const bool fits = static_cast<double>(need) <= usable;
    nlohmann::json j = {{"device", be->device_description()},
                        {"free_bytes", free_b},
                        {"usable_bytes", usable},
                        {"weights_bytes", weights},
                        {"kv_bytes_per_token", kv_per_token},
                        {"kv_bytes", kv_per_token * static_cast<size_t>(ctx * o.batch)},
                        {"workspace_bytes", work},
                        {"ctx", ctx},
                        {"batch", o.batch},
                        {"fits", fits},
                        {"max_ctx_at_batch", std::min<int64_t>(max_ctx, cfg.context_length())},
                        {"max_ctx_by_memory", max_ctx}};
    if (o.json) {
        fmt::print("{}\n", j.dump(2));
    } else {
        const double G = 1e9;
        fmt::print("device      {} ({:.2f} GB free, {:.0f}% usable = {:.2f} GB)\n", be->device_description(),
                   static_cast<double>(free_b) / G, frac * 100, usable / G);
        fmt::print("weights     {:.2f} GB ({} params in {})\n", static_cast<double>(weights) / G, count_parameters(cfg),
                   dtype_name(wdt));
        fmt::print("kv cache    {:.2f} GB for {} x {} tokens ({} bytes/token)\n",
                   static_cast<double>(kv_per_token * static_cast<size_t>(ctx * o.batch)) / G, o.batch, ctx, kv_per_token);
        fmt::print("workspace   {:.2f} GB (prefill chunks of {} tokens)\n", static_cast<double>(work) / G, chunk);
        fmt::print("total       {:.2f} GB -> {}\n", static_cast<double>(need) / G, fits ? "fits" : "DOES NOT FIT");
        fmt::print("largest context that fits at batch {}: {} tokens (model maximum {})\n", o.batch, max_ctx,
                   cfg.context_length());
    }
    return fits ? 0 : 3;
}

Register reg("plan", "Memory plan: weights, KV cache and workspace for a context and batch, and the longest context that fits",
             [](CLI::App& app) -> RunFn {
                 auto o = std::make_shared<PlanOpts>();
                 add_model_options(app, o->load);
                 app.add_option("--ctx", o->ctx, "Context length per sequence (0 = the model's maximum)");
                 app.add_option("--batch", o->batch, "Concurrent sequences")->capture_default_str();
                 app.add_option("--chunk", o->chunk, "Prefill chunk size (tokens per forward)")->capture_default_str();
                 app.add_flag("--json", o->json, "Print JSON");
                 return [o] { return run_plan(*o); };
             });

}  // namespace
}  // namespace farsight::cli

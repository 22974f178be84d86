// farsight info: what a model is, without running it.
#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <thread>

#include "cli/command.h"
#include "cli/common.h"
#include "core/error.h"
#include "io/hf_cache.h"
#include "model/model.h"
#include "model/random_weights.h"
#include "model/rope.h"

namespace farsight::cli {
namespace {

struct InfoOpts {
    LoadOptions load;
    bool json = false;
};

int run_info(const InfoOpts& o) {
    ModelConfig cfg;
    std::string source;
    size_t bytes = 0;
    if (!o.load.dummy.empty()) {
        auto p = preset_config(o.load.dummy);
        cfg = p ? *p : parse_model_config(std::filesystem::path(o.load.dummy));
        source = "random weights (--dummy " + o.load.dummy + ")";
        bytes = static_cast<size_t>(count_parameters(cfg)) * dtype_size(cfg.dtype);
    } else {
        FS_CHECK(!o.load.model.empty(), "no model given (use -m MODEL or --dummy PRESET)");
        const auto dir = resolve_model_path(o.load.model);
        cfg = parse_model_config(dir / "config.json");
        auto w = open_safetensors_folder(dir);
        bytes = validate_weights(cfg, *w);
        source = dir.string();
    }
    const int64_t params = count_parameters(cfg);
    const size_t kv_per_token = static_cast<size_t>(2 * cfg.num_layers * cfg.kv_dim());
    int64_t window = 0;  // the sliding window of the layers that have one
    for (auto w : cfg.layer_window) window = std::max(window, w);
    nlohmann::json j = {
        {"source", source},
        {"architecture", cfg.architecture},
        {"model_type", cfg.model_type},
        {"parameters", params},
        {"dtype", std::string(dtype_name(cfg.dtype))},
        {"weights_bytes", bytes},
        {"hidden_size", cfg.hidden_size},
        {"intermediate_size", cfg.intermediate_size},
        {"layers", cfg.num_layers},
        {"heads", cfg.num_heads},
        {"kv_heads", cfg.num_kv_heads},
        {"head_dim", cfg.head_dim},
        {"vocab_size", cfg.vocab_size},
        {"context_length", cfg.context_length()},
        {"max_position_embeddings", cfg.max_position_embeddings},
        {"rope_type", cfg.rope.type},
        {"rope_theta", cfg.rope.theta},
        {"rope_factor", cfg.rope.factor},
        {"tie_word_embeddings", cfg.tie_word_embeddings},
        {"attention_bias", cfg.attention_bias},
        {"sliding_window", window ? nlohmann::json(window) : nlohmann::json(nullptr)},
        {"kv_bytes_per_token_bf16", kv_per_token * 2},
        {"devices", {{"cpu_threads", std::thread::hardware_concurrency()}, {"cuda", cuda_available()}}},
    };
    if (o.json) {
        fmt::print("{}\n", j.dump(2));
        return 0;
    }
    fmt::print("model          {}\n", source);
    fmt::print("architecture   {} ({})\n", cfg.architecture, cfg.model_type);
    if (params >= 1000000000) fmt::print("parameters     {:.2f} B ({})\n", static_cast<double>(params) / 1e9, params);
    else fmt::print("parameters     {:.2f} M ({})\n", static_cast<double>(params) / 1e6, params);
    fmt::print("dtype          {} ({:.1f} MB of weights)\n", dtype_name(cfg.dtype), static_cast<double>(bytes) / 1e6);
    fmt::print("shape          hidden {} | intermediate {} | layers {} | heads {} (kv {}) | head_dim {} | vocab {}\n",
               cfg.hidden_size, cfg.intermediate_size, cfg.num_layers, cfg.num_heads, cfg.num_kv_heads,
               cfg.head_dim, cfg.vocab_size);
    fmt::print("context        {} tokens; rope {} (theta {}{})\n", cfg.context_length(), cfg.rope.type,
               cfg.rope.theta, cfg.rope.type == "default" ? "" : fmt::format(", factor {}", cfg.rope.factor));
    if (window) fmt::print("sliding window {}\n", window);
    fmt::print("kv cache       {} bytes/token in bf16 ({} in f32)\n", kv_per_token * 2, kv_per_token * 4);
    fmt::print("devices        cpu ({} threads){}\n", std::thread::hardware_concurrency(),
               cuda_available() ? ", cuda" : "");
    return 0;
}

Register reg("info", "Show a model's architecture, size, dtype, context length and rope type",
             [](CLI::App& app) -> RunFn {
                 auto o = std::make_shared<InfoOpts>();
                 add_model_options(app, o->load);
                 app.add_flag("--json", o->json, "Print JSON");
                 return [o] { return run_info(*o); };
             });

}  // namespace
}  // namespace farsight::cli

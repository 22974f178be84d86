// Qwen2ForCausalLM (Qwen2, Qwen2.5): bias on q/k/v (not o). Sliding windows only when
// use_sliding_window is true, on layers >= max_window_layers (or as `layer_types` says).
#include "model/arch.h"

#include "core/error.h"

namespace farsight {

const ArchSpec kQwen2Arch = {
    "Qwen2ForCausalLM", "qwen2", [](ModelConfig& c, const nlohmann::json& j) {
        c.attention_bias = true;
        c.o_bias = false;
        c.mlp_bias = false;
        const size_t n = static_cast<size_t>(c.num_layers);
        c.layer_window.assign(n, 0);
        int64_t w = 0;
        if (j.contains("sliding_window") && j["sliding_window"].is_number_integer())
            w = j["sliding_window"].get<int64_t>();
        if (j.contains("layer_types") && j["layer_types"].is_array()) {
            const auto& lt = j["layer_types"];
            FS_CHECK(lt.size() == n, "config.json: layer_types has {} entries, expected {}",
                     lt.size(), n);
            for (size_t i = 0; i < n; ++i)
                if (lt[i] == "sliding_attention") c.layer_window[i] = w;
        } else if (j.value("use_sliding_window", false)) {
            const int64_t first = j.value("max_window_layers", c.num_layers);
            for (size_t i = 0; i < n; ++i)
                if (static_cast<int64_t>(i) >= first) c.layer_window[i] = w;
        }
    }};

}  // namespace farsight

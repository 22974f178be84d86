// MistralForCausalLM: Llama without biases, with sliding-window attention on every layer when
// config.sliding_window is set (a query at position p sees keys k with p - k < sliding_window).
#include "model/arch.h"

namespace farsight {

const ArchSpec kMistralArch = {
    "MistralForCausalLM", "mistral", [](ModelConfig& c, const nlohmann::json& j) {
        int64_t w = 0;
        if (j.contains("sliding_window") && j["sliding_window"].is_number_integer())
            w = j["sliding_window"].get<int64_t>();
        c.layer_window.assign(static_cast<size_t>(c.num_layers), w);
    }};

}  // namespace farsight

// LlamaForCausalLM (Llama 2/3, TinyLlama, ...): the reference decoder. attention_bias puts a bias
// on q/k/v/o, mlp_bias on gate/up/down. No sliding window.
#include "model/arch.h"

namespace farsight {

const ArchSpec kLlamaArch = {
    "LlamaForCausalLM", "llama", [](ModelConfig& c, const nlohmann::json& j) {
        c.attention_bias = j.value("attention_bias", false);
        c.o_bias = c.attention_bias;
        c.mlp_bias = j.value("mlp_bias", false);
    }};

}  // namespace farsight

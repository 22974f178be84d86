#pragma once
// Supported architectures. Each lives in its own file (llama.cpp, mistral.cpp, qwen2.cpp) and
// fills in what its config.json means beyond the fields all Llama-family configs share.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/config.h"

namespace farsight {

struct ArchSpec {
    const char* name;        // HF "architectures" entry, e.g. "LlamaForCausalLM"
    const char* model_type;  // config.json "model_type"
    // Architecture-specific config fields (biases, sliding windows).
    void (*configure)(ModelConfig& cfg, const nlohmann::json& j);
};

extern const ArchSpec kLlamaArch;
extern const ArchSpec kMistralArch;
extern const ArchSpec kQwen2Arch;

const ArchSpec* find_arch(const std::string& architecture);
std::vector<std::string> supported_architectures();

}  // namespace farsight

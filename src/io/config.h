#pragma once
// config.json of a Hugging Face Llama-family model, normalised.
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/dtype.h"

namespace farsight {

// rope_scaling / rope_parameters, with transformers' semantics (see src/model/rope.cpp).
struct RopeConfig {
    std::string type = "default";  // default|linear|dynamic|yarn|llama3|longrope
    double theta = 10000.0;
    double factor = 1.0;
    double partial_rotary_factor = 1.0;
    std::optional<double> original_max_position_embeddings;
    std::optional<double> attention_factor;  // yarn / longrope
    double beta_fast = 32.0, beta_slow = 1.0;  // yarn
    std::optional<double> mscale, mscale_all_dim;  // yarn (DeepSeek style)
    bool truncate = true;                          // yarn
    double low_freq_factor = 1.0, high_freq_factor = 4.0;  // llama3
    std::vector<double> short_factor, long_factor;         // longrope
};

struct ModelConfig {
    std::string architecture;  // e.g. LlamaForCausalLM
    std::string model_type;    // e.g. llama
    int64_t hidden_size = 0;
    int64_t intermediate_size = 0;
    int64_t num_layers = 0;
    int64_t num_heads = 0;
    int64_t num_kv_heads = 0;
    int64_t head_dim = 0;
    int64_t vocab_size = 0;
    int64_t max_position_embeddings = 0;
    double rms_norm_eps = 1e-6;
    bool tie_word_embeddings = false;
    bool attention_bias = false;  // q/k/v (and o for llama) bias
    bool o_bias = false;          // o_proj bias
    bool mlp_bias = false;
    std::string hidden_act = "silu";
    // Per-layer sliding window (0 = full attention). Size num_layers.
    std::vector<int64_t> layer_window;
    DType dtype = DType::F32;  // torch_dtype / dtype stored in config
    std::vector<int64_t> bos_token_ids, eos_token_ids;
    RopeConfig rope;

    // Longest context the model supports with its rope scaling (as vLLM derives it): linear and
    // dynamic scale max_position_embeddings by factor, yarn scales the original length.
    int64_t context_length() const;
    int64_t q_dim() const { return num_heads * head_dim; }
    int64_t kv_dim() const { return num_kv_heads * head_dim; }
};

// Parse a config.json file / object. Throws Error naming the file and the bad field.
ModelConfig parse_model_config(const std::filesystem::path& path);
ModelConfig parse_model_config(const nlohmann::json& j, const std::string& where);

// Presets for random-weight benchmarking: llama2-7b, llama3-8b, tinyllama-1.1b, qwen2.5-0.5b,
// plus small ones used by tests. Returns nullopt for an unknown name.
std::optional<ModelConfig> preset_config(const std::string& name);
std::vector<std::string> preset_names();

}  // namespace farsight

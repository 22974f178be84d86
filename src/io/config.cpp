#include "io/config.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "model/arch.h"

namespace farsight {

using nlohmann::json;

namespace {

int64_t get_int(const json& j, const char* key, const std::string& where, bool required,
                int64_t dflt = 0) {
    if (!j.contains(key) || j[key].is_null()) {
        FS_CHECK(!required, "{}: required field \"{}\" is missing", where, key);
        return dflt;
    }
    FS_CHECK(j[key].is_number_integer(), "{}: field \"{}\" must be an integer, got {}", where, key,
             j[key].dump());
    return j[key].get<int64_t>();
}

double get_num(const json& j, const char* key, const std::string& where, double dflt) {
    if (!j.contains(key) || j[key].is_null()) return dflt;
    FS_CHECK(j[key].is_number(), "{}: field \"{}\" must be a number, got {}", where, key,
             j[key].dump());
    return j[key].get<double>();
}

std::optional<double> get_opt(const json& j, const char* key, const std::string& where) {
    if (!j.contains(key) || j[key].is_null()) return std::nullopt;
    FS_CHECK(j[key].is_number(), "{}: rope field \"{}\" must be a number, got {}", where, key,
             j[key].dump());
    return j[key].get<double>();
}

std::vector<int64_t> id_list(const json& j, const char* key) {
    std::vector<int64_t> v;
    if (!j.contains(key) || j[key].is_null()) return v;
    if (j[key].is_number_integer()) v.push_back(j[key].get<int64_t>());
    else if (j[key].is_array())
        for (const auto& x : j[key])
            if (x.is_number_integer()) v.push_back(x.get<int64_t>());
    return v;
}

void parse_rope(const json& j, const std::string& where, ModelConfig& c) {
    RopeConfig& r = c.rope;
    // transformers v5 writes rope_parameters (with rope_theta inside); older configs use
    // rope_scaling plus a top-level rope_theta. Both "type" and "rope_type" are accepted.
    const json* p = nullptr;
    if (j.contains("rope_parameters") && j["rope_parameters"].is_object()) p = &j["rope_parameters"];
    else if (j.contains("rope_scaling") && j["rope_scaling"].is_object()) p = &j["rope_scaling"];
    r.theta = get_num(j, "rope_theta", where, 10000.0);
    r.partial_rotary_factor = get_num(j, "partial_rotary_factor", where, 1.0);
    if (!p) return;
    const json& s = *p;
    r.theta = get_num(s, "rope_theta", where, r.theta);
    r.partial_rotary_factor = get_num(s, "partial_rotary_factor", where, r.partial_rotary_factor);
    std::string type = "default";
    if (s.contains("rope_type") && s["rope_type"].is_string()) type = s["rope_type"];
    else if (s.contains("type") && s["type"].is_string()) type = s["type"];
    if (type == "su") type = "longrope";  // legacy Phi-3 spelling, as transformers maps it
    static const char* kKnown[] = {"default", "linear", "dynamic", "yarn", "llama3", "longrope"};
    bool known = false;
    for (const char* k : kKnown) known |= (type == k);
    FS_CHECK(known,
             "{}: unsupported rope type \"{}\" (supported: default, linear, dynamic, yarn, "
             "llama3, longrope)",
             where, type);
    r.type = type;
    r.factor = get_num(s, "factor", where, 1.0);
    r.original_max_position_embeddings = get_opt(s, "original_max_position_embeddings", where);
    if (!r.original_max_position_embeddings && j.contains("original_max_position_embeddings"))
        r.original_max_position_embeddings = get_opt(j, "original_max_position_embeddings", where);
    r.attention_factor = get_opt(s, "attention_factor", where);
    if (s.contains("beta_fast") && !s["beta_fast"].is_null()) r.beta_fast = get_num(s, "beta_fast", where, 32);
    if (s.contains("beta_slow") && !s["beta_slow"].is_null()) r.beta_slow = get_num(s, "beta_slow", where, 1);
    r.mscale = get_opt(s, "mscale", where);
    r.mscale_all_dim = get_opt(s, "mscale_all_dim", where);
    if (s.contains("truncate") && s["truncate"].is_boolean()) r.truncate = s["truncate"];
    r.low_freq_factor = get_num(s, "low_freq_factor", where, 1.0);
    r.high_freq_factor = get_num(s, "high_freq_factor", where, 4.0);
    auto vec = [&](const char* key) {
        std::vector<double> v;
        if (s.contains(key) && s[key].is_array())
            for (const auto& x : s[key]) {
                FS_CHECK(x.is_number(), "{}: rope field \"{}\" must be a list of numbers", where, key);
                v.push_back(x.get<double>());
            }
        return v;
    };
    r.short_factor = vec("short_factor");
    r.long_factor = vec("long_factor");
    if (type == "linear" || type == "dynamic" || type == "yarn" || type == "llama3")
        FS_CHECK(s.contains("factor"), "{}: rope type \"{}\" needs \"factor\"", where, type);
    if (type == "llama3")
        FS_CHECK(r.original_max_position_embeddings,
                 "{}: rope type llama3 needs \"original_max_position_embeddings\"", where);
    if (type == "longrope") {
        const size_t half = static_cast<size_t>(c.head_dim * r.partial_rotary_factor) / 2;
        FS_CHECK(r.short_factor.size() == half && r.long_factor.size() == half,
                 "{}: longrope short_factor/long_factor must have {} entries (head_dim/2), got "
                 "{} and {}",
                 where, half, r.short_factor.size(), r.long_factor.size());
    }
}

}  // namespace

ModelConfig parse_model_config(const json& j, const std::string& where) {
    FS_CHECK(j.is_object(), "{}: expected a JSON object", where);
    ModelConfig c;
    if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty() &&
        j["architectures"][0].is_string())
        c.architecture = j["architectures"][0];
    c.model_type = j.value("model_type", std::string());
    if (c.architecture.empty()) {
        // Fall back on model_type for configs without "architectures".
        for (const std::string& a : supported_architectures()) {
            const ArchSpec* spec = find_arch(a);
            if (c.model_type == spec->model_type) c.architecture = a;
        }
    }
    const ArchSpec* arch = find_arch(c.architecture);
    if (!arch) {
        std::string list;
        for (const auto& a : supported_architectures()) list += (list.empty() ? "" : ", ") + a;
        fail("{}: unsupported architecture \"{}\" (model_type \"{}\"); farsight supports: {}", where,
             c.architecture.empty() ? "<none>" : c.architecture, c.model_type, list);
    }
    c.hidden_size = get_int(j, "hidden_size", where, true);
    c.intermediate_size = get_int(j, "intermediate_size", where, true);
    c.num_layers = get_int(j, "num_hidden_layers", where, true);
    c.num_heads = get_int(j, "num_attention_heads", where, true);
    c.num_kv_heads = get_int(j, "num_key_value_heads", where, false, c.num_heads);
    c.vocab_size = get_int(j, "vocab_size", where, true);
    c.max_position_embeddings = get_int(j, "max_position_embeddings", where, false, 2048);
    FS_CHECK(c.hidden_size > 0 && c.intermediate_size > 0 && c.num_layers > 0 && c.num_heads > 0 &&
                 c.num_kv_heads > 0 && c.vocab_size > 0,
             "{}: sizes must be positive", where);
    FS_CHECK(c.num_heads % c.num_kv_heads == 0,
             "{}: num_attention_heads ({}) must be a multiple of num_key_value_heads ({})", where,
             c.num_heads, c.num_kv_heads);
    if (j.contains("head_dim") && !j["head_dim"].is_null()) {
        c.head_dim = get_int(j, "head_dim", where, true);
    } else {
        FS_CHECK(c.hidden_size % c.num_heads == 0,
                 "{}: hidden_size {} not divisible by num_attention_heads {} (and no head_dim)",
                 where, c.hidden_size, c.num_heads);
        c.head_dim = c.hidden_size / c.num_heads;
    }
    FS_CHECK(c.head_dim > 0 && c.head_dim % 2 == 0, "{}: head_dim must be positive and even", where);
    c.rms_norm_eps = get_num(j, "rms_norm_eps", where, 1e-6);
    c.tie_word_embeddings = j.value("tie_word_embeddings", false);
    c.hidden_act = j.value("hidden_act", std::string("silu"));
    FS_CHECK(c.hidden_act == "silu" || c.hidden_act == "swish",
             "{}: unsupported hidden_act \"{}\" (only silu)", where, c.hidden_act);
    std::string dt = "float32";
    if (j.contains("torch_dtype") && j["torch_dtype"].is_string()) dt = j["torch_dtype"];
    else if (j.contains("dtype") && j["dtype"].is_string()) dt = j["dtype"];
    if (!parse_dtype(dt, &c.dtype)) c.dtype = DType::F32;
    c.bos_token_ids = id_list(j, "bos_token_id");
    c.eos_token_ids = id_list(j, "eos_token_id");
    c.layer_window.assign(static_cast<size_t>(c.num_layers), 0);
    parse_rope(j, where, c);
    arch->configure(c, j);
    return c;
}

ModelConfig parse_model_config(const std::filesystem::path& path) {
    std::ifstream f(path);
    FS_CHECK(f.good(), "cannot open {}: the model folder needs a config.json", path.string());
    json j;
    try {
        j = json::parse(f);
    } catch (const json::exception& e) {
        fail("{}: not valid JSON ({})", path.string(), e.what());
    }
    return parse_model_config(j, path.string());
}

int64_t ModelConfig::context_length() const {
    const int64_t mpe = max_position_embeddings;
    if (rope.type == "linear" || rope.type == "dynamic")
        return static_cast<int64_t>(static_cast<double>(mpe) * rope.factor);
    if (rope.type == "yarn" && rope.original_max_position_embeddings)
        return std::max<int64_t>(mpe, static_cast<int64_t>(*rope.original_max_position_embeddings * rope.factor));
    return mpe;
}

namespace {
json preset_json(const std::string& name) {
    if (name == "llama2-7b")
        return {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"},
                {"hidden_size", 4096}, {"intermediate_size", 11008}, {"num_hidden_layers", 32},
                {"num_attention_heads", 32}, {"num_key_value_heads", 32}, {"vocab_size", 32000},
                {"max_position_embeddings", 4096}, {"rms_norm_eps", 1e-5},
                {"rope_theta", 10000.0}, {"torch_dtype", "bfloat16"}, {"bos_token_id", 1},
                {"eos_token_id", 2}};
    if (name == "llama3-8b")  // Llama 3.1 8B: 128K context with llama3 rope scaling
        return {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"},
                {"hidden_size", 4096}, {"intermediate_size", 14336}, {"num_hidden_layers", 32},
                {"num_attention_heads", 32}, {"num_key_value_heads", 8}, {"vocab_size", 128256},
                {"max_position_embeddings", 131072}, {"rms_norm_eps", 1e-5},
                {"rope_theta", 500000.0},
                {"rope_scaling",
                 {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                  {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}}},
                {"torch_dtype", "bfloat16"}, {"bos_token_id", 128000},
                {"eos_token_id", {128001, 128008, 128009}}};
    if (name == "tinyllama-1.1b")
        return {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"},
                {"hidden_size", 2048}, {"intermediate_size", 5632}, {"num_hidden_layers", 22},
                {"num_attention_heads", 32}, {"num_key_value_heads", 4}, {"vocab_size", 32000},
                {"max_position_embeddings", 2048}, {"rms_norm_eps", 1e-5},
                {"rope_theta", 10000.0}, {"torch_dtype", "bfloat16"}, {"bos_token_id", 1},
                {"eos_token_id", 2}};
    if (name == "qwen2.5-0.5b")
        return {{"architectures", {"Qwen2ForCausalLM"}}, {"model_type", "qwen2"},
                {"hidden_size", 896}, {"intermediate_size", 4864}, {"num_hidden_layers", 24},
                {"num_attention_heads", 14}, {"num_key_value_heads", 2}, {"vocab_size", 151936},
                {"max_position_embeddings", 32768}, {"rms_norm_eps", 1e-6},
                {"rope_theta", 1000000.0}, {"tie_word_embeddings", true},
                {"torch_dtype", "bfloat16"}, {"bos_token_id", 151643},
                {"eos_token_id", 151645}, {"use_sliding_window", false},
                {"sliding_window", 32768}, {"max_window_layers", 21}};
    if (name == "tiny-test")  // a few-MB model for tests and CI smoke runs
        return {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"},
                {"hidden_size", 128}, {"intermediate_size", 256}, {"num_hidden_layers", 2},
                {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"vocab_size", 512},
                {"max_position_embeddings", 1024}, {"rms_norm_eps", 1e-5},
                {"rope_theta", 10000.0}, {"torch_dtype", "bfloat16"}, {"bos_token_id", 1},
                {"eos_token_id", 2}};
    return nullptr;
}
}  // namespace

std::optional<ModelConfig> preset_config(const std::string& name) {
    json j = preset_json(name);
    if (j.is_null()) return std::nullopt;
    return parse_model_config(j, "preset " + name);
}

std::vector<std::string> preset_names() {
    return {"llama2-7b", "llama3-8b", "tinyllama-1.1b", "qwen2.5-0.5b", "tiny-test"};
}

}  // namespace farsight

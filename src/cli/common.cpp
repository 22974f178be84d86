#include "cli/common.h"

#include <sstream>

#include "core/error.h"

namespace farsight::cli {

void add_model_options(CLI::App& app, LoadOptions& o, bool model_required) {
    auto* m = app.add_option("-m,--model", o.model,
                             "Model: a Hugging Face model folder (config.json + safetensors + "
                             "tokenizer.json) or an org/name already in the Hugging Face cache");
    if (model_required) m->required();
    app.add_option("--dummy", o.dummy,
                   "Use deterministic random weights instead of files: a preset (llama2-7b, "
                   "llama3-8b, tinyllama-1.1b, qwen2.5-0.5b, tiny-test) or a config.json path");
    app.add_option("--device", o.device, "Device: cpu, cuda or cuda:N")->capture_default_str();
    app.add_option("--dtype", o.dtype,
                   "Weight dtype: auto (CPU keeps the stored dtype, CUDA uses bf16), f32, f16, bf16")
        ->capture_default_str();
    app.add_option("-t,--threads", o.threads, "CPU threads (0 = all cores)")->capture_default_str();
    app.add_option("--max-model-len", o.max_model_len,
                   "Longest sequence (prompt + output) in tokens (0 = the model's "
                   "max_position_embeddings)")
        ->capture_default_str();
    app.add_option("--kv-tokens", o.kv_tokens, "KV cache capacity in tokens (0 = automatic)")
        ->capture_default_str();
    app.add_option("--block-size", o.block_size, "Tokens per KV cache block")->capture_default_str();
    app.add_option("--gpu-memory-fraction", o.gpu_memory_fraction,
                   "Share of free GPU memory the KV cache may use")
        ->capture_default_str();
    app.add_option("--weights-seed", o.seed, "Seed of --dummy random weights")->capture_default_str();
}

std::vector<int32_t> parse_ids(const std::string& s) {
    std::string t = s;
    for (char& c : t)
        if (c == ',' || c == '[' || c == ']') c = ' ';
    std::istringstream in(t);
    std::vector<int32_t> ids;
    std::string w;
    while (in >> w) {
        size_t pos = 0;
        long long v = 0;
        try {
            v = std::stoll(w, &pos);
        } catch (...) {
            pos = 0;
        }
        FS_CHECK(pos == w.size() && v >= 0 && v <= INT32_MAX, "bad token id \"{}\" in --ids", w);
        ids.push_back(static_cast<int32_t>(v));
    }
    FS_CHECK(!ids.empty(), "--ids is empty");
    return ids;
}

}  // namespace farsight::cli

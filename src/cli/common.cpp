#include "cli/common.h"

#include <algorithm>
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
    app.add_option("--config", o.config,
                   "Use this config.json instead of the model folder's (e.g. to add rope scaling)");
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

namespace farsight::cli {

void add_generation_options(CLI::App& app, GenFlags& g) {
    app.add_option("-n,--max-tokens", g.max_new_tokens, "Maximum number of new tokens")->capture_default_str();
    app.add_option("--temp,--temperature", g.temp,
                   "Sampling temperature; 0 = greedy (default: generation_config.json, else 1)");
    app.add_option("--top-k", g.top_k, "Keep only the k most likely tokens (0 = off)");
    app.add_option("--top-p", g.top_p, "Nucleus sampling: keep the smallest set with this mass (1 = off)");
    app.add_option("--min-p", g.min_p, "Drop tokens below min-p x the top probability (0 = off)");
    app.add_option("--repeat-penalty", g.repeat_penalty,
                   "Repetition penalty over prompt and output tokens (1 = off)");
    app.add_option("--presence-penalty", g.presence_penalty, "OpenAI presence penalty")->capture_default_str();
    app.add_option("--frequency-penalty", g.frequency_penalty, "OpenAI frequency penalty")->capture_default_str();
    app.add_option("--seed", g.seed, "Sampling seed (same seed, same output)");
    app.add_option("--stop", g.stop, "Stop string (repeatable); not included in the output");
    app.add_flag("--ignore-eos", g.ignore_eos, "Keep generating past end-of-sequence tokens");
    app.add_option("--tokenizer", g.tokenizer, "Tokenizer folder (default: the model folder)");
}

GenerationOptions resolve_generation(const GenFlags& g, const std::filesystem::path& model_dir,
                                     const Tokenizer& tok) {
    const GenerationDefaults d = load_generation_defaults(model_dir);
    GenerationOptions o;
    SamplingParams& p = o.sampling;
    const bool config_greedy = d.do_sample.has_value() && !*d.do_sample;
    p.temperature = g.temp ? *g.temp : (config_greedy ? 0.0f : d.temperature.value_or(1.0f));
    p.top_k = g.top_k ? *g.top_k : d.top_k.value_or(0);
    p.top_p = g.top_p ? *g.top_p : d.top_p.value_or(1.0f);
    p.min_p = g.min_p ? *g.min_p : d.min_p.value_or(0.0f);
    p.repetition_penalty = g.repeat_penalty ? *g.repeat_penalty : d.repetition_penalty.value_or(1.0f);
    p.presence_penalty = g.presence_penalty;
    p.frequency_penalty = g.frequency_penalty;
    if (g.seed) {
        p.has_seed = true;
        p.seed = *g.seed;
    }
    o.max_new_tokens = g.max_new_tokens;
    FS_CHECK(o.max_new_tokens >= 0, "--max-tokens must be >= 0");
    o.stop = g.stop;
    o.ignore_eos = g.ignore_eos;
    o.eos_ids = tok.eos_ids();
    for (int32_t id : d.eos_ids)
        if (std::find(o.eos_ids.begin(), o.eos_ids.end(), id) == o.eos_ids.end()) o.eos_ids.push_back(id);
    return o;
}

Tokenizer load_tokenizer(const GenFlags& g, const Session& s) {
    if (!g.tokenizer.empty()) return Tokenizer::from_folder(g.tokenizer);
    FS_CHECK(!s.model_dir().empty(),
             "random-weight models have no tokenizer: pass --tokenizer FOLDER (a folder with "
             "tokenizer.json)");
    return Tokenizer::from_folder(s.model_dir());
}

}  // namespace farsight::cli

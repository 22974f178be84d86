#pragma once
// Options shared by the commands that load a model.
#include <CLI/CLI.hpp>

#include <string>
#include <vector>

#include "engine/session.h"

namespace farsight::cli {

// -m/--model, --dummy, --device, --dtype, --threads, --max-model-len, --kv-tokens, --seed.
void add_model_options(CLI::App& app, LoadOptions& o, bool model_required = false);
// "1 2 3" or "1,2,3" -> ids (throws Error on anything else).
std::vector<int32_t> parse_ids(const std::string& s);

}  // namespace farsight::cli

#include <optional>

#include "engine/generate.h"

namespace farsight::cli {

// Sampling/stopping flags shared by generate and chat. Unset flags fall back on the model's
// generation_config.json (like vLLM), then on temperature 1.
struct GenFlags {
    std::optional<float> temp, top_p, min_p, repeat_penalty;
    std::optional<int32_t> top_k;
    float presence_penalty = 0, frequency_penalty = 0;
    std::optional<uint64_t> seed;
    int32_t max_new_tokens = 256;
    std::vector<std::string> stop;
    bool ignore_eos = false;
    std::string tokenizer;  // tokenizer folder when the model folder has none (--dummy)
};
void add_generation_options(CLI::App& app, GenFlags& g);
GenerationOptions resolve_generation(const GenFlags& g, const std::filesystem::path& model_dir,
                                     const Tokenizer& tok);
// The tokenizer for a session: --tokenizer, else the model folder.
Tokenizer load_tokenizer(const GenFlags& g, const Session& s);

}  // namespace farsight::cli

#pragma once
// Single-request generation on a Session: prefill, then sample/decode until EOS, a stop string
// or the token limit, streaming text through a callback (valid UTF-8, stop strings held back).
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "engine/sampler.h"
#include "engine/session.h"
#include "tokenizer/tokenizer.h"

namespace farsight {

struct GenerationOptions {
    SamplingParams sampling;
    int32_t max_new_tokens = 256;
    std::vector<std::string> stop;
    std::vector<int32_t> eos_ids;  // generation stops (finish_reason "eos") on any of these
    bool ignore_eos = false;
};

struct GenerationResult {
    std::string text;  // generated text (without the prompt)
    std::vector<int32_t> prompt_ids;
    std::vector<int32_t> ids;  // generated ids (an EOS id that ended generation included)
    std::string finish_reason;  // "length" | "stop" | "eos"
    double prefill_seconds = 0, decode_seconds = 0;
    std::vector<float> logprobs;                      // of each generated id
    std::vector<std::vector<TokenLogprob>> top_logprobs;  // when sampling.top_logprobs > 0
    double prefill_tok_s() const { return prefill_seconds > 0 ? prompt_ids.size() / prefill_seconds : 0; }
    double decode_tok_s() const {
        return decode_seconds > 0 && ids.size() > 1 ? (ids.size() - 1) / decode_seconds : 0;
    }
};

// Defaults a model ships in generation_config.json (absent fields stay unset).
struct GenerationDefaults {
    std::optional<float> temperature, top_p, min_p, repetition_penalty;
    std::optional<int32_t> top_k, max_new_tokens;
    std::optional<bool> do_sample;
    std::vector<int32_t> eos_ids;
};
GenerationDefaults load_generation_defaults(const std::filesystem::path& model_dir);

using TextCallback = std::function<void(const std::string&)>;

GenerationResult generate(Session& session, const Tokenizer& tok, const std::vector<int32_t>& prompt_ids,
                          const GenerationOptions& opts, const TextCallback& on_text = {});

}  // namespace farsight

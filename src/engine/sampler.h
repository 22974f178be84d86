#pragma once
// Token sampling: penalties, temperature, top-k, top-p, min-p, seeded draws, top-n logprobs.
// Order (as vLLM and transformers apply them): repetition/presence/frequency penalties ->
// temperature -> top-k -> top-p -> min-p -> draw. temperature 0 is greedy.
#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "backend/sampling.h"

namespace farsight {

struct SamplingParams {
    float temperature = 1.0f;         // 0 = greedy
    int32_t top_k = 0;                // 0 = off
    float top_p = 1.0f;               // 1 = off
    float min_p = 0.0f;               // 0 = off
    float repetition_penalty = 1.0f;  // CTRL-style, over prompt + output tokens; 1 = off
    float presence_penalty = 0.0f;    // OpenAI-style, over output tokens
    float frequency_penalty = 0.0f;   // OpenAI-style, over output tokens
    uint64_t seed = 0;
    bool has_seed = false;  // without a seed, draws are seeded from the clock
    int32_t top_logprobs = 0;  // how many alternatives to report
    bool greedy() const { return temperature <= 0.0f || top_k == 1; }
};

struct TokenLogprob {
    int32_t id;
    float logprob;
};

// Token history the penalties look at.
class TokenHistory {
public:
    void add_prompt(std::span<const int32_t> ids);
    void add_output(int32_t id);
    const std::unordered_map<int32_t, int32_t>& output_counts() const { return out_counts_; }
    const std::unordered_map<int32_t, int32_t>& all_counts() const { return all_counts_; }

private:
    std::unordered_map<int32_t, int32_t> out_counts_, all_counts_;
};

class Sampler {
public:
    explicit Sampler(const SamplingParams& p);
    // Applies penalties in place, then returns the probability of every token after all
    // filters (zeros for filtered-out tokens). logits: [vocab].
    std::vector<double> distribution(std::span<float> logits, const TokenHistory& h) const;
    // Picks the next token (applying penalties to logits in place).
    int32_t sample(std::span<float> logits, const TokenHistory& h);
    // log-softmax of the (penalised) logits: the chosen token's logprob and the top n.
    static float logprob_of(std::span<const float> logits, int32_t id);
    static std::vector<TokenLogprob> top_logprobs(std::span<const float> logits, int32_t n);
    const SamplingParams& params() const { return p_; }
    // The seed in use (params().seed, or the clock's when there is none).
    uint64_t seed() const { return seed_; }
    // The backend-sampling form of these parameters for the draw number `counter`, or false when
    // sample_rows cannot apply them (penalties, min-p, top logprobs: those need the logits).
    bool row_sampling(uint64_t counter, RowSampling* out) const;

private:
    void apply_penalties(std::span<float> logits, const TokenHistory& h) const;
    double uniform();  // [0, 1)
    SamplingParams p_;
    uint64_t seed_ = 0;
    uint64_t state_[4];
};

}  // namespace farsight

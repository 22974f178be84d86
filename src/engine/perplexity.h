#pragma once
// Perplexity of a token sequence: one window when it fits the context, else strided windows
// (each token scored once, with up to ctx - stride tokens of left context), as in the
// transformers perplexity guide.
#include <cstdint>
#include <vector>

#include "engine/session.h"

namespace farsight {

struct PerplexityResult {
    int64_t tokens = 0;   // tokens in the sequence
    int64_t scored = 0;   // tokens whose NLL was counted (tokens - 1)
    double mean_nll = 0;
    double ppl = 0;
    int64_t windows = 0;
};

PerplexityResult perplexity(Session& s, const std::vector<int32_t>& ids, int64_t ctx, int64_t stride);

}  // namespace farsight

#include "engine/perplexity.h"

#include <cmath>

#include "core/error.h"

namespace farsight {

PerplexityResult perplexity(Session& s, const std::vector<int32_t>& ids, int64_t ctx, int64_t stride) {
    const int64_t n = static_cast<int64_t>(ids.size());
    FS_CHECK(n >= 2, "perplexity needs at least 2 tokens (got {})", n);
    FS_CHECK(ctx >= 2, "context must be at least 2 tokens");
    if (stride <= 0 || stride > ctx) stride = ctx;
    const int64_t V = s.config().vocab_size;
    PerplexityResult r;
    r.tokens = n;
    double nll = 0;
    int64_t prev_end = 0;
    for (int64_t begin = 0; prev_end < n; begin += stride) {
        const int64_t end = std::min(begin + ctx, n);
        const std::vector<int32_t> win(ids.begin() + begin, ids.begin() + end);
        const std::vector<float> logits = s.score(win);
        ++r.windows;
        // score targets at positions [max(prev_end, begin+1), end): predicted from position - 1
        for (int64_t pos = std::max(prev_end, begin + 1); pos < end; ++pos) {
            const float* row = logits.data() + (pos - 1 - begin) * V;
            double mx = row[0];
            for (int64_t v = 1; v < V; ++v) mx = std::max(mx, static_cast<double>(row[v]));
            double sum = 0;
            for (int64_t v = 0; v < V; ++v) sum += std::exp(static_cast<double>(row[v]) - mx);
            nll += -(static_cast<double>(row[ids[static_cast<size_t>(pos)]]) - mx - std::log(sum));
            ++r.scored;
        }
        prev_end = end;
    }
    r.mean_nll = nll / static_cast<double>(r.scored);
    r.ppl = std::exp(r.mean_nll);
    return r;
}

}  // namespace farsight

// farsight score: one forward pass over given token ids (teacher forcing).
#include <fmt/format.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "cli/common.h"
#include "core/error.h"
#include "engine/session.h"
#include "io/npy.h"

namespace farsight::cli {
namespace {

struct ScoreOpts {
    LoadOptions load;
    std::string ids;
    bool json = false;
    std::string dump;
};

int run_score(const ScoreOpts& o) {
    const std::vector<int32_t> ids = parse_ids(o.ids);
    LoadOptions lo = o.load;
    if (lo.kv_tokens == 0) lo.kv_tokens = static_cast<int64_t>(ids.size()) + lo.block_size;
    Session s(lo);
    const int64_t V = s.config().vocab_size;
    const std::vector<float> logits = s.score(ids);
    const size_t n = ids.size();
    std::vector<int32_t> argmax(n);
    double nll = 0;
    for (size_t t = 0; t < n; ++t) {
        const float* row = logits.data() + t * static_cast<size_t>(V);
        int32_t best = 0;
        double mx = row[0];
        for (int64_t v = 1; v < V; ++v)
            if (row[v] > mx) mx = row[v], best = static_cast<int32_t>(v);
        argmax[t] = best;
        if (t + 1 < n) {  // -log p(ids[t+1] | ids[..t])
            double sum = 0;
            for (int64_t v = 0; v < V; ++v) sum += std::exp(static_cast<double>(row[v]) - mx);
            nll += -(static_cast<double>(row[ids[t + 1]]) - mx - std::log(sum));
        }
    }
    const double mean_nll = n > 1 ? nll / static_cast<double>(n - 1) : 0.0;
    if (!o.dump.empty()) write_npy(o.dump, logits.data(), {static_cast<int64_t>(n), V});
    if (o.json) {
        nlohmann::json j = {{"n_tokens", n}, {"mean_nll", mean_nll}, {"ppl", std::exp(mean_nll)},
                            {"argmax", argmax}};
        fmt::print("{}\n", j.dump());
    } else {
        fmt::print("tokens    {}\nmean_nll  {:.6f}\nppl       {:.4f}\nargmax    {}\n", n, mean_nll,
                   std::exp(mean_nll), fmt::join(argmax, " "));
    }
    return 0;
}

Register reg("score", "Run one forward pass over token ids: mean NLL, perplexity, argmax per position",
             [](CLI::App& app) -> RunFn {
                 auto o = std::make_shared<ScoreOpts>();
                 add_model_options(app, o->load);
                 app.add_option("--ids", o->ids, "Token ids, space- or comma-separated")->required();
                 app.add_flag("--json", o->json,
                              "Print {\"n_tokens\", \"mean_nll\", \"ppl\", \"argmax\"} as JSON");
                 app.add_option("--dump-logits", o->dump,
                                "Write float32 logits [n_tokens, vocab] to this .npy file");
                 return [o] { return run_score(*o); };
             });

}  // namespace
}  // namespace farsight::cli

// farsight perplexity: mean NLL and perplexity of a text file.
#include <fmt/format.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/command.h"
#include "cli/common.h"
#include "core/error.h"
#include "engine/perplexity.h"

namespace farsight::cli {
namespace {

struct PplOpts {
    LoadOptions load;
    GenFlags gen;  // only --tokenizer is used
    std::string file;
    int64_t ctx = 0, stride = 0;
    bool json = false;
};

int run_ppl(const PplOpts& o) {
    std::ifstream f(o.file, std::ios::binary);
    FS_CHECK(f.good(), "cannot read {}", o.file);
    std::stringstream ss;
    ss << f.rdbuf();
    LoadOptions lo = o.load;
    if (lo.kv_tokens == 0 && o.ctx > 0) lo.kv_tokens = o.ctx + lo.block_size;  // one window
    Session s(lo);
    const Tokenizer tok = load_tokenizer(o.gen, s);
    const std::vector<int32_t> ids = tok.encode(ss.str(), true);
    const int64_t ctx = o.ctx > 0 ? o.ctx : s.max_model_len();
    FS_CHECK(ctx <= s.max_model_len(), "--ctx {} exceeds the maximum model length {}", ctx, s.max_model_len());
    const PerplexityResult r = perplexity(s, ids, ctx, o.stride > 0 ? o.stride : ctx / 2);
    if (o.json) {
        fmt::print("{}\n", nlohmann::json({{"tokens", r.tokens}, {"mean_nll", r.mean_nll}, {"ppl", r.ppl},
                                           {"windows", r.windows}, {"ctx", ctx}})
                               .dump());
    } else {
        fmt::print("tokens {} | windows {} (ctx {}) | mean NLL {:.6f} | perplexity {:.4f}\n", r.tokens,
                   r.windows, ctx, r.mean_nll, r.ppl);
    }
    return 0;
}

Register reg("perplexity", "Perplexity of a text file (strided windows when longer than the context)",
             [](CLI::App& app) -> RunFn {
                 auto o = std::make_shared<PplOpts>();
                 add_model_options(app, o->load);
                 app.add_option("-f,--file", o->file, "Text file")->required();
                 app.add_option("--ctx", o->ctx, "Window length in tokens (0 = the model's context)");
                 app.add_option("--stride", o->stride, "Window stride when the text is longer (0 = ctx/2)");
                 app.add_option("--tokenizer", o->gen.tokenizer, "Tokenizer folder (default: the model folder)");
                 app.add_flag("--json", o->json, "Print {\"tokens\", \"mean_nll\", \"ppl\"} as JSON");
                 return [o] { return run_ppl(*o); };
             });

}  // namespace
}  // namespace farsight::cli

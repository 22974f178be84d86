// farsight generate: stream a continuation of a prompt.
#include <fmt/format.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "cli/common.h"
#include "core/error.h"
#include "engine/generate.h"

namespace farsight::cli {
namespace {

struct GenerateOpts {
    LoadOptions load;
    GenFlags gen;
    std::string prompt, prompt_file;
    bool json = false;
    bool no_special = false;
};

int run_generate(GenerateOpts o) {
    if (!o.prompt_file.empty()) {
        std::ifstream f(o.prompt_file, std::ios::binary);
        FS_CHECK(f.good(), "cannot read prompt file {}", o.prompt_file);
        o.prompt.assign(std::istreambuf_iterator<char>(f), {});
    }
    Session s(o.load);
    const Tokenizer tok = load_tokenizer(o.gen, s);
    const GenerationOptions go = resolve_generation(o.gen, s.model_dir(), tok);
    const std::vector<int32_t> ids = tok.encode(o.prompt, !o.no_special);
    TextCallback stream;
    if (!o.json) {
        std::fputs(o.prompt.c_str(), stdout);
        std::fflush(stdout);
        stream = [](const std::string& piece) {
            std::fputs(piece.c_str(), stdout);
            std::fflush(stdout);
        };
    }
    const GenerationResult r = generate(s, tok, ids, go, stream);
    if (o.json) {
        nlohmann::json j = {{"text", r.text},
                            {"ids", r.ids},
                            {"prompt_ids", r.prompt_ids},
                            {"finish_reason", r.finish_reason},
                            {"prefill_tok_s", r.prefill_tok_s()},
                            {"decode_tok_s", r.decode_tok_s()}};
        fmt::print("{}\n", j.dump());
    } else {
        fmt::print("\n");
        std::fflush(stdout);
        fmt::print(stderr, "[{} prompt tokens, {} generated, finish: {}; prefill {:.1f} tok/s, decode {:.1f} tok/s]\n",
                   r.prompt_ids.size(), r.ids.size(), r.finish_reason, r.prefill_tok_s(), r.decode_tok_s());
    }
    return 0;
}

Register reg("generate", "Generate text from a prompt (streams as it is produced)", [](CLI::App& app) -> RunFn {
    auto o = std::make_shared<GenerateOpts>();
    add_model_options(app, o->load);
    add_generation_options(app, o->gen);
    app.add_option("-p,--prompt", o->prompt, "Prompt text (BOS is added as the tokenizer does)");
    app.add_option("-f,--prompt-file", o->prompt_file, "Read the prompt from this file (exactly, newlines included)");
    app.add_flag("--no-special", o->no_special, "Encode the prompt without special tokens (no BOS)");
    app.add_flag("--json", o->json,
                 "Print one JSON object {text, ids, prompt_ids, finish_reason, prefill_tok_s, decode_tok_s}");
    return [o] { return run_generate(*o); };
});

}  // namespace
}  // namespace farsight::cli

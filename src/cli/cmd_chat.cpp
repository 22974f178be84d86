// farsight chat: an interactive multi-turn conversation through the model's chat template.
#include <fmt/format.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "cli/command.h"
#include "cli/common.h"
#include "core/error.h"
#include "engine/generate.h"
#include "tokenizer/chat_template.h"

namespace farsight::cli {
namespace {

struct ChatOpts {
    LoadOptions load;
    GenFlags gen;
    std::string system;
    std::string template_file;
};

int run_chat(const ChatOpts& o) {
    Session s(o.load);
    const Tokenizer tok = load_tokenizer(o.gen, s);
    const GenerationOptions go = resolve_generation(o.gen, s.model_dir(), tok);
    std::optional<std::string> src;
    if (!o.template_file.empty()) {
        std::ifstream f(o.template_file);
        FS_CHECK(f.good(), "cannot read chat template {}", o.template_file);
        src = std::string(std::istreambuf_iterator<char>(f), {});
    } else {
        const std::filesystem::path dir = o.gen.tokenizer.empty() ? s.model_dir() : std::filesystem::path(o.gen.tokenizer);
        src = find_chat_template(dir);
    }
    FS_CHECK(src.has_value(),
             "this model has no chat template (no chat_template.jinja or chat_template in "
             "tokenizer_config.json); pass one with --chat-template FILE or use `farsight generate`");
    const ChatTemplate tmpl(*src);
    nlohmann::ordered_json messages = nlohmann::ordered_json::array();
    if (!o.system.empty()) messages.push_back({{"role", "system"}, {"content", o.system}});
    const bool tty = isatty(0);
    if (tty) fmt::print(stderr, "chat with {} — /reset clears the conversation, /exit or Ctrl-D quits\n",
                        s.model_dir().filename().string());
    std::string line;
    while (true) {
        if (tty) fmt::print("> "), std::fflush(stdout);
        if (!std::getline(std::cin, line)) break;
        if (line == "/exit" || line == "/quit") break;
        if (line == "/reset") {
            messages.erase(messages.begin() + (o.system.empty() ? 0 : 1), messages.end());
            continue;
        }
        if (line.empty()) continue;
        messages.push_back({{"role", "user"}, {"content", line}});
        ChatTemplateInputs in;
        in.messages = messages;
        in.add_generation_prompt = true;
        in.bos_token = tok.bos_token();
        in.eos_token = tok.eos_token();
        const std::string prompt = tmpl.render(in);
        const std::vector<int32_t> ids = tok.encode(prompt, /*add_special_tokens=*/false);
        const GenerationResult r = generate(s, tok, ids, go, [](const std::string& piece) {
            std::fputs(piece.c_str(), stdout);
            std::fflush(stdout);
        });
        fmt::print("\n");
        messages.push_back({{"role", "assistant"}, {"content", r.text}});
    }
    return 0;
}

Register reg("chat", "Chat with a model interactively (multi-turn, through its chat template)",
             [](CLI::App& app) -> RunFn {
                 auto o = std::make_shared<ChatOpts>();
                 add_model_options(app, o->load);
                 add_generation_options(app, o->gen);
                 app.add_option("--system", o->system, "System prompt");
                 app.add_option("--chat-template", o->template_file, "Jinja chat template file (overrides the model's)");
                 return [o] { return run_chat(*o); };
             });

}  // namespace
}  // namespace farsight::cli

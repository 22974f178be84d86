// farsight: the command-line entry point. Commands are registered by src/cli/cmd_*.cpp.
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <map>

#include "cli/command.h"
#include "core/error.h"

namespace farsight::cli {
std::vector<CommandSpec>& registry() {
    static std::vector<CommandSpec> r;
    return r;
}
}  // namespace farsight::cli

int main(int argc, char** argv) {
    using namespace farsight::cli;
    CLI::App app{"farsight: run Hugging Face Llama-family models fast (CPU and CUDA)"};
    app.require_subcommand(1);
    app.set_version_flag("--version", "farsight 0.1.0");
    auto specs = registry();
    std::sort(specs.begin(), specs.end(),
              [](const CommandSpec& a, const CommandSpec& b) { return a.name < b.name; });
    std::map<CLI::App*, RunFn> runs;
    for (auto& s : specs) {
        CLI::App* sub = app.add_subcommand(s.name, s.help);
        runs[sub] = s.setup(*sub);
    }
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    try {
        for (auto& [sub, run] : runs)
            if (sub->parsed()) return run();
    } catch (const farsight::Error& e) {
        std::fflush(stdout);
        fmt::print(stderr, "error: {}\n", e.what());
        return 1;
    } catch (const std::exception& e) {
        std::fflush(stdout);
        fmt::print(stderr, "internal error: {}\n", e.what());
        return 2;
    }
    return 0;
}

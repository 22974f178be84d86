#pragma once
// Each CLI command lives in its own src/cli/cmd_*.cpp and registers itself:
//   static farsight::cli::Register reg("info", "Show a model's architecture ...", setup_fn);
// setup_fn adds options to its CLI11 subcommand and returns the function to run (exit code).
#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

namespace farsight::cli {

using RunFn = std::function<int()>;
using SetupFn = std::function<RunFn(CLI::App&)>;

struct CommandSpec {
    std::string name, help;
    SetupFn setup;
};

std::vector<CommandSpec>& registry();

struct Register {
    Register(std::string name, std::string help, SetupFn setup) {
        registry().push_back({std::move(name), std::move(help), std::move(setup)});
    }
};

}  // namespace farsight::cli

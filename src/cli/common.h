#pragma once
// Options shared by the commands that load a model.
#include <CLI/CLI.hpp>

#include <string>
#include <vector>

#include "engine/session.h"

namespace farsight::cli {

// -m/--model, --dummy, --device, --dtype, --threads, --max-model-len, --kv-tokens, --seed.
void add_model_options(CLI::App& app, LoadOptions& o, bool model_required = false);
// "1 2 3" or "1,2,3" -> ids (throws Error on anything else).
std::vector<int32_t> parse_ids(const std::string& s);

}  // namespace farsight::cli

#pragma once
#include <filesystem>
#include <string>

namespace farsight {

// Resolve a user-supplied model argument to a folder:
//  - an existing directory is returned as is;
//  - "org/name" is looked up in the Hugging Face hub cache: $HF_HUB_CACHE, else $HF_HOME/hub,
//    else ~/.cache/huggingface/hub; models--org--name/refs/main names the snapshot, else the
//    only (or newest) folder under snapshots/.
// Throws Error listing the places searched when nothing is found.
std::filesystem::path resolve_model_path(const std::string& arg);

}  // namespace farsight

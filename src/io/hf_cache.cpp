#include "io/hf_cache.h"

#include <cctype>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <regex>
#include <vector>

#include "core/error.h"

namespace farsight {

namespace fs = std::filesystem;

namespace {

std::optional<std::string> env(const char* name) {
    const char* v = std::getenv(name);
    if (v == nullptr || *v == '\0') return std::nullopt;
    return std::string(v);
}

// The hub cache folder, with huggingface_hub's precedence (constants.py):
// HF_HUB_CACHE, else the legacy HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub, where HF_HOME defaults
// to $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface.
struct CacheCandidate {
    fs::path dir;
    std::string why;  // which variable chose it, for the error message
};

std::vector<CacheCandidate> cache_candidates() {
    std::vector<CacheCandidate> out;
    if (auto v = env("HF_HUB_CACHE")) out.push_back({*v, "$HF_HUB_CACHE"});
    if (auto v = env("HUGGINGFACE_HUB_CACHE")) out.push_back({*v, "$HUGGINGFACE_HUB_CACHE"});
    if (auto v = env("HF_HOME")) out.push_back({fs::path(*v) / "hub", "$HF_HOME/hub"});
    if (auto v = env("XDG_CACHE_HOME"))
        out.push_back({fs::path(*v) / "huggingface" / "hub", "$XDG_CACHE_HOME/huggingface/hub"});
    if (auto v = env("HOME"))
        out.push_back(
            {fs::path(*v) / ".cache" / "huggingface" / "hub", "~/.cache/huggingface/hub"});
    // huggingface_hub uses only the first of these; we search them all, in that order, so a model
    // downloaded before a variable was set is still found.
    std::vector<CacheCandidate> dedup;
    for (auto& c : out) {
        bool dup = false;
        for (auto& d : dedup) dup = dup || d.dir == c.dir;
        if (!dup) dedup.push_back(std::move(c));
    }
    return dedup;
}

bool looks_like_repo_id(const std::string& s) {
    // "name" or "org/name" of letters, digits, '-', '_', '.'; no "..", no leading/trailing '/'.
    static const std::regex re(R"(^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$)");
    return std::regex_match(s, re) && s.find("..") == std::string::npos;
}

std::string trim(std::string s) {
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
    size_t i = 0;
    while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
    return s.substr(i);
}

// Picks the snapshot folder of a models--org--name cache entry.
fs::path pick_snapshot(const fs::path& repo_dir, const std::string& arg) {
    std::error_code ec;
    const fs::path snaps = repo_dir / "snapshots";
    const fs::path ref = repo_dir / "refs" / "main";
    if (fs::is_regular_file(ref, ec)) {
        std::ifstream in(ref);
        std::string hash;
        std::getline(in, hash);
        hash = trim(hash);
        FS_CHECK(
            !hash.empty() && hash.find('/') == std::string::npos && hash != "." && hash != "..",
            "'{}' for model '{}' does not contain a commit hash", ref.string(), arg);
        const fs::path snap = snaps / hash;
        FS_CHECK(fs::is_directory(snap, ec),
                 "'{}' names snapshot '{}' for model '{}', but '{}' does not exist (incomplete "
                 "download? re-run the download)",
                 ref.string(), hash, arg, snap.string());
        return snap;
    }
    FS_CHECK(fs::is_directory(snaps, ec),
             "Hugging Face cache entry '{}' for model '{}' has neither refs/main nor a snapshots/ "
             "folder (incomplete download?)",
             repo_dir.string(), arg);
    std::optional<fs::path> best;
    fs::file_time_type best_time{};
    for (const auto& e : fs::directory_iterator(snaps, ec)) {
        if (!e.is_directory(ec)) continue;
        const auto t = fs::last_write_time(e.path(), ec);
        if (ec) continue;
        // Newest wins; ties broken by name so the choice is deterministic.
        if (!best || t > best_time || (t == best_time && e.path() > *best)) {
            best = e.path();
            best_time = t;
        }
    }
    FS_CHECK(best.has_value(),
             "Hugging Face cache entry '{}' for model '{}' has no snapshot under '{}' (incomplete "
             "download?)",
             repo_dir.string(), arg, snaps.string());
    return *best;
}

}  // namespace

fs::path resolve_model_path(const std::string& arg) {
    FS_CHECK(!arg.empty(),
             "empty model argument: give a model folder or a Hugging Face id "
             "like 'org/name'");
    std::error_code ec;
    const fs::path p(arg);
    if (fs::is_directory(p, ec)) return p;
    if (fs::exists(p, ec))
        fail(
            "model '{}' is a file, not a folder: pass the folder that contains config.json and "
            "the safetensors weights",
            arg);
    if (!looks_like_repo_id(arg))
        fail("model folder '{}' does not exist (and it is not a Hugging Face id like 'org/name')",
             arg);

    // "org/name" -> "models--org--name" (huggingface_hub's repo folder naming).
    std::string entry = "models--";
    for (char c : arg) entry += c == '/' ? std::string("--") : std::string(1, c);

    std::string searched;
    for (const auto& c : cache_candidates()) {
        const fs::path repo_dir = c.dir / entry;
        searched += fmt::format("\n  {} ({})", repo_dir.string(), c.why);
        if (fs::is_directory(repo_dir, ec)) return pick_snapshot(repo_dir, arg);
    }
    if (searched.empty()) searched = "\n  (none: HF_HUB_CACHE, HF_HOME and HOME are all unset)";
    fail(
        "model '{}' is not a local folder and was not found in the Hugging Face cache; "
        "searched:{}\nDownload it first (e.g. `huggingface-cli download {}`) or pass a folder.",
        arg, searched, arg);
}

}  // namespace farsight

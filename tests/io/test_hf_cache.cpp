// resolve_model_path against fake Hugging Face hub caches built in a temp folder (blobs +
// symlinked snapshots + refs/main, the layout huggingface_hub writes).
#include <gtest/gtest.h>

#include <chrono>

#include "io/hf_cache.h"
#include "io/safetensors.h"
#include "io_test_util.h"

using namespace farsight;
using namespace farsight::testing;

namespace {

const char* kHash1 = "0123456789abcdef0123456789abcdef01234567";
const char* kHash2 = "fedcba9876543210fedcba9876543210fedcba98";

// Points every cache variable into `root` (nothing from the real environment leaks in).
void isolate_env(EnvOverride& env, const fs::path& root) {
    env.set("HF_HUB_CACHE", std::nullopt);
    env.set("HUGGINGFACE_HUB_CACHE", std::nullopt);
    env.set("HF_HOME", std::nullopt);
    env.set("XDG_CACHE_HOME", std::nullopt);
    env.set("HOME", (root / "home").string());
}

// Creates <hub>/models--org--name with a blob and snapshots/<hash>/model.safetensors -> blob.
// The tensor holds `value` so tests can tell which snapshot was opened.
fs::path add_snapshot(const fs::path& hub, const std::string& repo_folder, const std::string& hash,
                      float value) {
    const fs::path repo = hub / repo_folder;
    fs::create_directories(repo / "blobs");
    const std::string blob = std::string("blob-") + hash;
    write_file(repo / "blobs" / blob,
               safetensors_bytes(R"({"v":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                                 raw_bytes(std::vector<float>{value})));
    const fs::path snap = repo / "snapshots" / hash;
    fs::create_directories(snap);
    fs::create_symlink(fs::path("..") / ".." / "blobs" / blob, snap / "model.safetensors");
    return snap;
}

void set_ref(const fs::path& hub, const std::string& repo_folder, const std::string& hash) {
    fs::create_directories(hub / repo_folder / "refs");
    write_file(hub / repo_folder / "refs" / "main", hash);  // no trailing newline, like the hub
}

float read_v(const fs::path& folder) {
    auto src = open_safetensors_folder(folder);
    float v;
    std::memcpy(&v, src->get("v").data, 4);
    return v;
}

}  // namespace

TEST(HfCache, ExistingDirectoryIsReturnedAsIs) {
    TempDir dir;
    EXPECT_EQ(resolve_model_path(dir.path().string()), dir.path());
}

TEST(HfCache, HubCacheRefsMainAndSymlinkedBlobs) {
    TempDir root;
    EnvOverride env;
    isolate_env(env, root.path());
    const fs::path hub = root / "hub";
    env.set("HF_HUB_CACHE", hub.string());
    add_snapshot(hub, "models--acme--tiny-llama", kHash1, 1.0f);
    const fs::path want = add_snapshot(hub, "models--acme--tiny-llama", kHash2, 2.0f);
    set_ref(hub, "models--acme--tiny-llama", kHash2);
    const fs::path got = resolve_model_path("acme/tiny-llama");
    EXPECT_EQ(got, want);
    // mmap follows the snapshot symlink into blobs/.
    EXPECT_EQ(read_v(got), 2.0f);
}

TEST(HfCache, RefsMainWithTrailingNewline) {
    TempDir root;
    EnvOverride env;
    isolate_env(env, root.path());
    const fs::path hub = root / "hub";
    env.set("HF_HUB_CACHE", hub.string());
    const fs::path want = add_snapshot(hub, "models--acme--m", kHash1, 1.0f);
    fs::create_directories(hub / "models--acme--m" / "refs");
    write_file(hub / "models--acme--m" / "refs" / "main", std::string(kHash1) + "\n");
    EXPECT_EQ(resolve_model_path("acme/m"), want);
}

TEST(HfCache, HfHomeHubAndHomeFallback) {
    TempDir root;
    EnvOverride env;
    isolate_env(env, root.path());
    // Only ~/.cache/huggingface/hub has it.
    const fs::path home_hub = root / "home" / ".cache" / "huggingface" / "hub";
    const fs::path in_home = add_snapshot(home_hub, "models--org--name", kHash1, 3.0f);
    EXPECT_EQ(resolve_model_path("org/name"), in_home);
    // $HF_HOME/hub comes before ~/.cache.
    env.set("HF_HOME", (root / "hfhome").string());
    const fs::path in_hf_home =
        add_snapshot(root / "hfhome" / "hub", "models--org--name", kHash1, 4.0f);
    EXPECT_EQ(resolve_model_path("org/name"), in_hf_home);
    // $HF_HUB_CACHE comes before $HF_HOME.
    env.set("HF_HUB_CACHE", (root / "hubcache").string());
    const fs::path in_hub_cache =
        add_snapshot(root / "hubcache", "models--org--name", kHash1, 5.0f);
    EXPECT_EQ(resolve_model_path("org/name"), in_hub_cache);
    EXPECT_EQ(read_v(resolve_model_path("org/name")), 5.0f);
}

TEST(HfCache, XdgCacheHome) {
    TempDir root;
    EnvOverride env;
    isolate_env(env, root.path());
    env.set("XDG_CACHE_HOME", (root / "xdg").string());
    const fs::path want =
        add_snapshot(root / "xdg" / "huggingface" / "hub", "models--gpt2", kHash1, 1.0f);
    EXPECT_EQ(resolve_model_path("gpt2"), want);  // ids without an org are valid too
}

TEST(HfCache, NoRefsPicksNewestSnapshot) {
    TempDir root;
    EnvOverride env;
    isolate_env(env, root.path());
    const fs::path hub = root / "hub";
    env.set("HF_HUB_CACHE", hub.string());
    const fs::path older = add_snapshot(hub, "models--a--b", kHash2, 1.0f);
    const fs::path newer = add_snapshot(hub, "models--a--b", kHash1, 2.0f);
    const auto now = fs::file_time_type::clock::now();
    fs::last_write_time(older, now - std::chrono::hours(2));
    fs::last_write_time(newer, now - std::chrono::hours(1));
    EXPECT_EQ(resolve_model_path("a/b"), newer);
    fs::last_write_time(older, now);
    EXPECT_EQ(resolve_model_path("a/b"), older);
}

TEST(HfCache, SingleSnapshotWithoutRefs) {
    TempDir root;
    EnvOverride env;
    isolate_env(env, root.path());
    env.set("HF_HUB_CACHE", (root / "hub").string());
    const fs::path want = add_snapshot(root / "hub", "models--a--b", kHash1, 1.0f);
    EXPECT_EQ(resolve_model_path("a/b"), want);
}

TEST(HfCache, RefsMainNamesMissingSnapshot) {
    TempDir root;
    EnvOverride env;
    isolate_env(env, root.path());
    const fs::path hub = root / "hub";
    env.set("HF_HUB_CACHE", hub.string());
    add_snapshot(hub, "models--a--b", kHash1, 1.0f);
    set_ref(hub, "models--a--b", kHash2);
    expect_error([] { resolve_model_path("a/b"); }, {"refs/main", kHash2, "does not exist", "a/b"});
}

TEST(HfCache, EntryWithoutSnapshots) {
    TempDir root;
    EnvOverride env;
    isolate_env(env, root.path());
    const fs::path hub = root / "hub";
    env.set("HF_HUB_CACHE", hub.string());
    fs::create_directories(hub / "models--a--b" / "snapshots");
    expect_error([] { resolve_model_path("a/b"); }, {"no snapshot", "a/b"});
}

TEST(HfCache, BrokenBlobSymlinkIsReported) {
    TempDir root;
    EnvOverride env;
    isolate_env(env, root.path());
    const fs::path hub = root / "hub";
    env.set("HF_HUB_CACHE", hub.string());
    const fs::path snap = add_snapshot(hub, "models--a--b", kHash1, 1.0f);
    fs::remove(hub / "models--a--b" / "blobs" / (std::string("blob-") + kHash1));
    const fs::path got = resolve_model_path("a/b");
    expect_error([&] { open_safetensors_folder(got); },
                 {(snap / "model.safetensors").string(), "broken symbolic link"});
}

TEST(HfCache, NotFoundListsEveryPlaceSearched) {
    TempDir root;
    EnvOverride env;
    isolate_env(env, root.path());
    env.set("HF_HUB_CACHE", (root / "c1").string());
    env.set("HF_HOME", (root / "c2").string());
    expect_error(
        [] { resolve_model_path("meta-llama/Llama-3.1-8B"); },
        {"meta-llama/Llama-3.1-8B", "not found in the Hugging Face cache",
         (root / "c1" / "models--meta-llama--Llama-3.1-8B").string(), "$HF_HUB_CACHE",
         (root / "c2" / "hub" / "models--meta-llama--Llama-3.1-8B").string(),
         (root / "home" / ".cache" / "huggingface" / "hub" / "models--meta-llama--Llama-3.1-8B")
             .string()});
}

TEST(HfCache, BadArguments) {
    TempDir root;
    write_file(root / "file", "x");
    expect_error([&] { resolve_model_path((root / "file").string()); },
                 {"is a file, not a folder"});
    expect_error([&] { resolve_model_path((root / "missing" / "deeper").string()); },
                 {(root / "missing" / "deeper").string(), "does not exist"});
    expect_error([] { resolve_model_path("./nope"); }, {"'./nope' does not exist"});
    expect_error([] { resolve_model_path(""); }, {"empty model argument"});
}

// The CLI end to end: info/score/generate on the shared models, and a clear error with a
// non-zero exit for every kind of broken model folder.
#include <gtest/gtest.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "io/npy.h"

using nlohmann::json;
namespace fs = std::filesystem;

namespace {
const std::string kShared = FARSIGHT_SHARED_DIR;
const std::string kStories = kShared + "/models/stories260K";

json golden() {
    std::ifstream f(kShared + "/testdata/stories260K_golden.json");
    return json::parse(f);
}

// A copy of stories260K whose config.json / model.safetensors can be broken at will.
struct BrokenModel {
    TempDir dir;
    json config;
    std::string st;  // model.safetensors bytes
    BrokenModel() {
        config = json::parse(read_file(kStories + "/config.json"));
        st = read_file(kStories + "/model.safetensors");
    }
    uint64_t header_len() const {
        uint64_t n;
        std::memcpy(&n, st.data(), 8);
        return n;
    }
    json header() const { return json::parse(st.substr(8, header_len())); }
    void set_header(const json& h) {  // keeps the data section; pads the header with spaces
        std::string s = h.dump();
        const uint64_t old = header_len();
        if (s.size() < old) s.append(old - s.size(), ' ');
        const uint64_t n = s.size();
        std::string out;
        out.resize(8);
        std::memcpy(out.data(), &n, 8);
        out.append(s);
        out.append(st, 8 + old, std::string::npos);
        st.swap(out);
    }
    CliResult info() {
        write_file(dir.path / "config.json", config.dump());
        write_file(dir.path / "model.safetensors", st);
        return run_cli("info -m " + q(dir.path));
    }
};

void expect_error(const CliResult& r, std::initializer_list<const char*> words) {
    EXPECT_EQ(r.code, 1) << r.out;
    EXPECT_NE(r.out.find("error:"), std::string::npos) << r.out;
    for (const char* w : words) EXPECT_NE(r.out.find(w), std::string::npos) << "missing '" << w << "' in: " << r.out;
}
}  // namespace

TEST(Cli, InfoDescribesTheModel) {
    const CliResult r = run_cli("info -m " + kShared + "/models/docs-27M --json");
    ASSERT_EQ(r.code, 0) << r.out;
    const json j = json::parse(r.out);
    EXPECT_EQ(j["architecture"], "LlamaForCausalLM");
    EXPECT_EQ(j["kv_heads"], 2);
    EXPECT_EQ(j["head_dim"], 64);
    EXPECT_EQ(j["dtype"], "bf16");
    EXPECT_EQ(j["context_length"], 1024);
    EXPECT_EQ(j["rope_type"], "default");
    EXPECT_EQ(j["tie_word_embeddings"], true);
    // 8192*512 embeddings + 8 layers * (q,o 512x512 + k,v 128x512 + 3 * 1408x512 + 2 norms) + norm
    const int64_t per_layer = 2 * 512 * 512 + 2 * 128 * 512 + 3 * 1408 * 512 + 2 * 512;
    EXPECT_EQ(j["parameters"], 8192 * 512 + 8 * per_layer + 512);
    EXPECT_EQ(j["weights_bytes"], 2 * j["parameters"].get<int64_t>());
}

TEST(Cli, ScoreMatchesGolden) {
    const json g = golden()["teacher_forced_logits"];
    TempDir t;
    const std::string ids = "1 403 407 261 378";
    const CliResult r = run_cli("score -m " + kStories + " --ids \"" + ids + "\" --json --dump-logits " + q(t.path / "l.npy"));
    ASSERT_EQ(r.code, 0) << r.out;
    const json j = json::parse(r.out);
    EXPECT_EQ(j["n_tokens"], 5);
    EXPECT_EQ(j["argmax"], g["argmax_per_position"]);
    // mean NLL of ids[1:] from the golden logits (float64), by hand
    double nll = 0;
    const std::vector<int> v = {1, 403, 407, 261, 378};
    for (int t2 = 0; t2 < 4; ++t2) {
        const auto& row = g["logits_per_position"][t2];
        double mx = -1e300, s = 0;
        for (const auto& x : row) mx = std::max(mx, x.get<double>());
        for (const auto& x : row) s += std::exp(x.get<double>() - mx);
        nll += -(row[v[t2 + 1]].get<double>() - mx - std::log(s));
    }
    EXPECT_NEAR(j["mean_nll"].get<double>(), nll / 4, 1e-5);
    EXPECT_NEAR(j["ppl"].get<double>(), std::exp(nll / 4), 1e-4);
    const farsight::NpyArray a = farsight::read_npy(t.path / "l.npy");
    ASSERT_EQ(a.shape, (std::vector<int64_t>{5, 512}));
    for (int k = 0; k < 512; ++k) EXPECT_NEAR(a.data[4 * 512 + k], g["logits_per_position"][4][k].get<double>(), 1e-4);
}

TEST(Cli, GreedyGenerateReproducesUpstream) {
    const CliResult r = run_cli("generate -m " + kStories + " -p \"\" -n 200 --temp 0 --json");
    ASSERT_EQ(r.code, 0) << r.out;
    const json j = json::parse(r.out);
    EXPECT_EQ(j["text"], golden()["upstream_expected_stdout_run_c_t0_n200"]);
    EXPECT_EQ(j["prompt_ids"], json::array({1}));
    EXPECT_EQ(j["finish_reason"], "length");
    EXPECT_EQ(j["ids"].size(), 200u);
}

TEST(Cli, BadInvocationsFailCleanly) {
    expect_error(run_cli("info -m /nonexistent/model"), {"/nonexistent/model"});
    expect_error(run_cli("score -m " + kStories + " --ids \"1 99999\""), {"99999", "vocabulary"});
    expect_error(run_cli("score -m " + kStories + " --ids \"1 x2\""), {"x2"});
    expect_error(run_cli("info --dummy no-such-preset"), {"no-such-preset", "preset"});
}

TEST(CliBadFiles, MissingConfig) {
    BrokenModel m;
    write_file(m.dir.path / "model.safetensors", m.st);
    expect_error(run_cli("info -m " + q(m.dir.path)), {"config.json"});
}

TEST(CliBadFiles, MissingWeights) {
    BrokenModel m;
    write_file(m.dir.path / "config.json", m.config.dump());
    expect_error(run_cli("info -m " + q(m.dir.path)), {"model.safetensors"});
}

TEST(CliBadFiles, TruncatedSafetensors) {
    BrokenModel m;
    m.st.resize(m.st.size() - 1000);
    expect_error(m.info(), {"model.safetensors"});
}

TEST(CliBadFiles, TruncatedHeader) {
    BrokenModel m;
    m.st.resize(8 + m.header_len() / 2);
    expect_error(m.info(), {"model.safetensors"});
}

TEST(CliBadFiles, MalformedHeaderJson) {
    BrokenModel m;
    m.st[8] = '[';
    m.st[9] = '{';
    expect_error(m.info(), {"model.safetensors"});
}

TEST(CliBadFiles, OffsetsOutOfBounds) {
    BrokenModel m;
    json h = m.header();
    auto& e = h["model.norm.weight"];
    const uint64_t b = e["data_offsets"][0];
    e["data_offsets"] = {b + 10000000, b + 10000000 + 256};
    m.set_header(h);
    expect_error(m.info(), {"model.norm.weight"});
}

TEST(CliBadFiles, OverlappingTensors) {
    BrokenModel m;
    json h = m.header();
    // point the final norm at the first bytes of the embedding table (same size as a norm row)
    const uint64_t b = h["model.embed_tokens.weight"]["data_offsets"][0];
    h["model.norm.weight"]["data_offsets"] = {b, b + 256};
    m.set_header(h);
    expect_error(m.info(), {"overlap"});
}

TEST(CliBadFiles, UnknownDtype) {
    BrokenModel m;
    json h = m.header();
    h["model.norm.weight"]["dtype"] = "Q7";
    m.set_header(h);
    expect_error(m.info(), {"Q7", "model.norm.weight"});
}

TEST(CliBadFiles, MissingTensor) {
    BrokenModel m;
    json h = m.header();
    h["model.layers.3.mlp.up_proj.weightX"] = h["model.layers.3.mlp.up_proj.weight"];
    h.erase("model.layers.3.mlp.up_proj.weight");
    m.set_header(h);
    expect_error(m.info(), {"model.layers.3.mlp.up_proj.weight", "not found"});
}

TEST(CliBadFiles, ShapeDisagreesWithConfig) {
    BrokenModel m;
    m.config["intermediate_size"] = 200;
    expect_error(m.info(), {"mlp.gate_proj.weight", "shape", "config.json"});
}

TEST(CliBadFiles, UnsupportedArchitecture) {
    BrokenModel m;
    m.config["architectures"] = {"MambaForCausalLM"};
    expect_error(m.info(), {"MambaForCausalLM", "LlamaForCausalLM"});
}

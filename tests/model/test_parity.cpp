// Parity with Hugging Face transformers: fixtures from tools/make_reference.py (float64 forward
// of the same weights) in tests/fixtures/ref/.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/session.h"
#include "io/config.h"
#include "io/npy.h"
#include "model/rope.h"

using namespace farsight;
using nlohmann::json;

namespace {

const std::string kRef = std::string(FARSIGHT_FIXTURES_DIR) + "/ref/";
const std::string kShared = FARSIGHT_SHARED_DIR;

json read_json(const std::string& p) {
    std::ifstream f(p);
    EXPECT_TRUE(f.good()) << p;
    return json::parse(f);
}

struct Compared {
    double worst_rel = 0;  // max over positions of max|Δ| / max|ref|
    double argmax_agree = 0;
    size_t positions = 0;
};

// Runs the model over `tokens` and compares the rows at `positions` with ref [positions, V].
Compared compare(Session& s, const std::vector<int32_t>& tokens, const NpyArray& ref,
                 const std::vector<int64_t>& positions) {
    const std::vector<float> got = s.score(tokens);
    const int64_t V = s.config().vocab_size;
    EXPECT_EQ(ref.shape.size(), 2u);
    EXPECT_EQ(ref.shape[0], static_cast<int64_t>(positions.size()));
    EXPECT_EQ(ref.shape[1], V);
    Compared c;
    size_t agree = 0;
    for (size_t r = 0; r < positions.size(); ++r) {
        const float* g = got.data() + positions[r] * V;
        const double* w = ref.data.data() + r * V;
        double maxd = 0, maxref = 0;
        int64_t ag = 0, aw = 0;
        for (int64_t v = 0; v < V; ++v) {
            maxd = std::max(maxd, std::fabs(g[v] - w[v]));
            maxref = std::max(maxref, std::fabs(w[v]));
            if (g[v] > g[ag]) ag = v;
            if (w[v] > w[aw]) aw = v;
        }
        c.worst_rel = std::max(c.worst_rel, maxd / maxref);
        agree += ag == aw;
    }
    c.positions = positions.size();
    c.argmax_agree = static_cast<double>(agree) / static_cast<double>(positions.size());
    return c;
}

std::vector<int64_t> all_positions(size_t n) {
    std::vector<int64_t> p(n);
    for (size_t i = 0; i < n; ++i) p[i] = static_cast<int64_t>(i);
    return p;
}

void check_case(const std::string& name) {
    const std::string dir = kRef + name;
    const json ref = read_json(dir + "/ref.json");
    const auto tokens = ref["tokens"].get<std::vector<int32_t>>();
    LoadOptions o;
    o.model = ref.value("model_dir_in_shared", json()).is_string() ? kShared + "/" + ref["model_dir_in_shared"].get<std::string>() : dir;
    o.threads = 2;
    o.kv_tokens = static_cast<int64_t>(tokens.size()) + 64;
    o.max_model_len = static_cast<int64_t>(tokens.size());  // dynamic NTK runs past its nominal length
    Session s(o);
    std::vector<int64_t> pos = all_positions(tokens.size());
    if (ref.contains("logits_positions") && ref["logits_positions"].is_array())
        pos = ref["logits_positions"].get<std::vector<int64_t>>();
    const NpyArray want = read_npy(dir + "/logits.npy");
    const Compared c = compare(s, tokens, want, pos);
    const bool bf16 = ref["weights_dtype"] == "bfloat16";
    std::printf("[figure] %-16s %s weights: max|dlogit|/max|logit| = %.2e, argmax agreement %.1f%% (%zu positions)\n",
                name.c_str(), bf16 ? "bf16" : "f32 ", c.worst_rel, 100 * c.argmax_agree, c.positions);
    if (bf16) {
        EXPECT_GE(c.argmax_agree, 0.99);
        EXPECT_LE(c.worst_rel, 1e-4);  // same bf16 weights, f32 arithmetic: still tight
    } else {
        EXPECT_LE(c.worst_rel, 1e-4);
        EXPECT_EQ(c.argmax_agree, 1.0);
    }
    // transformers' own rotary frequencies, where recorded (computed for the full sequence)
    if (ref.contains("rope") && ref["rope"].contains("inv_freq")) {
        const RopeFreqs f = rope_freqs(s.config(), static_cast<int64_t>(tokens.size()));
        const auto inv = ref["rope"]["inv_freq"].get<std::vector<double>>();
        ASSERT_EQ(f.inv_freq.size(), inv.size());
        for (size_t i = 0; i < inv.size(); ++i) EXPECT_NEAR(f.inv_freq[i], inv[i], 4e-7 * inv[i]) << name << " inv_freq[" << i << "]";
        EXPECT_NEAR(f.attention_scaling, ref["rope"]["attention_scaling"].get<double>(), 1e-6);
    }
    // extra references: a shorter forward (dynamic / longrope switch back to the short regime)
    if (ref.contains("extra_logits"))
        for (const auto& e : ref["extra_logits"]) {
            const std::string file = e["file"];
            if (file.find("prefix") == std::string::npos) continue;
            const int64_t n = e["n_tokens"];
            const std::vector<int32_t> prefix(tokens.begin(), tokens.begin() + n);
            const Compared p = compare(s, prefix, read_npy(dir + "/" + file), all_positions(static_cast<size_t>(n)));
            std::printf("[figure] %-16s %lld-token prefix: max|dlogit|/max|logit| = %.2e\n", name.c_str(),
                        static_cast<long long>(n), p.worst_rel);
            EXPECT_LE(p.worst_rel, 1e-4);
        }
    // mean NLL as `farsight score` computes it
    EXPECT_EQ(s.pool().num_used(), 0);
}

std::vector<std::string> case_names() {
    std::vector<std::string> v;
    const json index = read_json(kRef + "index.json");
    for (const auto& c : index["cases"]) {
        const std::string n = c["name"];
        if (n != "docs27M_long") v.push_back(n);
    }
    return v;
}

}  // namespace

class Parity : public ::testing::TestWithParam<std::string> {};
TEST_P(Parity, LogitsMatchTransformers) { check_case(GetParam()); }
INSTANTIATE_TEST_SUITE_P(Transformers, Parity, ::testing::ValuesIn(case_names()),
                         [](const auto& info) { return info.param; });

// The legacy spellings (rope_scaling + "type"/"rope_type" + top-level rope_theta) mean the same.
TEST(ParityConfig, LegacyRopeSpellingsAgree) {
    int checked = 0;
    for (const std::string& name : case_names()) {
        const std::string dir = kRef + name;
        for (const char* legacy : {"config_legacy.json"}) {
            if (!std::filesystem::exists(dir + "/" + legacy)) continue;
            const ModelConfig a = parse_model_config(std::filesystem::path(dir + "/config.json"));
            const ModelConfig b = parse_model_config(std::filesystem::path(dir + "/" + legacy));
            EXPECT_EQ(a.rope.type, b.rope.type) << name;
            EXPECT_EQ(rope_freqs(a, 200).inv_freq, rope_freqs(b, 200).inv_freq) << name;
            EXPECT_EQ(rope_freqs(a, 200).attention_scaling, rope_freqs(b, 200).attention_scaling) << name;
            ++checked;
        }
    }
    EXPECT_GE(checked, 4);
}

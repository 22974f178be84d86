// stories260K against the golden file in ../shared/testdata (float64 reference forward).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/session.h"

using namespace farsight;

namespace {
const std::string kShared = FARSIGHT_SHARED_DIR;

nlohmann::json golden() {
    std::ifstream f(kShared + "/testdata/stories260K_golden.json");
    return nlohmann::json::parse(f);
}

LoadOptions stories_opts() {
    LoadOptions o;
    o.model = kShared + "/models/stories260K";
    o.threads = 2;
    return o;
}
}  // namespace

TEST(Stories260K, TeacherForcedLogitsMatchGolden) {
    const auto g = golden();
    const auto& tf = g["teacher_forced_logits"];
    const std::vector<int32_t> ids = tf["tokens"].get<std::vector<int32_t>>();
    Session s(stories_opts());
    const std::vector<float> logits = s.score(ids);
    const int64_t V = s.config().vocab_size;
    ASSERT_EQ(logits.size(), ids.size() * static_cast<size_t>(V));
    double max_err = 0;
    for (size_t t = 0; t < ids.size(); ++t) {
        const auto& ref = tf["logits_per_position"][t];
        ASSERT_EQ(ref.size(), static_cast<size_t>(V));
        for (int64_t v = 0; v < V; ++v)
            max_err = std::max(max_err, std::fabs(logits[t * V + v] - ref[v].get<double>()));
    }
    std::printf("[figure] stories260K teacher-forced max abs logit error %.3g\n", max_err);
    EXPECT_LE(max_err, 1e-4) << "max |logit - golden|";
    // position 0 logits from BOS alone
    const std::vector<float> l0 = s.score(std::vector<int32_t>{1});
    double e0 = 0;
    for (int64_t v = 0; v < V; ++v) e0 = std::max(e0, std::fabs(l0[v] - g["logits_bos_pos0"][v].get<double>()));
    EXPECT_LE(e0, 1e-4);
}

// Greedy decoding from BOS, one token at a time through the KV cache, reproduces the golden run.
TEST(Stories260K, GreedyChainFromBosMatchesGolden) {
    const auto g = golden()["greedy_from_bos"];
    const std::vector<int32_t> want = g["tokens"].get<std::vector<int32_t>>();
    Session s(stories_opts());
    const int64_t V = s.config().vocab_size;
    BlockTable table;
    std::vector<int32_t> got = {want[0]};
    while (got.size() < want.size()) {
        std::vector<int32_t> tok = {got.back()};
        SeqStep step{&table, tok, false};
        const std::vector<float> lg = s.forward(std::span<SeqStep>(&step, 1));
        got.push_back(static_cast<int32_t>(std::max_element(lg.begin(), lg.begin() + V) - lg.begin()));
    }
    table.release(s.pool());
    EXPECT_EQ(got, want);
    EXPECT_EQ(s.pool().num_used(), 0);
}

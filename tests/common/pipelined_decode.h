// Pipelined decode (Session::forward_sample_enqueue / forward_sample_collect, each step's tokens
// fed from the step before) against the synchronous loop (forward_sample, ids fed back by the
// caller): the same ids and logprobs for a batch of three sequences with different prompts,
// one greedy row and two stochastic ones (seeded draws, top-k / top-p). Used by the CPU engine
// tests (the session's host feed) and the GPU sampling tests (the device feed).
#pragma once

#include <gtest/gtest.h>

#include <vector>

#include "engine/session.h"

namespace farsight::testref {

struct DecodeRun {
    std::vector<std::vector<int32_t>> ids;  // per sequence: the sampled ids
    std::vector<std::vector<float>> logprobs;
};

inline std::vector<RowSampling> pipelined_test_rows() {
    std::vector<RowSampling> rows(3);
    rows[1].temperature = 0.8f;
    rows[1].top_k = 40;
    rows[1].seed = 5;
    rows[2].temperature = 1.0f;
    rows[2].top_p = 0.9f;
    rows[2].seed = 9;
    return rows;
}

// n steps: the first runs the prompts, every later one the previous step's ids.
inline DecodeRun run_decode(Session& s, bool pipelined, int n) {
    const std::vector<std::vector<int32_t>> prompts = {{1}, {1, 403, 9}, {1, 9, 7, 30, 2}};
    std::vector<BlockTable> tabs(prompts.size());
    std::vector<RowSampling> rows = pipelined_test_rows();
    DecodeRun r;
    r.ids.resize(prompts.size());
    r.logprobs.resize(prompts.size());
    std::vector<float> lp;
    auto record = [&](const std::vector<int32_t>& ids) {
        EXPECT_EQ(ids.size(), prompts.size());
        EXPECT_EQ(lp.size(), prompts.size());
        for (size_t k = 0; k < prompts.size() && k < ids.size() && k < lp.size(); ++k) {
            r.ids[k].push_back(ids[k]);
            r.logprobs[k].push_back(lp[k]);
        }
    };
    std::vector<int32_t> placeholder(prompts.size(), 0);
    auto steps_for = [&](int i) {
        std::vector<SeqStep> steps;
        for (size_t k = 0; k < prompts.size(); ++k) {
            if (i == 0) {
                steps.push_back({&tabs[k], prompts[k], false});
            } else if (pipelined) {
                steps.push_back({&tabs[k], std::span<const int32_t>(&placeholder[k], 1), false});
            } else {
                steps.push_back({&tabs[k], std::span<const int32_t>(&r.ids[k].back(), 1), false});
            }
        }
        for (auto& row : rows) row.counter = static_cast<uint64_t>(i);
        return steps;
    };
    if (pipelined) {
        auto first = steps_for(0);
        s.forward_sample_enqueue(first, rows, false, true);
        for (int i = 1; i < n; ++i) {
            auto steps = steps_for(i);
            s.forward_sample_enqueue(steps, rows, true, true);
            record(s.forward_sample_collect(&lp));
        }
        record(s.forward_sample_collect(&lp));
        EXPECT_EQ(s.outstanding(), 0u);
    } else {
        for (int i = 0; i < n; ++i) {
            auto steps = steps_for(i);
            record(s.forward_sample(steps, rows, &lp));
        }
    }
    for (size_t k = 0; k < prompts.size(); ++k) {
        EXPECT_EQ(tabs[k].num_cached(), static_cast<int64_t>(prompts[k].size()) + n - 1) << k;
        tabs[k].release(s.pool());
    }
    return r;
}

inline void expect_pipelined_equals_sync(Session& s, int n) {
    const DecodeRun want = run_decode(s, false, n);
    const DecodeRun got = run_decode(s, true, n);
    for (size_t k = 0; k < want.ids.size(); ++k) {
        EXPECT_EQ(got.ids[k], want.ids[k]) << "sequence " << k;
        EXPECT_EQ(got.logprobs[k], want.logprobs[k]) << "sequence " << k;
        ASSERT_EQ(want.ids[k].size(), static_cast<size_t>(n));
    }
    // the stochastic rows really drew: some of their tokens had a probability below 0.6
    bool some_unlikely = false;
    for (size_t k = 1; k < want.logprobs.size(); ++k)
        for (float x : want.logprobs[k]) some_unlikely |= x < -0.5f;
    EXPECT_TRUE(some_unlikely) << "the stochastic rows never drew a token of probability < 0.6";
}

}  // namespace farsight::testref

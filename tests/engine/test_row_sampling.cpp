// Backend sampling (Backend::sample_rows; CPU reference sample_rows_reference): greedy equals
// the CPU Sampler bitwise-in-token, draws follow the filtered distribution (chi-square against
// fp64 arithmetic written here), and Session::forward_sample on the CPU backend equals forward's
// argmax with the same logprobs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "backend/sampling.h"
#include "common/filtered_distribution.h"
#include "common/pipelined_decode.h"
#include "engine/sampler.h"
#include "core/error.h"
#include "engine/session.h"

using namespace farsight;

namespace {

using testref::filtered;

}  // namespace

TEST(RowSampling, GreedyEqualsSamplerWithTies) {
    std::mt19937 rng(7);
    std::uniform_int_distribution<int> u(-20, 20);
    const int64_t V = 777, R = 50;
    std::vector<float> lg(static_cast<size_t>(R * V));
    for (auto& x : lg) x = static_cast<float>(u(rng)) * 0.5f;  // many ties at the maximum
    std::vector<RowSampling> params(static_cast<size_t>(R));
    for (size_t r = 0; r < params.size(); ++r)
        params[r].top_k = r % 2 ? 1 : 0;  // both greedy forms
    std::vector<int32_t> ids(static_cast<size_t>(R));
    std::vector<float> lp(static_cast<size_t>(R));
    sample_rows_reference(lg.data(), R, V, params.data(), ids.data(), lp.data());
    SamplingParams sp;
    sp.temperature = 0;
    Sampler greedy(sp);
    TokenHistory h;
    for (int64_t r = 0; r < R; ++r) {
        std::vector<float> row(lg.begin() + r * V, lg.begin() + (r + 1) * V);
        const int32_t want = greedy.sample(row, h);
        EXPECT_EQ(ids[static_cast<size_t>(r)], want) << r;
        EXPECT_EQ(lp[static_cast<size_t>(r)], Sampler::logprob_of(row, want)) << r;
    }
}

TEST(RowSampling, DrawsAreAFunctionOfSeedAndCounter) {
    const std::vector<float> l = {0.1f, 0.2f, 0.3f, 0.0f, -0.1f, 0.25f};
    RowSampling p;
    p.temperature = 1.0f;
    int32_t a = 0, b = 0;
    int differ = 0;
    for (uint64_t c = 0; c < 200; ++c) {
        p.counter = c;
        p.seed = 5;
        sample_rows_reference(l.data(), 1, 6, &p, &a, nullptr);
        sample_rows_reference(l.data(), 1, 6, &p, &b, nullptr);
        EXPECT_EQ(a, b);
        p.seed = 6;
        sample_rows_reference(l.data(), 1, 6, &p, &b, nullptr);
        differ += a != b;
    }
    EXPECT_GT(differ, 50);
}

TEST(RowSampling, TopKTopPFrequenciesMatchDistribution) {
    const std::vector<float>& l = testref::kFrequencyLogits;
    const int64_t V = static_cast<int64_t>(l.size());
    const int N = 100000;
    for (const testref::FilterCase& c : testref::kFrequencyCases) {
        RowSampling p;
        p.temperature = c.T;
        p.top_k = c.k;
        p.top_p = c.p;
        p.seed = 9;
        std::vector<double> cnt(static_cast<size_t>(V), 0.0);
        for (int i = 0; i < N; ++i) {
            p.counter = static_cast<uint64_t>(i);
            int32_t id = -1;
            sample_rows_reference(l.data(), 1, V, &p, &id, nullptr);
            ASSERT_GE(id, 0);
            ASSERT_LT(id, V);
            cnt[static_cast<size_t>(id)] += 1;
        }
        const auto q = filtered(l, c.T, c.k, c.p);
        double chi2 = 0;
        int dof = -1;
        for (int64_t i = 0; i < V; ++i) {
            const double e = q[static_cast<size_t>(i)] * N;
            if (e == 0) {
                EXPECT_EQ(cnt[static_cast<size_t>(i)], 0) << i;
                continue;
            }
            chi2 += (cnt[static_cast<size_t>(i)] - e) * (cnt[static_cast<size_t>(i)] - e) / e;
            ++dof;
        }
        EXPECT_LT(chi2, 3.0 * dof + 40.0) << "T " << c.T << " k " << c.k << " p " << c.p;
    }
}

TEST(RowSampling, SamplerParametersTheBackendCannotApply) {
    RowSampling r;
    SamplingParams p;
    p.temperature = 0.8f;
    p.top_k = 40;
    p.top_p = 0.9f;
    p.seed = 3;
    p.has_seed = true;
    EXPECT_TRUE(Sampler(p).row_sampling(17, &r));
    EXPECT_EQ(r.temperature, 0.8f);
    EXPECT_EQ(r.top_k, 40);
    EXPECT_EQ(r.top_p, 0.9f);
    EXPECT_EQ(r.seed, 3u);
    EXPECT_EQ(r.counter, 17u);
    SamplingParams g = p;
    g.temperature = 0;
    ASSERT_TRUE(Sampler(g).row_sampling(0, &r));
    EXPECT_TRUE(r.greedy());
    for (int i = 0; i < 5; ++i) {
        SamplingParams q = p;
        if (i == 0) q.repetition_penalty = 1.1f;
        if (i == 1) q.presence_penalty = 0.5f;
        if (i == 2) q.frequency_penalty = 0.5f;
        if (i == 3) q.min_p = 0.1f;
        if (i == 4) q.top_logprobs = 2;
        EXPECT_FALSE(Sampler(q).row_sampling(0, &r)) << i;
    }
}

TEST(RowSampling, SessionForwardSampleOnCpuEqualsForward) {
    LoadOptions o;
    o.model = std::string(FARSIGHT_SHARED_DIR) + "/models/stories260K";
    Session s(o);
    EXPECT_FALSE(s.backend().prefers_device_sampling());
    EXPECT_FALSE(s.device_sampling());
    const int64_t V = s.config().vocab_size;
    BlockTable a, b;
    std::vector<int32_t> ta = {1, 403, 9}, tb = {1, 403, 9};
    RowSampling greedy;
    std::vector<float> lp;
    for (int i = 0; i < 40; ++i) {
        SeqStep sa{&a,
                   std::span<const int32_t>(ta.data() + (i ? ta.size() - 1 : 0), i ? 1 : ta.size()),
                   false};
        SeqStep sb{&b,
                   std::span<const int32_t>(tb.data() + (i ? tb.size() - 1 : 0), i ? 1 : tb.size()),
                   false};
        auto lg = s.forward(std::span<SeqStep>(&sa, 1));
        const auto want =
            static_cast<int32_t>(std::max_element(lg.begin(), lg.begin() + V) - lg.begin());
        const auto got = s.forward_sample(std::span<SeqStep>(&sb, 1),
                                          std::span<const RowSampling>(&greedy, 1), &lp);
        ASSERT_EQ(got.size(), 1u);
        EXPECT_EQ(got[0], want) << i;
        EXPECT_EQ(lp[0], Sampler::logprob_of(
                             std::span<const float>(lg.data(), static_cast<size_t>(V)), want))
            << i;
        ta.push_back(want);
        tb.push_back(got[0]);
    }
    EXPECT_EQ(a.num_cached(), b.num_cached());
    a.release(s.pool());
    b.release(s.pool());
}

// Pipelined decode on the CPU backend (no device feed: the session feeds each step the ids it
// collected from the step before) gives the synchronous loop's ids and logprobs; misuse is
// refused with a message.
TEST(RowSampling, PipelinedDecodeOnCpuEqualsSynchronous) {
    LoadOptions o;
    o.model = std::string(FARSIGHT_SHARED_DIR) + "/models/stories260K";
    Session s(o);
    EXPECT_FALSE(s.backend().sample_feed());
    EXPECT_FALSE(s.pipelined_decode());  // the CPU backend keeps the logits path
    testref::expect_pipelined_equals_sync(s, 24);

    BlockTable t;
    const std::vector<int32_t> prompt = {1, 403};
    RowSampling greedy;
    SeqStep st{&t, prompt, false};
    std::span<SeqStep> one(&st, 1);
    std::span<const RowSampling> g(&greedy, 1);
    EXPECT_THROW(s.forward_sample_enqueue(one, g, /*tokens_from_previous=*/true), Error);
    s.forward_sample_enqueue(one, g);
    EXPECT_THROW(s.forward(one), Error);  // a step is outstanding
    EXPECT_THROW((void)s.forward_sample(one, g), Error);
    std::vector<float> lp;
    EXPECT_THROW((void)s.forward_sample_collect(&lp), Error);  // queued without logprobs
    EXPECT_EQ(s.outstanding(), 1u);
    EXPECT_EQ(s.forward_sample_collect().size(), 1u);
    EXPECT_EQ(s.outstanding(), 0u);
    EXPECT_THROW((void)s.forward_sample_collect(), Error);
    t.release(s.pool());
}

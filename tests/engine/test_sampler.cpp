// Sampling filters: 100k draws per filter against the exactly computed filtered distribution
// (chi-square), written here independently of the sampler's own code.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <random>

#include "engine/sampler.h"

using namespace farsight;

namespace {

const std::vector<float> kLogits = {2.0f, 1.5f, 1.4f, 0.3f, -0.2f, 0.9f, -1.0f, 3.1f, 0.0f, 1.1f, -2.5f, 0.6f};

// softmax(l / T) in double
std::vector<double> softmax(const std::vector<double>& l, double T) {
    double mx = *std::max_element(l.begin(), l.end()) / T, s = 0;
    std::vector<double> p(l.size());
    for (size_t i = 0; i < l.size(); ++i) s += p[i] = std::exp(l[i] / T - mx);
    for (double& x : p) x /= s;
    return p;
}
std::vector<double> normalise(std::vector<double> p) {
    double s = std::accumulate(p.begin(), p.end(), 0.0);
    for (double& x : p) x /= s;
    return p;
}

// Wilson-Hilferty approximation of the chi-square quantile at 1 - 1e-4.
double chi2_critical(int df) {
    const double z = 3.719, a = 2.0 / (9.0 * df);
    return df * std::pow(1 - a + z * std::sqrt(a), 3);
}

void expect_matches(SamplingParams p, const std::vector<double>& want, const TokenHistory& h = {}) {
    p.has_seed = true;
    p.seed = 1234;
    Sampler s(p);
    const int N = 100000;
    std::vector<int> counts(kLogits.size(), 0);
    for (int i = 0; i < N; ++i) {
        std::vector<float> l = kLogits;
        ++counts[static_cast<size_t>(s.sample(l, h))];
    }
    double chi2 = 0;
    int df = -1;
    for (size_t i = 0; i < want.size(); ++i) {
        if (want[i] == 0) {
            EXPECT_EQ(counts[i], 0) << "filtered token " << i << " was drawn";
            continue;
        }
        const double e = want[i] * N;
        chi2 += (counts[i] - e) * (counts[i] - e) / e;
        ++df;
    }
    ASSERT_GT(df, 0);
    EXPECT_LT(chi2, chi2_critical(df)) << "chi2 " << chi2 << " df " << df;
    std::printf("[figure] chi2 = %.2f (df %d, critical %.2f)\n", chi2, df, chi2_critical(df));
}

std::vector<double> base() { return std::vector<double>(kLogits.begin(), kLogits.end()); }

}  // namespace

TEST(Sampler, Temperature) {
    SamplingParams p;
    p.temperature = 0.7f;
    expect_matches(p, softmax(base(), 0.7));
}

TEST(Sampler, TopK) {
    SamplingParams p;
    p.top_k = 4;
    auto q = softmax(base(), 1.0);
    // the 4 largest logits: 3.1 (7), 2.0 (0), 1.5 (1), 1.4 (2)
    for (size_t i = 0; i < q.size(); ++i)
        if (i != 7 && i != 0 && i != 1 && i != 2) q[i] = 0;
    expect_matches(p, normalise(q));
}

TEST(Sampler, TopP) {
    SamplingParams p;
    p.top_p = 0.8f;
    auto q = softmax(base(), 1.0);
    // keep the most likely tokens until their mass reaches 0.8
    std::vector<size_t> order(q.size());
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return q[a] > q[b]; });
    double cum = 0;
    std::vector<double> want(q.size(), 0);
    for (size_t i : order) {
        want[i] = q[i];
        cum += q[i];
        if (cum >= 0.8) break;
    }
    expect_matches(p, normalise(want));
}

TEST(Sampler, MinP) {
    SamplingParams p;
    p.min_p = 0.2f;
    p.temperature = 1.3f;
    auto q = softmax(base(), 1.3);
    const double top = *std::max_element(q.begin(), q.end());
    for (double& x : q)
        if (x < 0.2 * top) x = 0;
    expect_matches(p, normalise(q));
}

TEST(Sampler, Penalties) {
    TokenHistory h;
    std::vector<int32_t> prompt = {7, 3};
    h.add_prompt(prompt);
    h.add_output(0);
    h.add_output(0);
    h.add_output(9);
    SamplingParams p;
    p.repetition_penalty = 1.3f;
    p.presence_penalty = 0.4f;
    p.frequency_penalty = 0.25f;
    auto l = base();
    for (int id : {7, 3, 0, 9}) l[static_cast<size_t>(id)] = l[static_cast<size_t>(id)] > 0 ? l[static_cast<size_t>(id)] / 1.3 : l[static_cast<size_t>(id)] * 1.3;
    l[0] -= 0.4 + 0.25 * 2;  // output twice
    l[9] -= 0.4 + 0.25 * 1;
    expect_matches(p, softmax(l, 1.0), h);
}

TEST(Sampler, TopKTopPMinPTogether) {
    SamplingParams p;
    p.top_k = 6;
    p.top_p = 0.9f;
    p.min_p = 0.15f;
    p.temperature = 0.9f;
    auto q = softmax(base(), 0.9);
    std::vector<size_t> order(q.size());
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return q[a] > q[b]; });
    std::vector<double> w(q.size(), 0);
    for (size_t r = 0; r < 6; ++r) w[order[r]] = q[order[r]];
    w = normalise(w);
    std::vector<double> w2(q.size(), 0);
    double cum = 0;
    for (size_t r = 0; r < 6; ++r) {
        w2[order[r]] = w[order[r]];
        cum += w[order[r]];
        if (cum >= 0.9) break;
    }
    w2 = normalise(w2);
    const double top = *std::max_element(w2.begin(), w2.end());
    for (double& x : w2)
        if (x < 0.15 * top) x = 0;
    expect_matches(p, normalise(w2));
}

TEST(Sampler, GreedyAndSeeds) {
    SamplingParams g;
    g.temperature = 0;
    Sampler s(g);
    std::vector<float> l = kLogits;
    EXPECT_EQ(s.sample(l, {}), 7);
    SamplingParams p;
    p.has_seed = true;
    p.seed = 42;
    Sampler a(p), b(p);
    p.seed = 43;
    Sampler c(p);
    std::vector<int32_t> ra, rb, rc;
    for (int i = 0; i < 200; ++i) {
        std::vector<float> x = kLogits, y = kLogits, z = kLogits;
        ra.push_back(a.sample(x, {}));
        rb.push_back(b.sample(y, {}));
        rc.push_back(c.sample(z, {}));
    }
    EXPECT_EQ(ra, rb);
    EXPECT_NE(ra, rc);
}

TEST(Sampler, Logprobs) {
    std::vector<float> l = kLogits;
    const auto q = softmax(base(), 1.0);
    EXPECT_NEAR(Sampler::logprob_of(l, 4), std::log(q[4]), 1e-6);
    const auto top = Sampler::top_logprobs(l, 3);
    ASSERT_EQ(top.size(), 3u);
    EXPECT_EQ(top[0].id, 7);
    EXPECT_EQ(top[1].id, 0);
    EXPECT_EQ(top[2].id, 1);
    EXPECT_NEAR(top[0].logprob, std::log(q[7]), 1e-6);
}

#include "engine/sampler.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "core/random.h"

namespace farsight {

void TokenHistory::add_prompt(std::span<const int32_t> ids) {
    for (int32_t id : ids) ++all_counts_[id];
}
void TokenHistory::add_output(int32_t id) {
    ++all_counts_[id];
    ++out_counts_[id];
}

namespace {
uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
}  // namespace

Sampler::Sampler(const SamplingParams& p) : p_(p) {
    FS_CHECK(p.temperature >= 0, "temperature must be >= 0 (got {})", p.temperature);
    FS_CHECK(p.top_p > 0 && p.top_p <= 1, "top_p must be in (0, 1] (got {})", p.top_p);
    FS_CHECK(p.min_p >= 0 && p.min_p <= 1, "min_p must be in [0, 1] (got {})", p.min_p);
    FS_CHECK(p.top_k >= 0, "top_k must be >= 0 (got {})", p.top_k);
    FS_CHECK(p.repetition_penalty > 0, "repetition penalty must be > 0 (got {})", p.repetition_penalty);
    uint64_t s = p.has_seed ? p.seed
                            : static_cast<uint64_t>(std::chrono::high_resolution_clock::now().time_since_epoch().count());
    seed_ = s;
    for (auto& x : state_) x = splitmix64(s);
}

bool Sampler::row_sampling(uint64_t counter, RowSampling* out) const {
    if (p_.repetition_penalty != 1.0f || p_.presence_penalty != 0.0f || p_.frequency_penalty != 0.0f ||
        p_.min_p > 0.0f || p_.top_logprobs > 0)
        return false;
    RowSampling r;
    r.temperature = p_.greedy() ? 0.0f : p_.temperature;
    r.top_k = p_.top_k;
    r.top_p = p_.top_p;
    r.seed = seed_;
    r.counter = counter;
    *out = r;
    return true;
}

double Sampler::uniform() {  // xoshiro256**
    const uint64_t result = rotl(state_[1] * 5, 7) * 9;
    const uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = rotl(state_[3], 45);
    return static_cast<double>(result >> 11) * 0x1.0p-53;
}

void Sampler::apply_penalties(std::span<float> logits, const TokenHistory& h) const {
    if (p_.repetition_penalty != 1.0f)
        for (const auto& [id, n] : h.all_counts()) {
            float& l = logits[static_cast<size_t>(id)];
            l = l > 0 ? l / p_.repetition_penalty : l * p_.repetition_penalty;
        }
    if (p_.presence_penalty != 0.0f || p_.frequency_penalty != 0.0f)
        for (const auto& [id, n] : h.output_counts())
            logits[static_cast<size_t>(id)] -= p_.presence_penalty + p_.frequency_penalty * static_cast<float>(n);
}

std::vector<double> Sampler::distribution(std::span<float> logits, const TokenHistory& h) const {
    apply_penalties(logits, h);
    const size_t V = logits.size();
    std::vector<double> prob(V, 0.0);
    if (p_.greedy()) {
        prob[static_cast<size_t>(std::max_element(logits.begin(), logits.end()) - logits.begin())] = 1.0;
        return prob;
    }
    // temperature + softmax (in double)
    const double T = p_.temperature;
    double mx = -INFINITY;
    for (float l : logits) mx = std::max(mx, static_cast<double>(l) / T);
    double sum = 0;
    for (size_t i = 0; i < V; ++i) sum += prob[i] = std::exp(static_cast<double>(logits[i]) / T - mx);
    for (double& x : prob) x /= sum;
    // order by probability (ties by id) for top-k / top-p
    std::vector<int32_t> order(V);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return prob[static_cast<size_t>(a)] > prob[static_cast<size_t>(b)]; });
    size_t keep = V;
    if (p_.top_k > 0) keep = std::min(keep, static_cast<size_t>(p_.top_k));
    if (p_.top_p < 1.0f) {
        // smallest prefix whose mass reaches top_p (renormalised over the top-k survivors)
        double kept_mass = 0;
        for (size_t i = 0; i < keep; ++i) kept_mass += prob[static_cast<size_t>(order[i])];
        double cum = 0;
        size_t n = 0;
        while (n < keep) {
            cum += prob[static_cast<size_t>(order[n])] / kept_mass;
            ++n;
            if (cum >= static_cast<double>(p_.top_p)) break;
        }
        keep = std::max<size_t>(n, 1);
    }
    for (size_t i = keep; i < V; ++i) prob[static_cast<size_t>(order[i])] = 0.0;
    if (p_.min_p > 0.0f) {
        const double top = prob[static_cast<size_t>(order[0])];
        for (double& x : prob)
            if (x < static_cast<double>(p_.min_p) * top) x = 0.0;
    }
    double z = 0;
    for (double x : prob) z += x;
    for (double& x : prob) x /= z;
    return prob;
}

int32_t Sampler::sample(std::span<float> logits, const TokenHistory& h) {
    const std::vector<double> prob = distribution(logits, h);
    if (p_.greedy())
        return static_cast<int32_t>(std::max_element(prob.begin(), prob.end()) - prob.begin());
    const double u = uniform();
    double cum = 0;
    int32_t last = 0;
    for (size_t i = 0; i < prob.size(); ++i) {
        if (prob[i] <= 0) continue;
        cum += prob[i];
        last = static_cast<int32_t>(i);
        if (u < cum) return last;
    }
    return last;  // rounding: the last token with mass
}

float Sampler::logprob_of(std::span<const float> logits, int32_t id) {
    double mx = -INFINITY;
    for (float l : logits) mx = std::max(mx, static_cast<double>(l));
    double s = 0;
    for (float l : logits) s += std::exp(static_cast<double>(l) - mx);
    return static_cast<float>(static_cast<double>(logits[static_cast<size_t>(id)]) - mx - std::log(s));
}

std::vector<TokenLogprob> Sampler::top_logprobs(std::span<const float> logits, int32_t n) {
    double mx = -INFINITY;
    for (float l : logits) mx = std::max(mx, static_cast<double>(l));
    double s = 0;
    for (float l : logits) s += std::exp(static_cast<double>(l) - mx);
    const double lse = mx + std::log(s);
    std::vector<int32_t> idx(logits.size());
    std::iota(idx.begin(), idx.end(), 0);
    const size_t k = std::min(static_cast<size_t>(std::max(n, 0)), idx.size());
    std::partial_sort(idx.begin(), idx.begin() + static_cast<std::ptrdiff_t>(k), idx.end(),
                      [&](int32_t a, int32_t b) { return logits[static_cast<size_t>(a)] > logits[static_cast<size_t>(b)]; });
    std::vector<TokenLogprob> out;
    for (size_t i = 0; i < k; ++i)
        out.push_back({idx[i], static_cast<float>(static_cast<double>(logits[static_cast<size_t>(idx[i])]) - lse)});
    return out;
}

}  // namespace farsight

// fp64 reference of the sampling filters, written independently of backend/sampling.h (used by
// the CPU row-sampling tests and the GPU sampling tests): softmax(l / T), order by probability
// (ties by id), keep top-k, then the shortest prefix reaching top_p; the kept probabilities
// renormalised.
#pragma once

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace farsight::testref {

inline std::vector<double> filtered(const std::vector<float>& l, double T, int k, double top_p) {
    const size_t V = l.size();
    double mx = -INFINITY;
    for (float x : l) mx = std::max(mx, x / T);
    std::vector<double> p(V);
    double s = 0;
    for (size_t i = 0; i < V; ++i) s += p[i] = std::exp(l[i] / T - mx);
    for (double& x : p) x /= s;
    std::vector<size_t> ord(V);
    std::iota(ord.begin(), ord.end(), 0);
    std::stable_sort(ord.begin(), ord.end(), [&](size_t a, size_t b) { return p[a] > p[b]; });
    size_t keep = k > 0 ? std::min<size_t>(V, static_cast<size_t>(k)) : V;
    double kept = 0;
    for (size_t i = 0; i < keep; ++i) kept += p[ord[i]];
    double cum = 0;
    size_t n = 0;
    while (n < keep) {
        cum += p[ord[n++]] / kept;
        if (cum >= top_p - 1e-12) break;
    }
    std::vector<double> q(V, 0.0);
    double z = 0;
    for (size_t i = 0; i < n; ++i) z += q[ord[i]] = p[ord[i]];
    for (double& x : q) x /= z;
    return q;
}

// The row and the filter settings both frequency tests (CPU reference, device) draw from.
struct FilterCase {
    float T;
    int k;
    float p;
};
inline const std::vector<float> kFrequencyLogits = {2.0f, 1.5f, 1.4f, 0.3f,  -0.2f, 0.9f, -1.0f,
                                                    3.1f, 0.0f, 1.1f, -2.5f, 0.6f,  1.5f};
inline const std::vector<FilterCase> kFrequencyCases = {{1.0f, 0, 1.0f},  {0.7f, 4, 1.0f},
                                                        {1.3f, 0, 0.8f},  {1.0f, 6, 0.6f},
                                                        {2.0f, 3, 0.95f}, {1.0f, 2, 1.0f}};

}  // namespace farsight::testref

// The whole model on the CUDA backend: transformers fixtures in bf16, and stories260K greedy
// decoding identical to the CPU backend.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "engine/session.h"
#include "io/npy.h"

using namespace farsight;
using nlohmann::json;

namespace {
const std::string kRef = std::string(FARSIGHT_FIXTURES_DIR) + "/ref/";
const std::string kShared = FARSIGHT_SHARED_DIR;

json read_json(const std::string& p) {
    std::ifstream f(p);
    return json::parse(f);
}

std::vector<int32_t> greedy(Session& s, int32_t first, int n) {
    const int64_t V = s.config().vocab_size;
    BlockTable t;
    std::vector<int32_t> out = {first};
    while (static_cast<int>(out.size()) < n) {
        std::vector<int32_t> tok = {out.back()};
        SeqStep st{&t, tok, false};
        const auto lg = s.forward(std::span<SeqStep>(&st, 1));
        out.push_back(static_cast<int32_t>(std::max_element(lg.begin(), lg.begin() + V) - lg.begin()));
    }
    t.release(s.pool());
    return out;
}
}  // namespace

TEST(GpuModel, Stories260KGreedyMatchesCpu) {
    if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
    LoadOptions o;
    o.model = kShared + "/models/stories260K";
    Session cpu(o);
    const auto want = greedy(cpu, 1, 256);
    // "f16+fused": the opt-in fused one-row decode ops (FARSIGHT_FUSED=1) on a real model
    for (const std::string cfg : {"bf16", "f16", "auto", "f16+fused"}) {
        const bool fused = cfg == "f16+fused";
        LoadOptions g = o;
        g.device = "cuda";
        g.dtype = fused ? "f16" : cfg;
        g.kv_tokens = 1024;
        if (fused) setenv("FARSIGHT_FUSED", "1", 1);
        Session gpu(g);
        unsetenv("FARSIGHT_FUSED");
        const auto got = greedy(gpu, 1, 256);
        size_t same = 0;
        while (same < got.size() && got[same] == want[same]) ++same;
        std::printf("[figure] stories260K greedy on CUDA (%s): first %zu of %zu tokens identical to the CPU backend\n", cfg.c_str(),
                    same, want.size());
        if (cfg != "bf16") {  // f16 is the default ("auto") for an f32 model on the GPU
            EXPECT_EQ(got, want) << cfg;
        }
    }
}

// bf16 on the GPU against the transformers fp64 fixtures of the core issue. Loading these f32
// checkpoints in bf16 rounds every weight: tools/bf16_emulation.py (numpy, exact arithmetic with
// the same bf16 roundings of weights and activations as this backend) shows that this alone
// flips the argmax at positions whose reference top-1/top-2 gap is below ~0.05 (98-100% overall
// on these 200-position fixtures, varying with the rounding noise). So: relative L2 error
// <= 2e-2 and at most 1.5x the emulation's (our kernels add little to the unavoidable bf16
// error), argmax >= 99% over the positions whose reference gap is >= 0.05, >= 97% overall.
TEST(GpuModel, TransformersFixturesInBf16) {
    if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
    const json index = read_json(kRef + "index.json");
    const json emul = read_json(kRef + "bf16_emulation.json")["cases"];
    for (const auto& c : index["cases"]) {
        const std::string name = c["name"];
        if (name == "docs27M_long" || name == "docs27M") continue;  // docs27M: shared model not carried
        const std::string dir = kRef + name;
        const json ref = read_json(dir + "/ref.json");
        const auto tokens = ref["tokens"].get<std::vector<int32_t>>();
        LoadOptions o;
        o.model = ref.value("model_dir_in_shared", json()).is_string() ? kShared + "/" + ref["model_dir_in_shared"].get<std::string>() : dir;
        o.device = "cuda";
        o.dtype = "bf16";
        o.kv_tokens = static_cast<int64_t>(tokens.size()) + 64;
        o.max_model_len = static_cast<int64_t>(tokens.size());
        Session s(o);
        const auto got = s.score(tokens);
        const NpyArray want = read_npy(dir + "/logits.npy");
        const int64_t V = s.config().vocab_size;
        double num = 0, den = 0, worst = 0;
        size_t agree = 0, clear = 0, agree_clear = 0;
        const size_t n = tokens.size();
        for (size_t t = 0; t < n; ++t) {
            const float* g = got.data() + t * V;
            const double* w = want.data.data() + t * V;
            double md = 0, mr = 0;
            int64_t ag = 0, aw = 0;
            for (int64_t v = 0; v < V; ++v) {
                const double d = g[v] - w[v];
                num += d * d;
                den += w[v] * w[v];
                md = std::max(md, std::fabs(d));
                mr = std::max(mr, std::fabs(w[v]));
                if (g[v] > g[ag]) ag = v;
                if (w[v] > w[aw]) aw = v;
            }
            double second = -1e300;
            for (int64_t v = 0; v < V; ++v)
                if (v != aw) second = std::max(second, w[v]);
            worst = std::max(worst, md / mr);
            agree += ag == aw;
            if (w[aw] - second >= 0.05) {
                ++clear;
                agree_clear += ag == aw;
            }
        }
        const double rel = std::sqrt(num / den), frac = static_cast<double>(agree) / static_cast<double>(n);
        const double frac_clear = clear ? static_cast<double>(agree_clear) / static_cast<double>(clear) : 1.0;
        double emu = 0;
        if (emul.contains(name)) emu = emul[name]["bf16_path_rel_l2"].get<double>();
        std::printf("[figure] CUDA bf16 %-16s rel L2 logit error %.2e (exact bf16 emulation %.2e) | worst position max|d|/max|ref| %.2e | argmax %.1f%% (%.1f%% of %zu positions with a reference gap >= 0.05)\n",
                    name.c_str(), rel, emu, worst, 100 * frac, 100 * frac_clear, clear);
        EXPECT_LE(rel, 2e-2) << name;
        if (emu > 0) {
            EXPECT_LE(rel, 1.5 * emu) << name;
        }
        EXPECT_GE(frac_clear, 0.99) << name;
        EXPECT_GE(frac, 0.97) << name;
    }
}

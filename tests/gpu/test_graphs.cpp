// Recorded decode steps (CUDA graphs): the same schedule of prefills and decode steps run with
// graphs on and off must give the same logits, while batches change size (several buckets,
// padding rows), contexts grow across replays (partitions derived on the device), new KV
// blocks are appended (block tables change under a recorded step) and, with dynamic NTK rope,
// the frequencies change every step.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/kernels.cuh"
#include "engine/session.h"

using namespace farsight;

namespace {

const std::string kShared = FARSIGHT_SHARED_DIR;

// A small random-weight Llama config with the given attention geometry, written to a temp file.
std::string write_config(const std::string& name, int64_t hidden, int64_t heads, int64_t kv_heads,
                         bool dynamic_rope) {
    nlohmann::json c = {{"architectures", {"LlamaForCausalLM"}},
                        {"model_type", "llama"},
                        {"hidden_size", hidden},
                        {"intermediate_size", 2 * hidden},
                        {"num_hidden_layers", 2},
                        {"num_attention_heads", heads},
                        {"num_key_value_heads", kv_heads},
                        {"vocab_size", 1000},
                        {"max_position_embeddings", dynamic_rope ? 64 : 4096},
                        {"rms_norm_eps", 1e-5},
                        {"rope_theta", 10000.0},
                        {"torch_dtype", "bfloat16"}};
    if (dynamic_rope) c["rope_scaling"] = {{"type", "dynamic"}, {"factor", 4.0}};
    const auto dir = std::filesystem::temp_directory_path() / "farsight_test_graphs";
    std::filesystem::create_directories(dir);
    const auto path = dir / (name + ".json");
    std::ofstream(path) << c.dump(2);
    return path.string();
}

struct Run {
    std::vector<std::vector<float>> logits;  // per step: [rows, vocab]
    CudaGraphStats stats;
    int64_t vocab = 0;
};

// Prompts of different lengths, then decode steps over changing subsets of the sequences.
Run run_schedule(LoadOptions o, bool graphs) {
    setenv("FARSIGHT_CUDA_GRAPHS", graphs ? "1" : "0", 1);
    Session s(o);
    unsetenv("FARSIGHT_CUDA_GRAPHS");
    const int64_t V = s.config().vocab_size;
    const std::vector<int> prompt_lens = {3, 40, 1, 17, 70};
    std::vector<BlockTable> tables(prompt_lens.size());
    std::vector<int32_t> last(prompt_lens.size());
    Run r;
    uint32_t seed = 7;
    auto next_tok = [&] {
        seed = seed * 1664525u + 1013904223u;
        return static_cast<int32_t>((seed >> 8) % static_cast<uint32_t>(V));
    };
    {  // prefill every sequence in one (eager) step
        std::vector<std::vector<int32_t>> prompts(prompt_lens.size());
        std::vector<SeqStep> steps;
        for (size_t i = 0; i < prompt_lens.size(); ++i) {
            for (int j = 0; j < prompt_lens[i]; ++j) prompts[i].push_back(next_tok());
            steps.push_back({&tables[i], prompts[i], false});
        }
        r.logits.push_back(s.forward(steps));
    }
    // subsets per decode step: buckets 8 (5 rows), 1, 4 (3 rows), 2, back to 8 ...
    const std::vector<std::vector<size_t>> plan = {{0, 1, 2, 3, 4},
                                                   {0, 1, 2, 3, 4},
                                                   {0, 1, 2, 3, 4},
                                                   {0, 1, 2, 3, 4},
                                                   {2},
                                                   {2},
                                                   {2},
                                                   {2},
                                                   {4, 0, 3},
                                                   {4, 0, 3},
                                                   {4, 0, 3},
                                                   {1, 3},
                                                   {1, 3},
                                                   {1, 3},
                                                   {0, 1, 2, 3, 4},
                                                   {0, 1, 2, 3, 4},
                                                   {2},
                                                   {2}};
    for (const auto& sub : plan) {
        std::vector<SeqStep> steps;
        for (size_t i : sub) {
            last[i] = next_tok();
            steps.push_back({&tables[i], std::span<const int32_t>(&last[i], 1), false});
        }
        r.logits.push_back(s.forward(steps));
    }
    for (auto& t : tables) t.release(s.pool());
    r.stats = cuda_graph_stats(s.backend());
    r.vocab = V;
    return r;
}

void compare(const std::string& what, const Run& eager, const Run& graph, int64_t V) {
    ASSERT_EQ(eager.logits.size(), graph.logits.size());
    for (size_t st = 0; st < eager.logits.size(); ++st) {
        const auto& e = eager.logits[st];
        const auto& g = graph.logits[st];
        ASSERT_EQ(e.size(), g.size()) << what << " step " << st;
        for (size_t row = 0; row * V < e.size(); ++row) {
            double num = 0, den = 0;
            for (int64_t v = 0; v < V; ++v) {
                const double a = e[row * V + v], b = g[row * V + v];
                ASSERT_TRUE(std::isfinite(b)) << what << " step " << st;
                num += (a - b) * (a - b);
                den += a * a;
            }
            EXPECT_LE(std::sqrt(num / den), 2e-2) << what << " step " << st << " row " << row;
        }
    }
}

void check_model(const std::string& what, LoadOptions o) {
    o.device = "cuda";
    o.kv_tokens = 1024;
    o.max_model_len = 512;
    const Run eager = run_schedule(o, false);
    const Run graph = run_schedule(o, true);
    EXPECT_EQ(eager.stats.replays, 0) << what;
    // buckets 8, 1, 4, 2 each: warm-up, record, replays
    EXPECT_GE(graph.stats.captures, 4) << what;
    EXPECT_GE(graph.stats.replays, 8) << what;
    std::printf("[figure] %s: %ld graphs recorded, %ld steps replayed\n", what.c_str(),
                static_cast<long>(graph.stats.captures), static_cast<long>(graph.stats.replays));
    compare(what, eager, graph, eager.vocab);
}

}  // namespace

TEST(CudaGraphs, Stories260KMatchesEager) {  // head_dim 8: the generic split-K kernel
    if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
    LoadOptions o;
    o.model = kShared + "/models/stories260K";
    check_model("stories260K", o);
}

TEST(CudaGraphs, HeadDim128Gqa2MatchesEager) {
    if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
    LoadOptions o;
    o.dummy = write_config("d128_gqa2", 256, 2, 1, false);
    check_model("d128 gqa2", o);
}

TEST(CudaGraphs, HeadDim64Mqa8DynamicRopeMatchesEager) {
    if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
    LoadOptions o;
    o.dummy = write_config("d64_mqa8_dyn", 512, 8, 1, true);
    check_model("d64 mqa8 dynamic rope", o);
}

// The decode kernel depends on the longest context (decode_tc_min_ctx: the tensor-core kernel
// from there on), and recorded steps are keyed on that side too. With the threshold at 76,
// sequence 4 (prompt 70) is short in its first bucket-8 steps (contexts 71-74), crosses it
// inside its bucket-4 steps (75 short, 76-77 long) and is long in the last bucket-8 steps
// (78-79): bucket 8 records a graph per side, bucket 4 only its long one (its short side has
// a single step), buckets 1 and 2 one each: 5 graphs in all (4 if the key ignored the
// context). Eager and recorded runs must agree.
TEST(CudaGraphs, LongContextDecodeKernelSwitchMatchesEager) {
    if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
    setenv("FARSIGHT_DECODE_TC_MIN_CTX", "76", 1);
    LoadOptions o;
    o.dummy = write_config("d128_gqa2", 256, 2, 1, false);
    o.device = "cuda";
    o.kv_tokens = 1024;
    o.max_model_len = 512;
    const int64_t tc0 = cuda::decode_tc_launches();
    const auto eager = run_schedule(o, false);
    const int64_t tc_eager = cuda::decode_tc_launches() - tc0;
    const auto graph = run_schedule(o, true);
    unsetenv("FARSIGHT_DECODE_TC_MIN_CTX");
    // eager: 2 layers x the 4 long steps (contexts 76, 77, 78, 79)
    EXPECT_EQ(tc_eager, 8) << "tc decode launches in the eager run";
    EXPECT_EQ(graph.stats.captures, 5);
    std::printf("[figure] long-context switch: %ld tc launches eager, %ld graphs recorded\n",
                static_cast<long>(tc_eager), static_cast<long>(graph.stats.captures));
    compare("d128 gqa2 long-context switch", eager, graph, eager.vocab);
}

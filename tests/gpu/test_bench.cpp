// Device figures (run with FARSIGHT_GPU_BENCH=1; tools/gpu_run.sh does): copy bandwidth and
// bf16 GEMM roofline, decode GEMV bandwidth, decode attention bandwidth, prefill attention
// throughput. Results are printed as "BENCH name value unit" lines.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "backend/cuda/kernels.cuh"
#include "engine/session.h"
#include "gpu_test_util.h"

using namespace farsight;
using namespace farsight::gputest;

namespace {

bool bench_enabled() {
    const char* s = std::getenv("FARSIGHT_GPU_BENCH");
    return s && s[0] == '1';
}

#define FS_REQUIRE_BENCH()                                                       \
    do {                                                                         \
        FS_REQUIRE_GPU();                                                        \
        if (!bench_enabled()) GTEST_SKIP() << "set FARSIGHT_GPU_BENCH=1 to run"; \
    } while (0)

template <typename F>
double time_ms(Backend& b, int reps, F&& f) {
    f();
    b.synchronize();
    std::vector<double> ms;
    for (int r = 0; r < reps; ++r) {
        auto t0 = std::chrono::steady_clock::now();
        f();
        b.synchronize();
        ms.push_back(
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                .count());
    }
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
}

double g_copy_gbps = 0;

}  // namespace

TEST(CudaBench, Roofline) {
    FS_REQUIRE_BENCH();
    DeviceRoofline r = measure_device_roofline();
    g_copy_gbps = r.copy_gbps;
    std::printf("BENCH device %s (%.1f GiB)\n", r.device_name.c_str(),
                r.total_mem / double(1u << 30));
    std::printf("BENCH copy_gbps %.0f GB/s\n", r.copy_gbps);
    std::printf("BENCH bf16_gemm_8192 %.0f TFLOP/s\n", r.bf16_gemm_tflops);
    EXPECT_GT(r.copy_gbps, 100.0);
    EXPECT_GT(r.bf16_gemm_tflops, 10.0);
}

namespace {
// The DecodeLinear weights: a cheap deterministic pattern in [-0.5, 0.5).
float weight_at(size_t i) {
    return float((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
}
}  // namespace

TEST(CudaBench, DecodeLinear) {
    FS_REQUIRE_BENCH();
    Backend& b = gpu();
    const DType dt = DType::BF16;
    struct S {
        int64_t N, K;
    };
    for (S s : {S{4096, 4096}, S{14336 * 2, 4096}, S{4096, 14336}, S{1024, 4096}}) {
        std::vector<float> w(size_t(s.N) * s.K);
        for (size_t i = 0; i < w.size(); ++i) w[i] = weight_at(i);
        Tensor tw = upload(b, w, s.N, s.K, dt);
        w = {};
        for (int64_t T : {1, 4, 16, 32, 64}) {
            const std::vector<float> xv = randv(T * s.K, dt);
            Tensor x = upload(b, xv, T, s.K, dt);
            Tensor out = b.alloc(dt, T, s.N);
            double ms = time_ms(b, 20,
                                [&] {
                                    for (int i = 0; i < 50; ++i) b.linear(x, tw, nullptr, out);
                                }) /
                        50;
            double gbps = double(s.N) * s.K * 2 / (ms * 1e-3) / 1e9;
            std::printf("BENCH linear T=%ld N=%ld K=%ld %.1f us %.0f GB/s (%.0f%% of copy)\n",
                        long(T), long(s.N), long(s.K), ms * 1e3, gbps,
                        g_copy_gbps > 0 ? 100 * gbps / g_copy_gbps : 0.0);
            // what was timed computed the product: spot rows of the first and last token
            // against fp64 (the weights from their formula, rounded as uploaded)
            const std::vector<float> got = download(b, out);
            std::vector<float> g;
            std::vector<double> ref;
            for (int64_t t : {int64_t{0}, T - 1})
                for (int64_t n = 0; n < s.N; n += s.N / 8) {
                    double d = 0;
                    for (int64_t k = 0; k < s.K; ++k) {
                        const size_t i = size_t(n) * s.K + k;
                        d += double(round_to(dt, weight_at(i))) * xv[t * s.K + k];
                    }
                    g.push_back(got[t * s.N + n]);
                    ref.push_back(d);
                }
            EXPECT_LT(rel_l2(g, ref), 1e-2) << "T=" << T << " N=" << s.N << " K=" << s.K;
        }
    }
}

namespace {
// Fills the cache with random K/V by running one prefill step, then returns the meta for one
// decode step (or the prefill meta itself when decode == false).
BatchMeta make_meta(int64_t n_seqs, int32_t ctx, int32_t q_len, int64_t bs,
                    std::vector<int32_t>* blocks_out) {
    BatchMeta m;
    RopeFreqs rf;
    rf.inv_freq.assign(64, 1.0f);
    m.rope.push_back(rf);
    const int32_t nb = (ctx + int32_t(bs) - 1) / int32_t(bs);
    for (int64_t s = 0; s < n_seqs; ++s) {
        SeqSlice sl;
        sl.q_start = static_cast<int32_t>(m.tokens.size());
        sl.q_len = q_len;
        sl.n_past = ctx - q_len;
        sl.block_table_offset = static_cast<int32_t>(m.block_tables.size());
        sl.n_blocks = nb;
        for (int32_t i = 0; i < nb; ++i) m.block_tables.push_back(int32_t(s) * nb + i);
        m.seqs.push_back(sl);
        for (int32_t j = 0; j < q_len; ++j) {
            int32_t pos = sl.n_past + j;
            m.tokens.push_back(0);
            m.positions.push_back(pos);
            m.slot_mapping.push_back((int32_t(s) * nb + pos / int32_t(bs)) * int32_t(bs) +
                                     pos % int32_t(bs));
        }
    }
    m.max_context_len = ctx;
    if (blocks_out) *blocks_out = m.block_tables;
    return m;
}
}  // namespace

TEST(CudaBench, Attention) {
    FS_REQUIRE_BENCH();
    Backend& b = gpu();
    const DType dt = DType::BF16;
    const int64_t H = 32, KVH = 8, D = 128, bs = 16;
    AttnParams p{H, KVH, D, D, 1.0f / std::sqrt(128.0f), 0};
    // decode: 32 sequences x 1024 context (llama3-8b batch 32), then 16 x 4096; each with the
    // CUDA-core kernel (decode_kernel, FARSIGHT_DECODE=cc) and the tensor-core one
    // (FARSIGHT_DECODE=tc). Both include the kv_store kernel of the step, as before.
    const int64_t C = (H + 2 * KVH) * D;
    auto bench_decode = [&](int64_t S, int32_t ctx) {
        KVLayout L{1, S * ctx / bs + 1, bs, KVH, D, dt};
        b.init_kv(L);
        BatchMeta fill = make_meta(S, ctx, ctx, bs, nullptr);
        b.begin_forward(fill);
        Tensor q = upload(b, randv(S * ctx * C, dt), S * ctx, C, dt);
        Tensor out = b.alloc(dt, S * ctx, H * D);
        b.attention(0, q, p, out);
        BatchMeta dec = make_meta(S, ctx, 1, bs, nullptr);
        b.begin_forward(dec);
        Tensor q1 = upload(b, randv(S * C, dt), S, C, dt);
        Tensor o1 = b.alloc(dt, S, H * D);
        const double bytes = double(S) * ctx * KVH * D * 2 * 2;
        // decode_kernel (FARSIGHT_DECODE=cc), then the tc kernel with its default ring depth (3),
        // then depths 2 and 4 (FARSIGHT_DECODE_TC_STAGES)
        // (every variant must be finite and agree with decode_kernel)
        std::vector<float> first;
        for (const char* k : {"cc", "tc", "tc_s2", "tc_s4"}) {
            const bool tc = k[0] == 't';
            setenv("FARSIGHT_DECODE", tc ? "tc" : "cc", 1);
            if (tc && k[2]) setenv("FARSIGHT_DECODE_TC_STAGES", k + 4, 1);
            const int64_t tc0 = cuda::decode_tc_launches();
            double ms = time_ms(b, 20,
                                [&] {
                                    for (int i = 0; i < 20; ++i) b.attention(0, q1, p, o1);
                                }) /
                        20;
            std::printf("BENCH decode_attention_%s %ldx%d H32/KV8/D128 %.1f us %.0f GB/s\n", k,
                        static_cast<long>(S), ctx, ms * 1e3, bytes / (ms * 1e-3) / 1e9);
            EXPECT_EQ(cuda::decode_tc_launches() > tc0, tc) << k << ": wrong decode kernel";
            unsetenv("FARSIGHT_DECODE");
            unsetenv("FARSIGHT_DECODE_TC_STAGES");
            const std::vector<float> o = download(b, o1);
            for (float v : o) EXPECT_TRUE(std::isfinite(v)) << k;
            if (first.empty()) {
                first = o;
            } else {
                std::vector<double> ref(first.begin(), first.end());
                EXPECT_LT(rel_l2(o, ref), 1e-2) << k << " against decode_kernel";
            }
        }
        return q;
    };
    bench_decode(32, 1024);
    {
        const int64_t S = 16;
        const int32_t ctx = 4096;
        Tensor q = bench_decode(S, ctx);
        Tensor out = b.alloc(dt, S * ctx, H * D);
        BatchMeta fill = make_meta(S, ctx, ctx, bs, nullptr);
        // prefill of the same batch (16 x 4096 tokens, causal): the default kernel (the
        // warp-specialized one on Hopper), then the sm90 kernel it replaced
        // (FARSIGHT_PREFILL=sm90), then prefill2 (FARSIGHT_PREFILL=v2)
        // (the three must agree: the last 64 query rows of the first sequence, all heads)
        b.begin_forward(fill);
        std::vector<float> first;
        for (const char* v : {"ws", "sm90", "v2"}) {
            setenv("FARSIGHT_PREFILL", v, 1);
            const int64_t ws0 = cuda::prefill_ws_launches();
            double pms = time_ms(b, 3, [&] { b.attention(0, q, p, out); });
            double flops = 4.0 * S * (double(ctx) * ctx / 2) * D * H;
            std::printf("BENCH prefill_attention%s%s 16x4096 H32/KV8/D128 %.2f ms %.0f TFLOP/s\n",
                        v[0] ? "_" : "", v, pms, flops / (pms * 1e-3) / 1e12);
            if (v[0] == 'w' && cuda::prefill_ws_launches() == ws0)
                std::printf("  (prefill_attention_ws: the ws kernel did not run, sm90 timed)\n");
            const std::vector<float> tail = download(b, out.rows_view(ctx - 64, 64));
            if (first.empty()) {
                first = tail;
                continue;
            }
            std::vector<double> ref(first.begin(), first.end());
            EXPECT_LT(rel_l2(tail, ref), 1e-2) << v << " against ws";
        }
        unsetenv("FARSIGHT_PREFILL");
    }
}

// A llama2-7b-shaped stack of 4 layers (random weights) decoding one sequence at context 128
// and a batch of 32 at context 1024, with recorded steps (CUDA graphs) and without: ms per step
// and the weight+KV bytes per second.
TEST(CudaBench, DecodeGraphStack) {
    FS_REQUIRE_BENCH();
    nlohmann::json c = {{"architectures", {"LlamaForCausalLM"}},
                        {"model_type", "llama"},
                        {"hidden_size", 4096},
                        {"intermediate_size", 11008},
                        {"num_hidden_layers", 4},
                        {"num_attention_heads", 32},
                        {"num_key_value_heads", 32},
                        {"vocab_size", 32000},
                        {"max_position_embeddings", 4096},
                        {"rms_norm_eps", 1e-5},
                        {"torch_dtype", "bfloat16"}};
    const auto path = std::filesystem::temp_directory_path() / "farsight_bench_7b4.json";
    std::ofstream(path) << c.dump();
    for (const char* graphs : {"1", "0"}) {
        setenv("FARSIGHT_CUDA_GRAPHS", graphs, 1);
        LoadOptions o;
        o.dummy = path.string();
        o.device = "cuda";
        o.kv_tokens = 40000;
        o.max_model_len = 2048;
        Session s(o);
        unsetenv("FARSIGHT_CUDA_GRAPHS");
        for (auto [B, ctx] : {std::pair{1, 128}, std::pair{32, 1024}}) {
            std::vector<BlockTable> tables(static_cast<size_t>(B));
            for (auto& t : tables) {
                t.reserve(s.pool(), ctx, s.block_size());
                t.set_cached(ctx);
            }
            std::vector<int32_t> last(static_cast<size_t>(B), 1);
            std::vector<double> ms;
            for (int i = 0; i < 23; ++i) {
                std::vector<SeqStep> steps;
                for (int b = 0; b < B; ++b)
                    steps.push_back(
                        {&tables[size_t(b)], std::span<const int32_t>(&last[size_t(b)], 1), false});
                const auto t0 = std::chrono::steady_clock::now();
                s.forward(steps);
                if (i >= 3)
                    ms.push_back(std::chrono::duration<double, std::milli>(
                                     std::chrono::steady_clock::now() - t0)
                                     .count());
            }
            for (auto& t : tables) t.release(s.pool());
            std::sort(ms.begin(), ms.end());
            const double med = ms[ms.size() / 2];
            const double bytes =
                double(s.model().decode_bytes(0)) +
                B * double(s.model().decode_bytes(ctx) - s.model().decode_bytes(0));
            std::printf(
                "BENCH decode_stack_7b_4layers graphs=%s batch %d ctx %d: %.3f ms/step "
                "%.0f GB/s (%.0f%% of copy)\n",
                graphs, B, ctx, med, bytes / (med * 1e-3) / 1e9,
                g_copy_gbps > 0 ? 100 * bytes / (med * 1e-3) / 1e9 / g_copy_gbps : 0.0);
            EXPECT_GT(med, 0.0);
        }
        if (graphs[0] == '1') {
            EXPECT_GT(cuda_graph_stats(s.backend()).replays, 0);
        }
    }
}

// Sampling on the device (Backend::sample_rows, backend/cuda/sampling.cu) against the CPU
// reference (sample_rows_reference) and against independent fp64 arithmetic: greedy ids equal
// the argmax of the downloaded logits (ties -> lowest id), top-k / top-p draws follow the
// exactly computed filtered distribution (chi-square), and stories260K greedy generation is
// identical with and without device sampling.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "common/filtered_distribution.h"
#include "common/pipelined_decode.h"
#include "engine/generate.h"
#include "engine/session.h"
#include "tokenizer/tokenizer.h"
#include "gpu_test_util.h"

using namespace farsight;
using namespace farsight::gputest;

namespace {

// Logits rounded to a coarse grid (many exact ties, several at the maximum).
std::vector<float> tied_logits(size_t n, float step) {
    std::vector<float> v = randv(n, DType::F32, 8.0f);
    for (auto& x : v) x = std::round(x / step) * step;
    return v;
}

using testref::filtered;

}  // namespace

TEST(CudaSampling, GreedyMatchesArgmaxOfDownloadedLogits) {
    FS_REQUIRE_GPU();
    Backend& b = gpu();
    for (const int64_t V : {int64_t(512), int64_t(1001), int64_t(32000), int64_t(128256)}) {
        const int64_t R = small_mode() ? 5 : 37;
        const auto host = tied_logits(static_cast<size_t>(R * V), V > 1001 ? 0.25f : 1.0f);
        Tensor t = upload(b, host, R, V, DType::F32);
        const auto lg = download(b, t);
        ASSERT_EQ(lg, host);
        std::vector<RowSampling> params(static_cast<size_t>(R));
        for (size_t r = 0; r < params.size(); ++r) {
            params[r].seed = r;
            if (r % 3 == 1) params[r].top_k = 1;  // greedy through top_k == 1
        }
        std::vector<int32_t> ids(static_cast<size_t>(R), -1), ref(static_cast<size_t>(R), -2);
        std::vector<float> lp(static_cast<size_t>(R)), ref_lp(static_cast<size_t>(R));
        b.sample_rows(t, params.data(), ids.data(), lp.data());
        sample_rows_reference(lg.data(), R, V, params.data(), ref.data(), ref_lp.data());
        int ties_at_max = 0;
        for (int64_t r = 0; r < R; ++r) {
            const float* row = lg.data() + r * V;
            const auto want = static_cast<int32_t>(std::max_element(row, row + V) - row);
            ties_at_max += std::count(row, row + V, row[want]) > 1;
            EXPECT_EQ(ids[static_cast<size_t>(r)], want) << "V " << V << " row " << r;
            EXPECT_EQ(ref[static_cast<size_t>(r)], want) << "V " << V << " row " << r;
            EXPECT_NEAR(lp[static_cast<size_t>(r)], ref_lp[static_cast<size_t>(r)], 1e-4)
                << "V " << V << " row " << r;
        }
        EXPECT_GT(ties_at_max, 0) << "the test should exercise ties at the maximum";
        // ids only (no logprobs)
        std::vector<int32_t> ids2(static_cast<size_t>(R), -1);
        b.sample_rows(t, params.data(), ids2.data(), nullptr);
        EXPECT_EQ(ids2, ids);
    }
}

// The same (seed, counter) gives the CPU reference's token: the arithmetic is the same integer
// arithmetic, only expf/logf may differ in the last ulp, so nearly every draw must agree.
TEST(CudaSampling, StochasticMatchesReferenceDraws) {
    FS_REQUIRE_GPU();
    Backend& b = gpu();
    for (const int64_t V : {int64_t(512), int64_t(128256)}) {
        const int64_t R = small_mode() ? 8 : 64;
        const auto host = tied_logits(static_cast<size_t>(R * V), 0.01f);
        Tensor t = upload(b, host, R, V, DType::F32);
        std::vector<RowSampling> params(static_cast<size_t>(R));
        const int ks[] = {0, 1, 5, 50, 1000};
        const float ps[] = {1.0f, 0.9f, 0.5f, 0.05f};
        for (size_t r = 0; r < params.size(); ++r) {
            params[r].temperature = 0.5f + 0.25f * static_cast<float>(r % 5);
            params[r].top_k = ks[r % 5];
            params[r].top_p = ps[(r / 5) % 4];
            params[r].seed = 1000 + r;
            params[r].counter = r * 7;
        }
        std::vector<int32_t> ids(static_cast<size_t>(R)), ref(static_cast<size_t>(R));
        std::vector<float> lp(static_cast<size_t>(R)), ref_lp(static_cast<size_t>(R));
        int same = 0;
        for (int rep = 0; rep < 4; ++rep) {
            for (auto& p : params) p.counter += 1;
            b.sample_rows(t, params.data(), ids.data(), lp.data());
            sample_rows_reference(host.data(), R, V, params.data(), ref.data(), ref_lp.data());
            for (int64_t r = 0; r < R; ++r) {
                same += ids[static_cast<size_t>(r)] == ref[static_cast<size_t>(r)];
                ASSERT_GE(ids[static_cast<size_t>(r)], 0);
                ASSERT_LT(ids[static_cast<size_t>(r)], V);
            }
        }
        std::printf("[figure] device vs reference draws, V %lld: %d of %lld identical\n",
                    static_cast<long long>(V), same, static_cast<long long>(4 * R));
        EXPECT_GE(same, static_cast<int>(4 * R * 95 / 100)) << "V " << V;
    }
}

// Frequencies of 200k device draws (one row per draw: counters 0..n-1) against the fp64
// filtered distribution: chi-square with a generous bound, and no draw outside the kept set.
TEST(CudaSampling, TopKTopPFrequenciesMatchDistribution) {
    FS_REQUIRE_GPU();
    Backend& b = gpu();
    const std::vector<float>& l = testref::kFrequencyLogits;
    const int64_t V = static_cast<int64_t>(l.size());
    const int64_t N = small_mode() ? 20000 : 200000;
    std::vector<float> rows(static_cast<size_t>(N * V));
    for (int64_t i = 0; i < N; ++i) std::copy(l.begin(), l.end(), rows.begin() + i * V);
    Tensor t = upload(b, rows, N, V, DType::F32);
    for (const testref::FilterCase& c : testref::kFrequencyCases) {
        std::vector<RowSampling> params(static_cast<size_t>(N));
        for (int64_t i = 0; i < N; ++i) {
            auto& p = params[static_cast<size_t>(i)];
            p.temperature = c.T;
            p.top_k = c.k;
            p.top_p = c.p;
            p.seed = 42;
            p.counter = static_cast<uint64_t>(i);
        }
        std::vector<int32_t> ids(static_cast<size_t>(N));
        b.sample_rows(t, params.data(), ids.data(), nullptr);
        const auto q = filtered(l, c.T, c.k, c.p);
        std::vector<double> cnt(static_cast<size_t>(V), 0.0);
        for (int32_t id : ids) {
            ASSERT_GE(id, 0);
            ASSERT_LT(id, V);
            cnt[static_cast<size_t>(id)] += 1;
        }
        double chi2 = 0;
        int dof = -1;
        for (int64_t i = 0; i < V; ++i) {
            const double e = q[static_cast<size_t>(i)] * static_cast<double>(N);
            if (q[static_cast<size_t>(i)] == 0) {
                EXPECT_EQ(cnt[static_cast<size_t>(i)], 0)
                    << "token " << i << " is filtered out (T " << c.T << " k " << c.k << " p "
                    << c.p << ")";
                continue;
            }
            chi2 += (cnt[static_cast<size_t>(i)] - e) * (cnt[static_cast<size_t>(i)] - e) / e;
            ++dof;
        }
        std::printf("[figure] device sampling T %.2f top_k %d top_p %.2f: chi2 %.1f (%d dof)\n",
                    c.T, c.k, c.p, chi2, dof);
        // p ~ 1e-6 bound for <= 12 degrees of freedom
        EXPECT_LT(chi2, 3.0 * dof + 40.0) << "T " << c.T << " k " << c.k << " p " << c.p;
    }
}

static LoadOptions stories_on_cuda(int64_t kv_tokens) {
    LoadOptions o;
    o.model = std::string(FARSIGHT_SHARED_DIR) + "/models/stories260K";
    o.device = "cuda";
    o.kv_tokens = kv_tokens;
    return o;
}

// stories260K: greedy through forward_sample (device) equals greedy over forward's logits.
TEST(CudaSampling, Stories260KGreedyIdenticalWithDeviceSampling) {
    FS_REQUIRE_GPU();
    const LoadOptions o = stories_on_cuda(1024);
    Session s(o);
    EXPECT_TRUE(s.backend().prefers_device_sampling());
    const int64_t V = s.config().vocab_size;
    const int n = 256;
    auto run = [&](bool device) {
        BlockTable t;
        std::vector<int32_t> out = {1};
        RowSampling greedy;
        std::vector<float> lp;
        while (static_cast<int>(out.size()) < n) {
            std::vector<int32_t> tok = {out.back()};
            SeqStep st{&t, tok, false};
            if (device) {
                out.push_back(s.forward_sample(std::span<SeqStep>(&st, 1),
                                               std::span<const RowSampling>(&greedy, 1), &lp)[0]);
                EXPECT_LE(lp[0], 0.0f);
            } else {
                const auto lg = s.forward(std::span<SeqStep>(&st, 1));
                out.push_back(static_cast<int32_t>(std::max_element(lg.begin(), lg.begin() + V) -
                                                   lg.begin()));
            }
        }
        t.release(s.pool());
        return out;
    };
    const auto want = run(false);
    const auto got = run(true);
    EXPECT_EQ(got, want);
    // a batch of 3 sequences (a recorded, padded decode step), with and without device sampling
    auto run_batch = [&](bool device) {
        std::vector<BlockTable> tabs(3);
        std::vector<std::vector<int32_t>> outs = {{1}, {1, 403}, {1, 9, 7}};
        std::vector<RowSampling> greedy(3);
        for (int i = 0; i < 64; ++i) {
            std::vector<SeqStep> steps;
            for (size_t k = 0; k < 3; ++k) {
                const size_t n = outs[k].size(), c = static_cast<size_t>(tabs[k].num_cached());
                steps.push_back(
                    {&tabs[k], std::span<const int32_t>(outs[k].data() + c, n - c), false});
            }
            if (device) {
                const auto ids = s.forward_sample(steps, greedy);
                for (size_t k = 0; k < 3; ++k) outs[k].push_back(ids[k]);
            } else {
                const auto lg = s.forward(steps);
                for (size_t k = 0; k < 3; ++k) {
                    const auto row = lg.begin() + static_cast<std::ptrdiff_t>(k) * V;
                    outs[k].push_back(static_cast<int32_t>(std::max_element(row, row + V) - row));
                }
            }
        }
        for (auto& t : tabs) t.release(s.pool());
        return outs;
    };
    const auto bw = run_batch(false);
    const auto bg = run_batch(true);
    for (size_t k = 0; k < 3; ++k) EXPECT_EQ(bg[k], bw[k]) << "sequence " << k;
}

// BENCH: one batch-32 step's logit rows (128256 vocabulary) sampled greedily on the device vs
// read back (to_host_f32 + a vector: what Session::forward did per step).
TEST(CudaBench, SampleRows) {
    FS_REQUIRE_GPU();
    const char* e = std::getenv("FARSIGHT_GPU_BENCH");
    if (!(e && e[0] == '1')) GTEST_SKIP() << "set FARSIGHT_GPU_BENCH=1 to run";
    Backend& b = gpu();
    const int64_t R = 32, V = 128256;
    Tensor t = upload(b, randv(static_cast<size_t>(R * V), DType::F32, 8.0f), R, V, DType::F32);
    auto time_ms = [&](auto&& f) {
        f();
        std::vector<double> ms;
        for (int r = 0; r < 50; ++r) {
            const auto t0 = std::chrono::steady_clock::now();
            f();
            ms.push_back(
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                    .count());
        }
        std::sort(ms.begin(), ms.end());
        return ms[ms.size() / 2];
    };
    std::vector<RowSampling> greedy(static_cast<size_t>(R)), topkp(static_cast<size_t>(R));
    for (auto& p : topkp) {
        p.temperature = 0.8f;
        p.top_k = 50;
        p.top_p = 0.9f;
    }
    std::vector<int32_t> ids(static_cast<size_t>(R));
    std::vector<float> lp(static_cast<size_t>(R));
    const double g = time_ms([&] { b.sample_rows(t, greedy.data(), ids.data(), nullptr); });
    const double gl = time_ms([&] { b.sample_rows(t, greedy.data(), ids.data(), lp.data()); });
    const double s = time_ms([&] { b.sample_rows(t, topkp.data(), ids.data(), lp.data()); });
    const double rb = time_ms([&] {
        std::vector<float> v(static_cast<size_t>(R * V));
        b.to_host_f32(t, v.data());
    });
    std::printf(
        "BENCH sample_rows_32x128256 greedy %.3f ms | greedy+logprob %.3f ms | T0.8 k50 p0.9 %.3f "
        "ms | "
        "logits readback %.3f ms\n",
        g, gl, s, rb);
}

// Pipelined decode on the CUDA backend: each step's tokens come from the previous step's
// sampling on the device (BatchMeta::tokens_from_last_sample), recorded steps included; the
// same ids and logprobs as the synchronous loop. Then generate() (pipelined by default, a step
// queued past eos dropped) against the same session's synchronous greedy loop.
TEST(CudaSampling, PipelinedDecodeEqualsSynchronous) {
    FS_REQUIRE_GPU();
    const LoadOptions o = stories_on_cuda(2048);
    Session s(o);
    EXPECT_TRUE(s.backend().sample_feed());
    testref::expect_pipelined_equals_sync(s, 48);

    // generate() (pipelined) against this session's synchronous greedy loop: the same backend,
    // so the same roundings (the CPU backend can break a near-tie the other way).
    const auto tok = Tokenizer::from_folder(o.model);
    const std::vector<int32_t> prompt = {1, 403, 9};
    const int n = 64;
    std::vector<int32_t> sync_ids;
    {
        BlockTable t;
        RowSampling greedy;
        std::vector<int32_t> in = prompt;
        for (int i = 0; i < n; ++i) {
            SeqStep st{&t, in, false};
            const int32_t id = s.forward_sample(std::span<SeqStep>(&st, 1),
                                                std::span<const RowSampling>(&greedy, 1))[0];
            sync_ids.push_back(id);
            in.assign(1, id);
        }
        t.release(s.pool());
    }
    for (int32_t eos : {-1, 0}) {  // no eos; then the 10th greedy token as eos
        GenerationOptions g;
        g.sampling.temperature = 0.0f;
        g.max_new_tokens = n;
        std::vector<int32_t> want = sync_ids;
        if (eos == 0) {
            g.eos_ids = {sync_ids[9]};
            want.resize(static_cast<size_t>(
                std::find(sync_ids.begin(), sync_ids.end(), sync_ids[9]) - sync_ids.begin() + 1));
        }
        // the text generate() emits: the ids after the prompt, an ending eos not included
        IncrementalDecoder dec(tok, /*skip_special=*/true);
        for (int32_t id : prompt) dec.push(id);
        (void)dec.flush();
        std::string want_text;
        for (size_t i = 0; i < want.size(); ++i)
            if (!(eos == 0 && i + 1 == want.size())) want_text += dec.push(want[i]);
        want_text += dec.flush();
        const auto got = generate(s, tok, prompt, g);
        EXPECT_EQ(got.ids, want) << "eos " << eos;
        EXPECT_EQ(got.finish_reason, eos == 0 ? "eos" : "length");
        EXPECT_EQ(got.text, want_text);
        EXPECT_EQ(s.outstanding(), 0u);
    }
}

// Decode steps (every sequence one new token) through Backend::rope_attention, where the CUDA
// backend rotates q/k and stores the new k/v inside the decode attention kernel, against rope()
// then attention() (separate kernels) on an identically filled second layer: the outputs agree
// to rounding (the own key enters the online softmax in a different order), and a following
// step that reads the keys the fused step stored agrees too. Contexts cover one and many key
// partitions, partition edges, GQA groups split over several blocks, and sliding windows.
#include <algorithm>
#include <cmath>

#include "backend/cuda/kernels.cuh"
#include "gpu_test_util.h"

using namespace farsight;
using namespace farsight::gputest;

namespace {

struct Geo {
    int64_t H, KVH, D, window;
};

std::vector<RopeFreqs> one_variant(int64_t rot) {
    RopeFreqs r;
    for (int64_t i = 0; i < rot / 2; ++i)
        r.inv_freq.push_back(static_cast<float>(std::pow(500000.0, -2.0 * i / rot)));
    r.attention_scaling = 1.0f;
    return {r};
}

void expect_close(const std::vector<float>& want, const std::vector<float>& got, const char* what) {
    ASSERT_EQ(want.size(), got.size());
    double num = 0, den = 0;
    for (size_t i = 0; i < want.size(); ++i) {
        ASSERT_TRUE(std::isfinite(got[i])) << what << ": element " << i;
        ASSERT_LE(std::fabs(want[i] - got[i]), 1e-2 * (std::fabs(want[i]) + 0.05))
            << what << ": element " << i << " want " << want[i] << " got " << got[i];
        num += (want[i] - got[i]) * (want[i] - got[i]);
        den += want[i] * want[i];
    }
    EXPECT_LE(std::sqrt(num / std::max(den, 1e-30)), 2e-3) << what;
}

}  // namespace

namespace {
void run_fused(DType dt) {
    Backend& b = gpu(dt);
    const std::vector<Geo> geos = {
        {32, 32, 128, 0},   // Llama-2 (MHA)
        {32, 8, 128, 0},    // Llama-3 (GQA 4)
        {14, 2, 64, 0},     // Qwen2-0.5B (GQA 7)
        {32, 2, 64, 0},     // GQA 16: two blocks of q heads per kv head
        {32, 8, 128, 100},  // sliding window
    };
    const std::vector<int32_t> ctx =
        small_mode() ? std::vector<int32_t>{0, 1, 64, 65, 300}
                     : std::vector<int32_t>{0, 1, 15, 63, 64, 65, 128, 200, 1000, 4100};
    const int64_t bs = 16;
    for (const Geo& g : geos) {
        SCOPED_TRACE(::testing::Message() << dtype_name(dt) << " H" << g.H << " KV" << g.KVH << " D"
                                          << g.D << " window " << g.window);
        const int64_t C = (g.H + 2 * g.KVH) * g.D;
        AttnParams p{g.H, g.KVH, g.D, g.D, 1.0f / std::sqrt(static_cast<float>(g.D)), g.window};
        // block tables: each sequence gets its own blocks, room for its context + 2 tokens
        std::vector<std::vector<int32_t>> tables;
        int32_t next = 0;
        for (int32_t c : ctx) {
            std::vector<int32_t> t;
            for (int64_t i = 0; i < (c + 2 + bs - 1) / bs; ++i) t.push_back(next++);
            std::reverse(t.begin(), t.end());  // not in address order
            tables.push_back(t);
        }
        KVLayout L;
        L.num_layers = 2;
        L.num_blocks = next + 1;
        L.block_size = bs;
        L.num_kv_heads = g.KVH;
        L.head_dim = g.D;
        L.dtype = dt;
        b.init_kv(L);
        auto meta = [&](const std::vector<int32_t>& n_past, const std::vector<int32_t>& q_len) {
            BatchMeta m;
            m.rope = one_variant(g.D);
            for (size_t q = 0; q < ctx.size(); ++q)
                if (q_len[q] > 0) append_seq(m, tables[q], bs, n_past[q], q_len[q]);
            m.logit_rows = {0};
            return m;
        };
        std::vector<int32_t> zeros(ctx.size(), 0), ones(ctx.size(), 1), ctx1 = ctx;
        for (auto& c : ctx1) c += 1;
        // the same prompts into both layers
        {
            BatchMeta m = meta(zeros, ctx);
            b.begin_forward(m);
            const int64_t T = m.num_tokens();
            auto x = randv(T * C, dt, 2.0f);
            for (int64_t layer = 0; layer < 2; ++layer) {
                Tensor q = upload(b, x, T, C, dt);
                Tensor o = poisoned(b, T, g.H * g.D, dt);
                b.rope_attention(layer, q, p, o);
            }
            b.synchronize();
        }
        // decode step: layer 0 separate ops, layer 1 rope_attention
        for (int step = 0; step < 2; ++step) {
            BatchMeta m = meta(step == 0 ? ctx : ctx1, ones);
            b.begin_forward(m);
            const int64_t T = m.num_tokens();
            auto x = randv(T * C, dt, 2.0f);
            Tensor q0 = upload(b, x, T, C, dt), q1 = upload(b, x, T, C, dt);
            Tensor o0 = poisoned(b, T, g.H * g.D, dt), o1 = poisoned(b, T, g.H * g.D, dt);
            b.rope(q0, p);
            b.attention(0, q0, p, o0);
            if (step == 0) {
                b.rope_attention(1, q1, p, o1);  // the fused path
            } else {                             // separate ops reading what the fused step stored
                b.rope(q1, p);
                b.attention(1, q1, p, o1);
            }
            b.synchronize();
            expect_close(download(b, o0), download(b, o1),
                         step == 0 ? "fused decode step" : "step after the fused one");
            if (::testing::Test::HasFatalFailure()) return;
        }
    }
}

}  // namespace

class CudaDecodeFused : public ::testing::TestWithParam<DType> {};

TEST_P(CudaDecodeFused, RopeAttentionMatchesSeparateOps) {
    FS_REQUIRE_GPU();
    setenv("FARSIGHT_DECODE", "cc", 1);  // decode_kernel on every geometry (no automatic tc)
    const int64_t before = cuda::decode_tc_launches();
    run_fused(GetParam());
    EXPECT_EQ(cuda::decode_tc_launches(), before) << "FARSIGHT_DECODE=cc ran the tc kernel";
    unsetenv("FARSIGHT_DECODE");
}

// FARSIGHT_DECODE=tc: on the GQA geometries (2..8 q heads per kv head) the tensor-core decode
// kernel runs both sides: rope_attention with the rotation and store folded into it, against
// rope() + attention() (the tc kernel without the fold-in). FARSIGHT_DECODE=tc_norope:
// rope_attention runs rope_store_kernel, then the tc kernel. The tc kernel must have run.
TEST_P(CudaDecodeFused, RopeAttentionWithTcDecodeKernel) {
    FS_REQUIRE_GPU();
    for (const char* v : {"tc", "tc_norope"}) {
        SCOPED_TRACE(v);
        setenv("FARSIGHT_DECODE", v, 1);
        const int64_t before = cuda::decode_tc_launches();
        run_fused(GetParam());
        EXPECT_GT(cuda::decode_tc_launches(), before) << "the tc kernel did not run";
        unsetenv("FARSIGHT_DECODE");
        if (::testing::Test::HasFatalFailure()) return;
    }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaDecodeFused, ::testing::Values(DType::BF16, DType::F16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

// Paged attention (prefill, chunked prefill, decode, GQA/MQA, sliding window) against an fp64
// reference computed from the same dtype-rounded q/k/v. Each case runs in two forward steps:
// step 1 computes the first n_past tokens of every sequence (filling the paged cache), step 2
// the remaining q_len tokens on top of it; both steps' outputs are checked.
#include <algorithm>
#include <cstdio>
#include <numeric>

#include "backend/cuda/kernels.cuh"
#include "gpu_test_util.h"

using namespace farsight;
using namespace farsight::gputest;

namespace {

struct SeqSpec {
    int32_t n_past, q_len;
};

struct Case {
    std::string name;
    int64_t H, KVH, D, block_size, window;
    std::vector<SeqSpec> seqs;
    DType dt = DType::BF16;
};

std::ostream& operator<<(std::ostream& os, const Case& c) {
    return os << c.name;
}

struct SeqData {
    int32_t ctx;
    std::vector<float> q, k, v;  // [ctx][H|KVH][D]
    std::vector<int32_t> blocks;
};

// out for query position p of sequence s, head h (fp64)
void reference(const Case& c, const SeqData& s, int32_t p, int64_t h, double* out) {
    const int64_t G = c.H / c.KVH, kvh = h / G, D = c.D;
    const double scale = 1.0 / std::sqrt(double(D));
    int32_t lo = c.window > 0 ? std::max<int32_t>(0, p - int32_t(c.window) + 1) : 0;
    std::vector<double> sc(p + 1 - lo);
    double mx = -1e300;
    for (int32_t i = lo; i <= p; ++i) {
        double d = 0;
        for (int64_t e = 0; e < D; ++e)
            d += double(s.q[(p * c.H + h) * D + e]) * s.k[(i * c.KVH + kvh) * D + e];
        sc[i - lo] = d * scale;
        mx = std::max(mx, sc[i - lo]);
    }
    double den = 0;
    for (auto& x : sc) den += (x = std::exp(x - mx));
    for (int64_t e = 0; e < D; ++e) {
        double acc = 0;
        for (int32_t i = lo; i <= p; ++i) acc += sc[i - lo] * s.v[(i * c.KVH + kvh) * D + e];
        out[e] = acc / den;
    }
}

// check_fill = false: step 0 (the prompt, through the prefill kernels) is run but its fp64
// reference (quadratic in the context) is skipped; step 1 is always checked.
void run_case(const Case& c, bool check_fill = true) {
    Backend& b = gpu(c.dt);
    const int64_t H = c.H, KVH = c.KVH, D = c.D, bs = c.block_size;
    const bool small = small_mode();
    std::vector<SeqData> seqs;
    int64_t total_blocks = 0;
    std::vector<SeqSpec> specs = c.seqs;
    if (small)  // compute-sanitizer runs: same structure, shorter sequences
        for (auto& s : specs) {
            s.n_past = std::min(s.n_past, 70);
            s.q_len = std::min(s.q_len, 70);
        }
    for (const auto& sp : specs) {
        SeqData s;
        s.ctx = sp.n_past + sp.q_len;
        s.q = randv(size_t(s.ctx) * H * D, c.dt, 1.5f);
        s.k = randv(size_t(s.ctx) * KVH * D, c.dt, 1.5f);
        s.v = randv(size_t(s.ctx) * KVH * D, c.dt, 1.0f);
        total_blocks += (s.ctx + bs - 1) / bs;
        seqs.push_back(std::move(s));
    }
    KVLayout L;
    L.num_layers = 2;
    L.num_blocks = total_blocks + 5;
    L.block_size = bs;
    L.num_kv_heads = KVH;
    L.head_dim = D;
    L.dtype = c.dt;
    b.init_kv(L);
    std::vector<int32_t> perm(L.num_blocks);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng());  // non-contiguous, unordered block tables
    size_t next = 0;
    for (auto& s : seqs)
        for (int32_t i = 0; i < (s.ctx + bs - 1) / bs; ++i) s.blocks.push_back(perm[next++]);
    const int64_t layer = 1;
    AttnParams p{H, KVH, D, D, static_cast<float>(1.0 / std::sqrt(double(D))), c.window};

    for (int step = 0; step < 2; ++step) {
        BatchMeta m;
        RopeFreqs rf;
        rf.inv_freq.assign(D / 2, 1.0f);
        m.rope.push_back(rf);
        std::vector<std::pair<size_t, int32_t>> rows;  // (seq, position) of each batch row
        for (size_t si = 0; si < seqs.size(); ++si) {
            const auto& sp = specs[si];
            int32_t first = step == 0 ? 0 : sp.n_past;
            int32_t len = step == 0 ? sp.n_past : sp.q_len;
            if (len == 0) continue;
            SeqSlice sl;
            sl.q_start = static_cast<int32_t>(rows.size());
            sl.q_len = len;
            sl.n_past = first;
            sl.block_table_offset = static_cast<int32_t>(m.block_tables.size());
            sl.n_blocks = static_cast<int32_t>(seqs[si].blocks.size());
            m.block_tables.insert(m.block_tables.end(), seqs[si].blocks.begin(),
                                  seqs[si].blocks.end());
            m.seqs.push_back(sl);
            for (int32_t j = 0; j < len; ++j) {
                int32_t pos = first + j;
                rows.push_back({si, pos});
                m.tokens.push_back(0);
                m.positions.push_back(pos);
                m.slot_mapping.push_back(seqs[si].blocks[pos / bs] * int32_t(bs) + pos % bs);
            }
        }
        const int64_t T = static_cast<int64_t>(rows.size());
        if (T == 0) continue;
        m.max_context_len = 0;
        for (const auto& s : seqs) m.max_context_len = std::max(m.max_context_len, s.ctx);
        const int64_t C = (H + 2 * KVH) * D;
        std::vector<float> qkv(T * C);
        for (int64_t t = 0; t < T; ++t) {
            const auto& s = seqs[rows[t].first];
            int32_t pos = rows[t].second;
            std::copy_n(&s.q[size_t(pos) * H * D], H * D, &qkv[t * C]);
            std::copy_n(&s.k[size_t(pos) * KVH * D], KVH * D, &qkv[t * C + H * D]);
            std::copy_n(&s.v[size_t(pos) * KVH * D], KVH * D, &qkv[t * C + (H + KVH) * D]);
        }
        b.begin_forward(m);
        Tensor tq = upload(b, qkv, T, C, c.dt);
        Tensor out = poisoned(b, T, H * D, c.dt);
        b.attention(layer, tq, p, out);
        if (step == 0 && !check_fill) continue;
        auto got = download(b, out);
        std::vector<double> ref(T * H * D);
        for (int64_t t = 0; t < T; ++t)
            for (int64_t h = 0; h < H; ++h)
                reference(c, seqs[rows[t].first], rows[t].second, h, &ref[(t * H + h) * D]);
        double err = rel_l2(got, ref);
        EXPECT_LT(err, 1e-2) << c.name << " step " << step;
        // per-sequence check too, so that a short sequence's error is not hidden by long ones
        for (const auto& sl : m.seqs) {
            std::vector<float> g(got.begin() + sl.q_start * H * D,
                                 got.begin() + (sl.q_start + sl.q_len) * H * D);
            std::vector<double> r(ref.begin() + sl.q_start * H * D,
                                  ref.begin() + (sl.q_start + sl.q_len) * H * D);
            EXPECT_LT(rel_l2(g, r), 1.5e-2)
                << c.name << " step " << step << " seq at row " << sl.q_start;
        }
    }
}

class CudaAttention : public ::testing::TestWithParam<Case> {};

TEST_P(CudaAttention, MatchesReference) {
    FS_REQUIRE_GPU();
    run_case(GetParam());
}

std::vector<Case> cases() {
    return {
        // decode batch of very different lengths, GQA 4
        {"decode_gqa4_d128_bs16",
         8,
         2,
         128,
         16,
         0,
         {{0, 1}, {16, 1}, {299, 1}, {1000, 1}, {1536, 1}}},
        // long single prefill, no GQA, head_dim 64
        {"prefill1100_mha_d64_bs32", 4, 4, 64, 32, 0, {{0, 1100}}},
        // chunked prefill + decode mixed in one batch, MQA (G = 8)
        {"mixed_mqa_d128_bs16",
         8,
         1,
         128,
         16,
         0,
         {{0, 77}, {100, 64}, {513, 200}, {37, 1}, {900, 3}, {5, 9}}},
        // sliding window, GQA 4, prefill and decode
        {"window128_gqa4_d64_bs32", 16, 4, 64, 32, 128, {{0, 300}, {250, 1}, {400, 50}}},
        // GQA 8 and MQA with 16 q heads per kv head (two q-head groups in split-K)
        {"decode_gqa8_d128", 32, 4, 128, 16, 0, {{2047, 1}, {600, 1}, {64, 1}}},
        {"mqa16_d64_mixed", 16, 1, 64, 32, 0, {{0, 130}, {700, 1}, {333, 20}}},
        // GQA 2, chunk boundaries not multiples of anything
        {"gqa2_d128_chunks", 4, 2, 128, 32, 0, {{1, 63}, {65, 65}, {129, 300}}},
        // fp16 activations
        {"f16_mixed_d128", 8, 2, 128, 16, 0, {{0, 100}, {200, 1}, {50, 40}}, DType::F16},
        // tiny head_dim (stories260K-like): split-K only path
        {"tiny_d8", 8, 4, 8, 16, 0, {{0, 40}, {30, 1}, {12, 12}}},
        // decode kernel: MHA (one q head per block) with many partitions, long and short
        {"decode_mha_d128_long", 4, 4, 128, 16, 0, {{4000, 1}, {0, 1}, {130, 2}, {65, 1}}},
        // decode kernel: GQA 2, head_dim 64, fp16, a sliding window across partitions
        {"decode_gqa2_d64_f16_window",
         4,
         2,
         64,
         32,
         700,
         {{3000, 1}, {17, 1}, {800, 4}},
         DType::F16},
        // decode kernel: GQA 8 (q heads 8 per block), bf16, head_dim 64
        {"decode_gqa8_d64", 16, 2, 64, 16, 0, {{1500, 1}, {3, 1}, {257, 1}}},
        // head_dim 256 (split-K path), sliding window smaller than a block
        {"d256_window7", 4, 2, 256, 16, 7, {{0, 20}, {40, 1}, {3, 30}}},
        // tiled prefill, fp16, head_dim 64, a window across tiles, chunked (sm90 f16/64 path)
        {"f16_prefill_d64_window100", 4, 2, 64, 16, 100, {{0, 200}, {130, 70}, {5, 8}}, DType::F16},
        // tiled prefill with a block size that is not a power of two (division path)
        {"prefill_bs24_d128", 4, 1, 128, 24, 0, {{0, 150}, {70, 90}}},
        // 128-row tiles of the sm90 kernel: lengths not multiples of 128 on top of n_past,
        // 65 rows (the second warpgroup holds one row), 129 rows (a second tile of one row)
        {"prefill_tile128_tails_d128",
         8,
         2,
         128,
         32,
         0,
         {{0, 65}, {200, 65}, {77, 333}, {0, 129}, {3, 200}}},
        // a window shorter than a warpgroup's rows: each warpgroup skips the tiles below it
        {"prefill_window40_tile128_d64", 4, 2, 64, 16, 40, {{0, 300}, {100, 191}, {0, 65}}},
        // the sm90 kernel's cp.async ring: CTAs whose key range is exactly 3, 4 or 5 tiles of
        // 64, on a block size that is not a power of two, chunked, and with a window (tiles
        // skipped at the start)
        {"prefill_tiles345_bs24_d128",
         4,
         2,
         128,
         24,
         0,
         {{0, 192}, {0, 256}, {0, 320}, {64, 192}, {1, 319}}},
        {"prefill_tiles345_bs24_d64_f16_window",
         4,
         2,
         64,
         24,
         150,
         {{0, 192}, {0, 256}, {0, 320}, {100, 220}},
         DType::F16},
    };
}

INSTANTIATE_TEST_SUITE_P(Cases, CudaAttention, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.name; });

}  // namespace

// The prefill2 kernel (FARSIGHT_PREFILL=v2: the mma.sync kernel the sm90 one replaced on
// Hopper; the default elsewhere) on the prefill cases.
TEST(CudaAttentionV2, PrefillV2KernelMatchesReference) {
    FS_REQUIRE_GPU();
    setenv("FARSIGHT_PREFILL", "v2", 1);
    for (const auto& c : cases())
        if (c.name == "prefill1100_mha_d64_bs32" || c.name == "mixed_mqa_d128_bs16" ||
            c.name == "window128_gqa4_d64_bs32" || c.name == "f16_mixed_d128")
            run_case(c);
    unsetenv("FARSIGHT_PREFILL");
}

// The sm90 kernel the ws kernel replaced (FARSIGHT_PREFILL=sm90; still the fallback for block
// sizes the ws kernel does not take) on every case with a tiled prefill step.
TEST(CudaAttentionSm90, PrefillSm90KernelMatchesReference) {
    FS_REQUIRE_GPU();
    setenv("FARSIGHT_PREFILL", "sm90", 1);
    const int64_t before = cuda::prefill_ws_launches();
    for (const auto& c : cases()) {
        bool tiled = false;
        for (const auto& s : c.seqs) tiled = tiled || s.n_past >= 8 || s.q_len >= 8;
        if (tiled) run_case(c);
    }
    EXPECT_EQ(cuda::prefill_ws_launches(), before) << "FARSIGHT_PREFILL=sm90 ran the ws kernel";
    unsetenv("FARSIGHT_PREFILL");
}

// The warp-specialized kernel (the default; FARSIGHT_PREFILL=ws) on every case with a tiled prefill step
// (some sequence of the step has >= 8 tokens, head_dim 64/128), against the same fp64 reference.
// The ws kernel must actually run (launch counter) where it applies: on an sm_90a device, block
// sizes 16/32/64/128; for the others (block size 24) the launcher falls back to the sm90 kernel.
TEST(CudaAttentionWs, PrefillWsKernelMatchesReference) {
    FS_REQUIRE_GPU();
    gpu();  // device context
    const bool sm90 = cuda::prefill_sm90_available();
    setenv("FARSIGHT_PREFILL", "ws", 1);
    for (const auto& c : cases()) {
        bool tiled = false;
        for (const auto& s : c.seqs) tiled = tiled || s.n_past >= 8 || s.q_len >= 8;
        if (!tiled || (c.D != 64 && c.D != 128)) continue;
        const int64_t before = cuda::prefill_ws_launches();
        run_case(c);
        const int64_t n = cuda::prefill_ws_launches() - before;
        const bool bs_ok =
            c.block_size == 16 || c.block_size == 32 || c.block_size == 64 || c.block_size == 128;
        std::printf("WS %s: %lld ws launches\n", c.name.c_str(), static_cast<long long>(n));
        if (sm90 && bs_ok)
            EXPECT_GT(n, 0) << c.name << ": the ws kernel did not run";
        else
            EXPECT_EQ(n, 0) << c.name << ": the ws kernel ran where it does not apply";
    }
    unsetenv("FARSIGHT_PREFILL");
}

// The ws kernel's building blocks on one 128-key tile, against the CPU: TMA (128B swizzle) of
// 8 KV blocks of 16 keys (kv head 1 of 2, D 128) gathered through a block table, Q stored by the
// consumers' swizzled store, S = Q K^T (SS wgmma, both operands K-major, 128B swizzle) and
// O = P V (RS wgmma, V MN-major) under the default V descriptor strides and the swapped ones.
// S wrong: TMA / swizzle / K-major descriptor; only O wrong: the MN-major V descriptor.
TEST(CudaWgmma, WsTmaProbe) {
    FS_REQUIRE_GPU();
    gpu();  // device context
    if (!cuda::prefill_sm90_available())
        GTEST_SKIP() << "no sm_90a code for this device (needs compute capability 9.0)";
    const int64_t NB = 11, KVH = 2, D = 128, bs = 16, kvh = 1;
    const std::vector<int32_t> blocks = {7, 2, 9, 0, 10, 4, 1, 5};
    std::vector<float> kf = randv(NB * bs * KVH * D, DType::BF16, 1.0f),
                       vf = randv(NB * bs * KVH * D, DType::BF16, 1.0f),
                       qf = randv(64 * 128, DType::BF16, 1.0f),
                       pf = randv(64 * 128, DType::BF16, 1.0f);
    auto bits = [](const std::vector<float>& f) {
        std::vector<uint16_t> b(f.size());
        for (size_t i = 0; i < f.size(); ++i) b[i] = f32_to_bf16(f[i]);
        return b;
    };
    const std::vector<uint16_t> kb = bits(kf), vb = bits(vf), qb = bits(qf), pb = bits(pf);
    auto row = [&](int n) {  // element offset of key n's row (kv head kvh) in a pool
        return ((size_t(blocks[n / bs]) * bs + n % bs) * KVH + kvh) * D;
    };
    std::vector<double> sref(64 * 128, 0.0), oref(64 * 128, 0.0);
    for (int r = 0; r < 64; ++r)
        for (int n = 0; n < 128; ++n) {
            for (int d = 0; d < D; ++d)
                sref[r * 128 + n] += double(qf[r * 128 + d]) * kf[row(n) + d];
            for (int d = 0; d < D; ++d)
                oref[r * 128 + d] += double(pf[r * 128 + n]) * vf[row(n) + d];
        }
    bool s_ok = true, o_ok[2] = {false, false};
    for (int sw = 0; sw < 2; ++sw) {
        std::vector<float> s(64 * 128, std::numeric_limits<float>::quiet_NaN()), o = s;
        ASSERT_TRUE(cuda::ws_tma_probe(sw == 1, kb.data(), vb.data(), NB, blocks.data(), qb.data(),
                                       pb.data(), s.data(), o.data()));
        const double es = rel_l2(s, sref), eo = rel_l2(o, oref);
        s_ok = s_ok && es < 1e-4;
        o_ok[sw] = eo < 1e-4;
        std::printf("PROBE ws_tma swap_v=%d S %s (rel err %.3g) O %s (rel err %.3g)\n", sw,
                    es < 1e-4 ? "ok" : "bad", es, o_ok[sw] ? "ok" : "bad", eo);
    }
    EXPECT_TRUE(s_ok) << "S = Q K^T wrong: TMA box / 128B swizzle / K-major descriptor";
    EXPECT_TRUE(o_ok[0] || o_ok[1]) << "O = P V wrong under both V descriptor conventions";
    const char* ev = std::getenv("FARSIGHT_WS_SWAP_V");
    const bool swapped = ev && ev[0] == '1';
    if (!o_ok[0] && o_ok[1] && !swapped)
        ADD_FAILURE() << "the default V descriptor (LBO = 16 KB, SBO = 1 KB) is wrong and the "
                      << "swapped one is right: run with FARSIGHT_WS_SWAP_V=1 (and swap ws_desc)";
    if (o_ok[0] && swapped) ADD_FAILURE() << "FARSIGHT_WS_SWAP_V=1 selects the wrong V descriptor";
}

// One wgmma m64n64k16 (A from registers, B from shared memory) with B K-major (the K tile of
// the sm90 prefill) and MN-major (the V tile, imm-trans-b = 1), under both LBO/SBO descriptor
// conventions, against a CPU product. Prints which convention is right; fails if neither is,
// or if the default (A) is wrong and FARSIGHT_WGMMA_SWAP_K / _V does not already select B.
TEST(CudaWgmma, DescriptorProbe) {
    FS_REQUIRE_GPU();
    gpu();  // device context
    if (!cuda::prefill_sm90_available())
        GTEST_SKIP() << "no sm_90a code for this device (needs compute capability 9.0)";
    std::vector<float> af = randv(64 * 16, DType::BF16, 1.0f),
                       bf = randv(16 * 64, DType::BF16, 1.0f);
    std::vector<uint16_t> a(af.size()), b(bf.size());
    for (size_t i = 0; i < af.size(); ++i) a[i] = f32_to_bf16(af[i]);
    for (size_t i = 0; i < bf.size(); ++i) b[i] = f32_to_bf16(bf[i]);
    std::vector<double> ref(64 * 64, 0.0);
    for (int r = 0; r < 64; ++r)
        for (int n = 0; n < 64; ++n)
            for (int k = 0; k < 16; ++k) ref[r * 64 + n] += double(af[r * 16 + k]) * bf[k * 64 + n];
    for (bool mn : {false, true}) {
        const char* what = mn ? "mnmajor" : "kmajor";
        bool ok[2] = {false, false};
        for (int sw = 0; sw < 2; ++sw) {
            std::vector<float> d(64 * 64, std::numeric_limits<float>::quiet_NaN());
            ASSERT_TRUE(cuda::wgmma_probe_sm90(mn, sw == 1, a.data(), b.data(), d.data()));
            const double err = rel_l2(d, ref);
            ok[sw] = err < 1e-4;
            std::printf("PROBE %s convention=%c %s (rel err %.3g)\n", what, sw ? 'B' : 'A',
                        ok[sw] ? "ok" : "bad", err);
        }
        EXPECT_TRUE(ok[0] || ok[1]) << what << ": neither descriptor convention is right";
        const char* env = mn ? "FARSIGHT_WGMMA_SWAP_V" : "FARSIGHT_WGMMA_SWAP_K";
        const char* ev = std::getenv(env);
        const bool swapped = ev && ev[0] == '1';
        if (!ok[0] && ok[1] && !swapped)
            ADD_FAILURE() << what << ": the default convention (A) is wrong and B is right: run "
                          << "with " << env << "=1 (and swap the default in wg_strides)";
        if (ok[0] && swapped)
            ADD_FAILURE() << what << ": " << env << "=1 selects the wrong convention (B)";
    }
}

// The tensor-core GQA decode kernel (FARSIGHT_DECODE=tc) on every case, plus cases aimed at
// its tiles (contexts around multiples of 16 and 64, the partition and window edges, a block
// size that is not a power of two, 6 q heads per kv head, a 3-token chunk decoded per token),
// against the fp64 reference. It must run on every case with a single-token sequence and 2..8
// q heads per kv head at head_dim 64/128, and never elsewhere. The same cases then run with
// FARSIGHT_DECODE=cc (decode_kernel forced: the automatic choice takes the tc kernel for large
// batches), and the automatic choice is checked on a small and a large batch. The prompt steps
// (prefill kernels, checked by Cases/CudaAttention) are not checked again here.
TEST(CudaAttentionTc, DecodeTcKernelMatchesReference) {
    FS_REQUIRE_GPU();
    std::vector<Case> all = cases();
    const std::vector<Case> extra = {
        {"tc_edges_gqa4_d128_bs16",
         8,
         2,
         128,
         16,
         0,
         {{0, 1}, {1, 1}, {14, 1}, {15, 1}, {16, 1}, {63, 1}, {64, 1}, {65, 1}, {127, 1},
          {191, 1}, {4100, 1}}},
        {"tc_long_gqa4_d128_single", 8, 2, 128, 16, 0, {{8191, 1}}},
        {"tc_gqa8_d64_bs24_window300",
         16,
         2,
         64,
         24,
         300,
         {{0, 1}, {298, 1}, {299, 1}, {300, 1}, {1000, 1}, {77, 1}}},
        {"tc_gqa6_d128", 12, 2, 128, 16, 0, {{1000, 1}, {5, 1}, {333, 1}}},
        {"tc_gqa2_d128_f16_bs32_chunk", 4, 2, 128, 32, 0, {{500, 1}, {33, 3}, {2000, 1}},
         DType::F16},
        {"tc_gqa4_d64_f16_window16", 8, 2, 64, 16, 16, {{40, 1}, {16, 1}, {3, 1}, {700, 1}},
         DType::F16},
    };
    all.insert(all.end(), extra.begin(), extra.end());
    setenv("FARSIGHT_DECODE", "tc", 1);
    for (const auto& c : all) {
        bool single = false;
        for (const auto& s : c.seqs) single = single || s.q_len == 1;
        const int64_t G = c.H / c.KVH;
        const bool applies = G >= 2 && G <= 8 && (c.D == 64 || c.D == 128);
        const int64_t before = cuda::decode_tc_launches();
        run_case(c, false);
        const int64_t n = cuda::decode_tc_launches() - before;
        std::printf("TC %s: %lld tc launches\n", c.name.c_str(), static_cast<long long>(n));
        if (applies && single) {
            EXPECT_GT(n, 0) << c.name << ": the tc kernel did not run";
        }
        if (!applies) {
            EXPECT_EQ(n, 0) << c.name << ": the tc kernel ran where it does not apply";
        }
    }
    // the other ring depths (FARSIGHT_DECODE_TC_STAGES) on the tc-specific cases
    for (const char* nst : {"2", "4"}) {
        setenv("FARSIGHT_DECODE_TC_STAGES", nst, 1);
        for (const auto& c : extra) {
            SCOPED_TRACE(std::string("stages ") + nst);
            const int64_t before = cuda::decode_tc_launches();
            run_case(c, false);
            EXPECT_GT(cuda::decode_tc_launches(), before) << c.name << " stages " << nst;
        }
    }
    unsetenv("FARSIGHT_DECODE_TC_STAGES");
    // decode_kernel forced on every case
    setenv("FARSIGHT_DECODE", "cc", 1);
    for (const auto& c : all) {
        const int64_t before = cuda::decode_tc_launches();
        run_case(c, false);
        EXPECT_EQ(cuda::decode_tc_launches(), before) << c.name << ": FARSIGHT_DECODE=cc ran tc";
    }
    unsetenv("FARSIGHT_DECODE");
    // automatic: 1 token x 2 kv heads stays on decode_kernel, 40 x 2 (80 pairs, the threshold
    // is 16) takes the tc kernel
    Case small{"auto_1x2", 8, 2, 128, 16, 0, {{300, 1}}};
    Case big{"auto_40x2", 8, 2, 128, 16, 0, {}};
    for (int i = 0; i < 40; ++i) big.seqs.push_back({100 + 7 * i, 1});
    int64_t before = cuda::decode_tc_launches();
    run_case(small, false);
    EXPECT_EQ(cuda::decode_tc_launches(), before) << "automatic choice: tc at 2 pairs";
    before = cuda::decode_tc_launches();
    run_case(big, false);
    EXPECT_GT(cuda::decode_tc_launches(), before) << "automatic choice: no tc at 80 pairs";
    // and one token over a long context (decode_tc_min_ctx(), 8192) takes it too (the small
    // runs under compute-sanitizer cap contexts at 71: the threshold goes down to 60 there)
    if (small_mode()) setenv("FARSIGHT_DECODE_TC_MIN_CTX", "60", 1);
    Case longc{"auto_1x2_ctx9000", 8, 2, 128, 16, 0, {{9000, 1}}};
    before = cuda::decode_tc_launches();
    run_case(longc, false);
    EXPECT_GT(cuda::decode_tc_launches(), before) << "automatic choice: no tc at context 9001";
    unsetenv("FARSIGHT_DECODE_TC_MIN_CTX");
}

// The fused rope + KV-cache store (launch_rope_store, Backend::rope_attention) against the two
// separate kernels it replaces (launch_rope then launch_kv_store, Backend::rope then
// Backend::attention): bitwise identical rotated q/k, pools and attention output, on random
// data at random positions, for several rope variants, GQA shapes, partial rotary, padding
// tokens (slot -1), both the 16-byte vector path and the element fallback, and both head
// groupings (one head per thread, two heads sharing one cos/sin).
#include <algorithm>
#include <cstring>
#include <numeric>

#include "backend/cuda/kernels.cuh"
#include "gpu_test_util.h"

using namespace farsight;
using namespace farsight::gputest;

namespace {

#define FS_CU(call) ASSERT_EQ((call), cudaSuccess) << #call

// Device copies of host vectors, freed at scope exit.
struct DevArrays {
    std::vector<void*> ptrs;
    ~DevArrays() {
        for (void* p : ptrs) cudaFree(p);
    }
    template <typename V>
    V* up(const std::vector<V>& h) {
        void* p = nullptr;
        if (cudaMalloc(&p, std::max<size_t>(h.size() * sizeof(V), 16)) != cudaSuccess)
            return nullptr;
        ptrs.push_back(p);
        if (!h.empty()) cudaMemcpy(p, h.data(), h.size() * sizeof(V), cudaMemcpyHostToDevice);
        return static_cast<V*>(p);
    }
};

template <typename V>
std::vector<V> down(const V* d, size_t n) {
    std::vector<V> h(n);
    cudaMemcpy(h.data(), d, n * sizeof(V), cudaMemcpyDeviceToHost);
    return h;
}

uint16_t bits(DType dt, float x) {
    return dt == DType::BF16 ? f32_to_bf16(x) : f32_to_f16(x);
}

// Rope variants of one rotary dim: plain (theta 1e4), llama3 (theta 5e5, factor 8, low 1,
// high 4, original 8192), and scaled frequencies with attention_scaling != 1 (yarn-like).
std::vector<RopeFreqs> variants(int64_t rot) {
    const int64_t half = rot / 2;
    RopeFreqs plain, l3, yarn;
    const double pi = 3.14159265358979323846;
    for (int64_t i = 0; i < half; ++i) {
        plain.inv_freq.push_back(static_cast<float>(std::pow(10000.0, -2.0 * i / rot)));
        const float f = static_cast<float>(std::pow(500000.0, -2.0 * i / rot));
        const double wavelen = 2 * pi / f, lo_wl = 8192.0 / 1.0, hi_wl = 8192.0 / 4.0;
        float g = f;
        if (wavelen > lo_wl) {
            g = f / 8.0f;
        } else if (wavelen >= hi_wl) {
            const double smooth = (8192.0 / wavelen - 1.0) / (4.0 - 1.0);
            g = static_cast<float>((1 - smooth) * f / 8.0 + smooth * f);
        }
        l3.inv_freq.push_back(g);
        yarn.inv_freq.push_back(static_cast<float>(std::pow(1000000.0, -2.0 * i / rot) / 3.0));
    }
    yarn.attention_scaling = 1.1f;
    return {plain, l3, yarn};
}

struct Shape {
    int64_t H, KVH, D, rot;
};

// One comparison: T tokens in up to three sequences (one rope variant each), random positions
// up to 200000, random slots (some -1). misalign: qkv starts 2 bytes off 16-byte alignment
// (forces the element path).
void compare_kernels(DType dt, const Shape& s, int64_t T, bool misalign, int num_sms) {
    SCOPED_TRACE(::testing::Message()
                 << dtype_name(dt) << " H" << s.H << " KV" << s.KVH << " D" << s.D << " rot"
                 << s.rot << " T" << T << (misalign ? " misaligned" : "") << " sms " << num_sms);
    const int64_t C = (s.H + 2 * s.KVH) * s.D, half = s.rot / 2;
    const int64_t n_slots = T + 13;
    auto& g = rng();
    // metadata
    const std::vector<RopeFreqs> rv = variants(s.rot);
    std::vector<float> inv;
    std::vector<int32_t> roff, rhalf;
    std::vector<float> rscal;
    for (const auto& r : rv) {
        roff.push_back(static_cast<int32_t>(inv.size()));
        rhalf.push_back(static_cast<int32_t>(r.inv_freq.size()));
        inv.insert(inv.end(), r.inv_freq.begin(), r.inv_freq.end());
        rscal.push_back(r.attention_scaling);
    }
    std::vector<SeqSlice> seqs;
    std::vector<int32_t> token_seq(T), positions(T), slots(T);
    const int64_t n_seq = std::min<int64_t>(3, T);
    for (int64_t q = 0, t0 = 0; q < n_seq; ++q) {
        SeqSlice sl;
        sl.q_start = static_cast<int32_t>(t0);
        sl.q_len = static_cast<int32_t>(q + 1 == n_seq ? T - t0 : T / n_seq);
        sl.rope_variant = static_cast<int32_t>(q % 3);
        for (int32_t i = 0; i < sl.q_len; ++i) token_seq[t0 + i] = static_cast<int32_t>(q);
        t0 += sl.q_len;
        seqs.push_back(sl);
    }
    std::uniform_int_distribution<int32_t> pos_d(0, 200000);
    for (auto& p : positions) p = pos_d(g);
    std::vector<int32_t> perm(n_slots);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), g);
    std::uniform_int_distribution<int> pad_d(0, 6);
    for (int64_t t = 0; t < T; ++t) slots[t] = pad_d(g) == 0 ? -1 : perm[t];
    // data: random qkv, pools pre-filled with random values (untouched slots must stay)
    std::vector<uint16_t> qkv(C * T), pool(n_slots * s.KVH * s.D);
    {
        auto x = randv(qkv.size(), dt, 3.0f);
        for (size_t i = 0; i < x.size(); ++i) qkv[i] = bits(dt, x[i]);
        auto p = randv(pool.size(), dt, 1.0f);
        for (size_t i = 0; i < p.size(); ++i) pool[i] = bits(dt, p[i]);
    }
    DevArrays d;
    cuda::DevMeta m;
    m.positions = d.up(positions);
    m.slot_mapping = d.up(slots);
    m.token_seq = d.up(token_seq);
    m.seqs = d.up(seqs);
    m.inv_freq = d.up(inv);
    m.rope_offset = d.up(roff);
    m.rope_half = d.up(rhalf);
    m.rope_scaling = d.up(rscal);
    m.num_tokens = static_cast<int>(T);
    m.num_seqs = static_cast<int>(n_seq);
    std::vector<uint16_t> qkv_pad(qkv.size() + 8);
    std::copy(qkv.begin(), qkv.end(), qkv_pad.begin() + (misalign ? 1 : 0));
    uint16_t* qa = d.up(qkv_pad) + (misalign ? 1 : 0);
    uint16_t* qb = d.up(qkv_pad) + (misalign ? 1 : 0);
    uint16_t *ka = d.up(pool), *va = d.up(pool), *kb = d.up(pool), *vb = d.up(pool);
    ASSERT_TRUE(qa && qb && ka && va && kb && vb && m.positions && m.seqs);
    cudaStream_t st = nullptr;
    FS_CU(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    cuda::launch_rope(dt, qa, T, C, s.H + s.KVH, s.D, half, m, st);
    cuda::launch_kv_store(dt, qa, T, C, s.H, s.KVH, s.D, m.slot_mapping, ka, va, st);
    cuda::launch_rope_store(dt, qb, T, C, s.H, s.KVH, s.D, half, m, kb, vb, num_sms, st);
    FS_CU(cudaStreamSynchronize(st));
    FS_CU(cudaStreamDestroy(st));
    auto cmp = [](const std::vector<uint16_t>& want, const std::vector<uint16_t>& got,
                  const char* what) {
        ASSERT_EQ(want.size(), got.size());
        for (size_t i = 0; i < want.size(); ++i)
            ASSERT_EQ(want[i], got[i]) << what << " differs at element " << i;
    };
    const auto rq_a = down(qa, qkv.size()), rq_b = down(qb, qkv.size());
    cmp(rq_a, rq_b, "rotated qkv");
    cmp(down(ka, pool.size()), down(kb, pool.size()), "k pool");
    cmp(down(va, pool.size()), down(vb, pool.size()), "v pool");
    // the reference did rotate (most of the T * (H + KVH) * rot rotated elements change) and
    // stored something when any token has a slot
    size_t changed = 0;
    for (size_t i = 0; i < qkv.size(); ++i) changed += rq_a[i] != qkv[i];
    EXPECT_GT(changed, static_cast<size_t>(T * (s.H + s.KVH) * s.rot / 2));
    if (std::any_of(slots.begin(), slots.end(), [](int32_t v) { return v >= 0; })) {
        EXPECT_NE(down(ka, pool.size()), pool);
    }
}

}  // namespace

class CudaRopeStore : public ::testing::TestWithParam<DType> {};

TEST_P(CudaRopeStore, KernelMatchesRopeThenKvStore) {
    FS_REQUIRE_GPU();
    const DType dt = GetParam();
    const std::vector<Shape> shapes = {
        {32, 8, 128, 128},  // Llama-3 8B
        {14, 2, 64, 64},    // Qwen2 0.5B
        {32, 32, 80, 80},   // D = 80 (half 40: vector path)
        {8, 2, 128, 64},    // partial rotary, vector path (half 32, 64 k dims copied)
        {6, 3, 64, 20},     // partial rotary, element path (half 10)
        {4, 1, 96, 96},     // half 48
        {5, 5, 72, 36},     // partial rotary, half 18: element path
    };
    const int64_t big = small_mode() ? 40 : 300;
    for (const Shape& s : shapes)
        for (int64_t T : {int64_t{1}, int64_t{7}, big})
            for (int num_sms : {1, 1 << 20}) {  // 2 heads per thread / 1 head per thread
                compare_kernels(dt, s, T, false, num_sms);
                if (::testing::Test::HasFatalFailure()) return;
            }
    // misaligned qkv: the element path on shapes that would vectorise
    compare_kernels(dt, shapes[0], 5, true, 1 << 20);
    compare_kernels(dt, shapes[1], 33, true, 1);
}

// Through the backend: rope_attention (fused) against rope then attention (separate kernels),
// a prefill step then a decode step over the cache, bitwise equal outputs and rotated qkv
// (except for steps the decode kernel rotates itself: see test_decode_fused.cpp).
TEST_P(CudaRopeStore, BackendRopeAttentionMatchesRopeThenAttention) {
    FS_REQUIRE_GPU();
    const DType dt = GetParam();
    Backend& b = gpu(dt);
    for (const Shape& s : {Shape{32, 8, 128, 128}, Shape{14, 2, 64, 64}, Shape{6, 3, 64, 20}}) {
        SCOPED_TRACE(::testing::Message()
                     << "H" << s.H << " KV" << s.KVH << " D" << s.D << " rot" << s.rot);
        KVLayout L;
        L.num_layers = 2;
        L.num_blocks = 64;
        L.block_size = 16;
        L.num_kv_heads = s.KVH;
        L.head_dim = s.D;
        L.dtype = dt;
        b.init_kv(L);
        const int64_t C = (s.H + 2 * s.KVH) * s.D;
        AttnParams p{s.H, s.KVH, s.D, s.rot, 1.0f / std::sqrt(static_cast<float>(s.D)), 0};
        const std::vector<RopeFreqs> rv = variants(s.rot);
        // two sequences: 37 and 20 prompt tokens (blocks 0..2, 8..9), then one decode token each
        std::vector<std::vector<int32_t>> tables = {{0, 1, 2, 3}, {8, 9, 10}};
        auto step = [&](const std::vector<int32_t>& n_past, const std::vector<int32_t>& q_len) {
            BatchMeta m;
            m.rope = {rv[1], rv[2]};
            for (size_t q = 0; q < 2; ++q)
                append_seq(m, tables[q], 16, n_past[q], q_len[q], static_cast<int32_t>(q));
            m.logit_rows = {0};
            const int64_t T = m.num_tokens();
            b.begin_forward(m);
            auto x = randv(T * C, dt, 2.0f);
            Tensor q1 = upload(b, x, T, C, dt), q2 = upload(b, x, T, C, dt);
            Tensor o1 = poisoned(b, T, s.H * s.D, dt), o2 = poisoned(b, T, s.H * s.D, dt);
            b.rope(q1, p);
            b.attention(1, q1, p, o1);
            b.rope_attention(1, q2, p, o2);
            b.synchronize();
            const auto g1 = download(b, q1), g2 = download(b, q2);
            const auto a1 = download(b, o1), a2 = download(b, o2);
            for (float v : a2) ASSERT_TRUE(std::isfinite(v));
            // A step of single tokens rotates inside the decode kernel (test_decode_fused.cpp
            // covers it: qkv stays unrotated, the own key enters the softmax in another order).
            if (q_len[0] == 1 && q_len[1] == 1 && s.rot == s.D && (s.D == 64 || s.D == 128)) return;
            ASSERT_EQ(0, std::memcmp(g1.data(), g2.data(), g1.size() * sizeof(float)))
                << "rotated qkv differs";
            ASSERT_EQ(0, std::memcmp(a1.data(), a2.data(), a1.size() * sizeof(float)))
                << "attention output differs";
        };
        step({0, 0}, {37, 20});
        step({37, 20}, {1, 1});
        step({38, 21}, {3, 1});
    }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaRopeStore, ::testing::Values(DType::BF16, DType::F16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

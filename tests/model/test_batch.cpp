// A batch of sequences of different lengths gives the same logits as each sequence alone,
// across many KV blocks, mixing prefill chunks and decode steps in one forward.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "engine/session.h"

using namespace farsight;

namespace {

LoadOptions tiny(const std::string& dtype, int64_t block_size) {
    LoadOptions o;
    o.dummy = "tiny-test";
    o.dtype = dtype;
    o.threads = 2;
    o.block_size = block_size;
    o.kv_tokens = 4096;
    o.seed = 3;
    return o;
}

std::vector<int32_t> random_ids(std::mt19937& rng, size_t n, int32_t vocab) {
    std::uniform_int_distribution<int32_t> d(0, vocab - 1);
    std::vector<int32_t> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

double max_rel_diff(const float* a, const float* b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; ++i) {
        num = std::max(num, static_cast<double>(std::fabs(a[i] - b[i])));
        den = std::max(den, static_cast<double>(std::fabs(b[i])));
    }
    return num / den;
}

void check_batch_equals_single(const std::string& dtype, int64_t block_size) {
    Session s(tiny(dtype, block_size));
    const int32_t V = static_cast<int32_t>(s.config().vocab_size);
    std::mt19937 rng(11);
    const std::vector<size_t> lens = {37, 5, 90, 1, 64};
    std::vector<std::vector<int32_t>> prompts;
    for (size_t n : lens) prompts.push_back(random_ids(rng, n, V));
    const int decode_steps = 6;
    std::vector<std::vector<int32_t>> cont;
    for (size_t i = 0; i < lens.size(); ++i) cont.push_back(random_ids(rng, decode_steps, V));

    // Alone: prompt (all logits), then decode steps one by one.
    std::vector<std::vector<float>> alone_prompt, alone_decode;
    for (size_t i = 0; i < lens.size(); ++i) {
        BlockTable t;
        SeqStep st{&t, prompts[i], true};
        alone_prompt.push_back(s.forward(std::span<SeqStep>(&st, 1)));
        std::vector<float> dec;
        for (int k = 0; k < decode_steps; ++k) {
            SeqStep d{&t, std::span<const int32_t>(&cont[i][k], 1), false};
            auto l = s.forward(std::span<SeqStep>(&d, 1));
            dec.insert(dec.end(), l.begin(), l.end());
        }
        alone_decode.push_back(dec);
        t.release(s.pool());
    }
    ASSERT_EQ(s.pool().num_used(), 0);

    // Together: sequences 0..2 prefill in step 0; 3 and 4 join one step later (so prefill and
    // decode share forward calls); everything then decodes together.
    std::vector<BlockTable> tables(lens.size());
    std::vector<std::vector<float>> got_prompt(lens.size()), got_decode(lens.size());
    std::vector<int> next(lens.size(), -1);  // -1: prompt not yet sent
    for (int step = 0; step < decode_steps + 2; ++step) {
        std::vector<SeqStep> steps;
        std::vector<size_t> who;
        for (size_t i = 0; i < lens.size(); ++i) {
            const bool late = i >= 3;
            if (next[i] == -1) {
                if (late && step == 0) continue;
                steps.push_back({&tables[i], prompts[i], true});
            } else if (next[i] < decode_steps) {
                steps.push_back({&tables[i], std::span<const int32_t>(&cont[i][next[i]], 1), false});
            } else {
                continue;
            }
            who.push_back(i);
        }
        if (steps.empty()) break;
        const auto l = s.forward(steps);
        size_t off = 0;
        for (size_t k = 0; k < who.size(); ++k) {
            const size_t i = who[k];
            const size_t rows = steps[k].all_logits ? steps[k].tokens.size() : 1;
            std::vector<float> part(l.begin() + off * V, l.begin() + (off + rows) * V);
            off += rows;
            if (next[i] == -1) got_prompt[i] = part;
            else got_decode[i].insert(got_decode[i].end(), part.begin(), part.end());
            ++next[i];
        }
    }
    double worst = 0;
    for (size_t i = 0; i < lens.size(); ++i) {
        ASSERT_EQ(got_prompt[i].size(), alone_prompt[i].size());
        ASSERT_EQ(got_decode[i].size(), alone_decode[i].size());
        worst = std::max(worst, max_rel_diff(got_prompt[i].data(), alone_prompt[i].data(), got_prompt[i].size()));
        worst = std::max(worst, max_rel_diff(got_decode[i].data(), alone_decode[i].data(), got_decode[i].size()));
        EXPECT_GT(tables[i].blocks().size(), static_cast<size_t>(lens[i] > 8 ? 1 : 0));
    }
    std::printf("[figure] batch vs single (%s weights, block %lld): max relative logit diff %.3g\n",
                dtype.c_str(), static_cast<long long>(block_size), worst);
    EXPECT_LE(worst, 1e-5);
    for (auto& t : tables) t.release(s.pool());
    EXPECT_EQ(s.pool().num_used(), 0);
}

}  // namespace

TEST(BatchEqualsSingle, F32WeightsSmallBlocks) { check_batch_equals_single("f32", 4); }
TEST(BatchEqualsSingle, Bf16WeightsBlock16) { check_batch_equals_single("bf16", 16); }

// The KV cache really is used: decoding token by token equals scoring the whole sequence.
TEST(BatchEqualsSingle, IncrementalDecodeEqualsFullForward) {
    Session s(tiny("f32", 8));
    const int32_t V = static_cast<int32_t>(s.config().vocab_size);
    std::mt19937 rng(5);
    const auto ids = random_ids(rng, 50, V);
    const auto full = s.score(ids);
    BlockTable t;
    double worst = 0;
    for (size_t i = 0; i < ids.size(); ++i) {
        SeqStep st{&t, std::span<const int32_t>(&ids[i], 1), false};
        const auto l = s.forward(std::span<SeqStep>(&st, 1));
        worst = std::max(worst, max_rel_diff(l.data(), full.data() + i * V, static_cast<size_t>(V)));
    }
    t.release(s.pool());
    EXPECT_LE(worst, 1e-5);
}

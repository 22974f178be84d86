// Continuous batching: budget filling, chunked prefill, prefix caching, preemption,
// cancellation, n > 1, and greedy output identical to generate() alone or batched.
#include <gtest/gtest.h>

#include <map>
#include <thread>

#include "engine/engine.h"
#include "engine/generate.h"
#include "engine/scheduler.h"

using namespace farsight;

namespace {

const std::string kModel = std::string(FARSIGHT_SHARED_DIR) + "/models/stories260K";

LoadOptions load_opts(int64_t kv_tokens = 0) {
    LoadOptions o;
    o.model = kModel;
    o.kv_tokens = kv_tokens;
    return o;
}

struct Out {
    std::vector<int32_t> ids;
    std::string text, finish_reason;
    int64_t cached = 0;
    int events = 0;
};

struct Collector {
    std::map<std::pair<uint64_t, int>, Out> out;
    Out& at(uint64_t id, int index) { return out[{id, index}]; }
    EventFn fn() {
        return [this](const SeqEvent& ev) {
            Out& o = at(ev.request_id, ev.index);
            ++o.events;
            for (const auto& t : ev.tokens) o.ids.push_back(t.id);
            o.text += ev.text;
            if (ev.finished) {
                o.finish_reason = ev.finish_reason;
                o.cached = ev.cached_tokens;
            }
        };
    }
};

Request greedy_request(const std::vector<int32_t>& prompt, int32_t max_tokens,
                       const Tokenizer& tok) {
    Request r;
    r.prompt = prompt;
    r.sampling.temperature = 0;
    r.max_tokens = max_tokens;
    r.eos_ids = tok.eos_ids();
    return r;
}

GenerationResult reference(Session& s, const Tokenizer& tok, const std::vector<int32_t>& prompt,
                           int32_t max_tokens, std::vector<std::string> stop = {}) {
    GenerationOptions go;
    go.sampling.temperature = 0;
    go.max_new_tokens = max_tokens;
    go.eos_ids = tok.eos_ids();
    go.stop = std::move(stop);
    return generate(s, tok, prompt, go);
}

std::string story_prompt(int i) {
    static const char* names[] = {"Lily", "Tom", "Sue", "Ben", "Max", "Mia", "Sam", "Anna"};
    static const char* things[] = {"ball", "cat", "tree", "car", "box", "dog", "cake", "bird"};
    std::string p = "Once upon a time, there was a little ";
    p += names[i % 8];
    p += " who had a ";
    p += things[(i / 8) % 8];
    for (int k = 0; k < i % 5; ++k) p += ". She liked to play";
    return p;
}

void run_until_idle(Scheduler& s, int max_steps = 100000) {
    for (int i = 0; i < max_steps && s.step(); ++i) {
    }
    ASSERT_TRUE(s.idle());
}

class SchedulerTest : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        session_ = std::make_unique<Session>(load_opts());
        tok_ = std::make_unique<Tokenizer>(Tokenizer::from_folder(kModel));
    }
    static void TearDownTestSuite() {
        session_.reset();
        tok_.reset();
    }
    static std::unique_ptr<Session> session_;
    static std::unique_ptr<Tokenizer> tok_;
};
std::unique_ptr<Session> SchedulerTest::session_;
std::unique_ptr<Tokenizer> SchedulerTest::tok_;

}  // namespace

TEST_F(SchedulerTest, DecodesFirstThenPrefillChunks) {
    Session& s = *session_;
    const Tokenizer& tok = *tok_;
    SchedulerConfig cfg;
    cfg.max_num_batched_tokens = 64;
    cfg.prefix_caching = false;
    Scheduler sch(s, tok, cfg);
    Collector c;
    for (int i = 0; i < 3; ++i) {
        Request r = greedy_request(tok.encode(story_prompt(i)), 200, tok);
        r.ignore_eos = true;
        r.on_event = c.fn();
        sch.add(i + 1, std::move(r));
    }
    // Step until all three decode.
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(sch.step());
    for (const auto& it : sch.last_step()) EXPECT_TRUE(it.decode);
    // A long prompt arrives: 300 tokens.
    std::vector<int32_t> longp = tok.encode(story_prompt(4));
    while (longp.size() < 300) longp.push_back(longp[longp.size() % 20 + 1]);
    Request r = greedy_request(longp, 5, tok);
    r.on_event = c.fn();
    sch.add(99, std::move(r));
    int64_t prefilled = 0;
    int steps = 0;
    while (prefilled < 300) {
        ASSERT_TRUE(sch.step());
        ++steps;
        const auto& plan = sch.last_step();
        ASSERT_EQ(plan.size(), 4u);
        int64_t total = 0;
        for (size_t k = 0; k < 3; ++k) {  // the running streams decode every step, first
            EXPECT_TRUE(plan[k].decode);
            EXPECT_EQ(plan[k].num_tokens, 1);
            EXPECT_NE(plan[k].request_id, 99u);
        }
        for (const auto& it : plan) total += it.num_tokens;
        EXPECT_EQ(plan[3].request_id, 99u);
        EXPECT_FALSE(plan[3].decode);
        EXPECT_EQ(plan[3].num_tokens, std::min<int64_t>(61, 300 - prefilled));
        EXPECT_LE(total, 64);
        prefilled += plan[3].num_tokens;
    }
    EXPECT_EQ(steps, 5);  // ceil(300 / 61)
    sch.cancel(1);
    sch.cancel(2);
    sch.cancel(3);
    run_until_idle(sch);
    // The chunked prompt's greedy output equals generate()'s single-pass prefill.
    EXPECT_EQ(c.at(99, 0).ids, reference(s, tok, longp, 5).ids);
    EXPECT_EQ(s.pool().num_used(), 0);
}

TEST_F(SchedulerTest, GreedyEqualsGenerateAloneAndWith64Concurrent) {
    Session& s = *session_;
    const Tokenizer& tok = *tok_;
    const int N = 64;
    std::vector<std::vector<int32_t>> prompts;
    std::vector<GenerationResult> ref;
    for (int i = 0; i < N; ++i) {
        prompts.push_back(tok.encode(story_prompt(i)));
        ref.push_back(reference(s, tok, prompts.back(), 24 + i % 9));
    }
    // Alone, one at a time.
    for (int i = 0; i < 4; ++i) {
        Scheduler sch(s, tok);
        Collector c;
        Request r = greedy_request(prompts[static_cast<size_t>(i)], 24 + i % 9, tok);
        r.on_event = c.fn();
        sch.add(1, std::move(r));
        run_until_idle(sch);
        EXPECT_EQ(c.at(1, 0).ids, ref[static_cast<size_t>(i)].ids) << i;
        EXPECT_EQ(c.at(1, 0).text, ref[static_cast<size_t>(i)].text) << i;
    }
    // All 64 at once, with a small budget so prefills are chunked between decodes.
    SchedulerConfig cfg;
    cfg.max_num_batched_tokens = 100;
    Scheduler sch(s, tok, cfg);
    Collector c;
    for (int i = 0; i < N; ++i) {
        Request r = greedy_request(prompts[static_cast<size_t>(i)], 24 + i % 9, tok);
        r.on_event = c.fn();
        sch.add(static_cast<uint64_t>(i), std::move(r));
    }
    size_t max_batch = 0;
    while (sch.step()) max_batch = std::max(max_batch, sch.last_step().size());
    EXPECT_GT(max_batch, 30u);
    for (int i = 0; i < N; ++i) {
        const Out& o = c.at(static_cast<uint64_t>(i), 0);
        EXPECT_EQ(o.ids, ref[static_cast<size_t>(i)].ids) << i;
        EXPECT_EQ(o.text, ref[static_cast<size_t>(i)].text) << i;
        const std::string want = ref[static_cast<size_t>(i)].finish_reason == "eos"
                                     ? "stop"
                                     : ref[static_cast<size_t>(i)].finish_reason;
        EXPECT_EQ(o.finish_reason, want) << i;
    }
    EXPECT_EQ(s.pool().num_used(), 0);
}

TEST_F(SchedulerTest, PrefixCacheReusesFullBlocksAndRefcounts) {
    Session& s = *session_;
    const Tokenizer& tok = *tok_;
    const int64_t bs = s.block_size();
    std::vector<int32_t> shared =
        tok.encode(story_prompt(3) + ". " + story_prompt(12) + ". " + story_prompt(21));
    ASSERT_GT(static_cast<int64_t>(shared.size()), 3 * bs);
    std::vector<int32_t> a = shared, b = shared;
    for (int32_t t : tok.encode(" The cat was happy", false)) a.push_back(t);
    for (int32_t t : tok.encode(" Tom ran home fast", false)) b.push_back(t);
    const int64_t common = [&] {
        size_t k = 0;
        while (k < a.size() && k < b.size() && a[k] == b[k]) ++k;
        return static_cast<int64_t>(k);
    }();
    SchedulerConfig cfg;
    Scheduler sch(s, tok, cfg);
    Collector c;
    Request ra = greedy_request(a, 30, tok);
    ra.ignore_eos = true;
    ra.on_event = c.fn();
    sch.add(1, std::move(ra));
    ASSERT_TRUE(sch.step());  // A's prefill: its full blocks are now cached
    Request rb = greedy_request(b, 10, tok);
    rb.on_event = c.fn();
    sch.add(2, std::move(rb));
    ASSERT_TRUE(sch.step());  // B admitted: shares A's blocks
    // B computed only what follows the shared full blocks.
    const auto& plan = sch.last_step();
    ASSERT_EQ(plan.size(), 2u);
    EXPECT_EQ(plan[1].request_id, 2u);
    EXPECT_EQ(plan[1].num_tokens, static_cast<int64_t>(b.size()) - common / bs * bs);
    // Shared blocks have two references.
    int shared_refs = 0;
    for (int32_t blk = 0; blk < s.pool().num_blocks(); ++blk)
        shared_refs += s.pool().ref_count(blk) == 2;
    EXPECT_EQ(shared_refs, common / bs);
    run_until_idle(sch);
    EXPECT_EQ(c.at(2, 0).cached, common / bs * bs);
    EXPECT_EQ(c.at(2, 0).ids, reference(s, tok, b, 10).ids);
    EXPECT_EQ(s.pool().num_used(), 0);
    // Freed blocks stay cached: the same prompt again hits them all (but the last token).
    EXPECT_GT(s.pool().num_cached_free(), 0);
    Collector c2;
    Request rb2 = greedy_request(b, 10, tok);
    rb2.on_event = c2.fn();
    sch.add(3, std::move(rb2));
    run_until_idle(sch);
    EXPECT_EQ(c2.at(3, 0).cached, (static_cast<int64_t>(b.size()) - 1) / bs * bs);
    EXPECT_EQ(c2.at(3, 0).ids, c.at(2, 0).ids);
    EXPECT_GT(sch.metrics().prefix_cache_hits, 0u);
}

TEST_F(SchedulerTest, PreemptionRecomputesWithIdenticalGreedyOutput) {
    // 12 blocks of 16 tokens for 6 sequences of ~40-70 tokens each: they cannot all fit.
    Session s(load_opts(12 * 16));
    const Tokenizer& tok = *tok_;
    Scheduler sch(s, tok);
    Collector c;
    std::vector<std::vector<int32_t>> prompts;
    for (int i = 0; i < 6; ++i) {
        prompts.push_back(tok.encode(story_prompt(i * 5 + 1)));
        Request r = greedy_request(prompts.back(), 48, tok);
        r.ignore_eos = true;
        r.on_event = c.fn();
        sch.add(static_cast<uint64_t>(i), std::move(r));
    }
    run_until_idle(sch);
    EXPECT_GT(sch.metrics().preemptions, 0u);
    for (int i = 0; i < 6; ++i) {
        GenerationOptions go;
        go.sampling.temperature = 0;
        go.max_new_tokens = 48;
        go.ignore_eos = true;
        const auto ref = generate(s, tok, prompts[static_cast<size_t>(i)], go);
        EXPECT_EQ(c.at(static_cast<uint64_t>(i), 0).ids, ref.ids) << i;
        EXPECT_EQ(c.at(static_cast<uint64_t>(i), 0).text, ref.text) << i;
    }
    EXPECT_EQ(s.pool().num_used(), 0);
}

TEST_F(SchedulerTest, CancellationFreesBlocksAtOnce) {
    Session& s = *session_;
    const Tokenizer& tok = *tok_;
    SchedulerConfig cfg;
    cfg.prefix_caching = false;
    Scheduler sch(s, tok, cfg);
    Collector c;
    for (int i = 0; i < 3; ++i) {
        Request r = greedy_request(tok.encode(story_prompt(i + 7)), 100, tok);
        r.ignore_eos = true;
        r.on_event = c.fn();
        sch.add(static_cast<uint64_t>(i), std::move(r));
    }
    for (int i = 0; i < 4; ++i) ASSERT_TRUE(sch.step());
    const int64_t used3 = s.pool().num_used();
    EXPECT_GT(used3, 0);
    sch.cancel(1);
    EXPECT_LT(s.pool().num_used(), used3);
    EXPECT_EQ(c.at(1, 0).finish_reason, "abort");
    EXPECT_EQ(sch.num_running(), 2);
    sch.cancel(0);
    sch.cancel(2);
    EXPECT_EQ(s.pool().num_used(), 0);
    EXPECT_TRUE(sch.idle());
}

TEST_F(SchedulerTest, NChoicesShareThePromptBlocks) {
    Session& s = *session_;
    const Tokenizer& tok = *tok_;
    Scheduler sch(s, tok);
    Collector c;
    std::vector<int32_t> p = tok.encode(story_prompt(33) + ". " + story_prompt(17));
    Request r = greedy_request(p, 20, tok);
    r.n = 3;
    r.on_event = c.fn();
    sch.add(5, std::move(r));
    // Seeded sampling: choices differ from each other but are reproducible.
    Request rs = greedy_request(p, 20, tok);
    rs.n = 3;
    rs.sampling.temperature = 1.0f;
    rs.sampling.has_seed = true;
    rs.sampling.seed = 42;
    rs.on_event = c.fn();
    sch.add(6, std::move(rs));
    run_until_idle(sch);
    const auto ref = reference(s, tok, p, 20);
    for (int i = 0; i < 3; ++i) EXPECT_EQ(c.at(5, i).ids, ref.ids) << i;
    EXPECT_EQ(c.at(5, 1).cached,
              (static_cast<int64_t>(p.size()) - 1) / s.block_size() * s.block_size());
    EXPECT_NE(c.at(6, 0).ids, c.at(6, 1).ids);
    // Choice 0 of a seeded request equals generate() with that seed.
    GenerationOptions go;
    go.sampling.temperature = 1.0f;
    go.sampling.has_seed = true;
    go.sampling.seed = 42;
    go.max_new_tokens = 20;
    go.eos_ids = tok.eos_ids();
    EXPECT_EQ(c.at(6, 0).ids, generate(s, tok, p, go).ids);
    EXPECT_EQ(s.pool().num_used(), 0);
}

TEST_F(SchedulerTest, StopStringsAndErrors) {
    Session& s = *session_;
    const Tokenizer& tok = *tok_;
    Scheduler sch(s, tok);
    Collector c;
    const auto p = tok.encode("Once upon a time");
    const auto ref_full = reference(s, tok, p, 40);
    ASSERT_GT(ref_full.text.size(), 20u);
    const std::string stop = ref_full.text.substr(10, 4);
    Request r = greedy_request(p, 40, tok);
    r.stop = {stop};
    r.on_event = c.fn();
    sch.add(1, std::move(r));
    // A prompt as long as the context, and a token outside the vocabulary: errors, not crashes.
    Request big =
        greedy_request(std::vector<int32_t>(static_cast<size_t>(s.max_model_len()), 5), 4, tok);
    big.on_event = c.fn();
    sch.add(2, std::move(big));
    Request bad = greedy_request({1, 100000}, 4, tok);
    bad.on_event = c.fn();
    sch.add(3, std::move(bad));
    run_until_idle(sch);
    const auto ref = reference(s, tok, p, 40, {stop});
    EXPECT_EQ(c.at(1, 0).text, ref.text);
    EXPECT_EQ(c.at(1, 0).finish_reason, "stop");
    EXPECT_EQ(c.at(1, 0).text.find(stop), std::string::npos);
    EXPECT_EQ(c.at(2, 0).finish_reason, "error");
    EXPECT_EQ(c.at(3, 0).finish_reason, "error");
}

TEST_F(SchedulerTest, EngineThreadServesConcurrentSubmitters) {
    Session& s = *session_;
    const Tokenizer& tok = *tok_;
    std::vector<GenerationResult> ref;
    for (int i = 0; i < 16; ++i)
        ref.push_back(reference(s, tok, tok.encode(story_prompt(i * 3)), 20));
    Engine eng(s, tok);
    std::vector<std::string> texts(16);
    std::vector<std::thread> th;
    for (int t = 0; t < 4; ++t)
        th.emplace_back([&, t] {
            for (int i = t; i < 16; i += 4) {
                auto st = eng.submit(greedy_request(tok.encode(story_prompt(i * 3)), 20, tok));
                while (!st->finished())
                    if (auto ev = st->next(std::chrono::milliseconds(100)))
                        texts[static_cast<size_t>(i)] += ev->text;
            }
        });
    for (auto& x : th) x.join();
    for (int i = 0; i < 16; ++i)
        EXPECT_EQ(texts[static_cast<size_t>(i)], ref[static_cast<size_t>(i)].text) << i;
    // A cancelled long request frees its blocks.
    Request r = greedy_request(tok.encode(story_prompt(5)), 400, tok);
    r.ignore_eos = true;
    auto st = eng.submit(std::move(r));
    ASSERT_TRUE(st->next(std::chrono::milliseconds(10000)).has_value());
    eng.cancel(st->id());
    std::string reason;
    while (!st->finished())
        if (auto ev = st->next(std::chrono::milliseconds(100)))
            if (ev->finished) reason = ev->finish_reason;
    EXPECT_EQ(reason, "abort");
    eng.shutdown(true);
    EXPECT_EQ(eng.metrics().kv_blocks_used, 0);
    EXPECT_EQ(eng.pending(), 0);
}

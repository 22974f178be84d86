#pragma once
// Continuous batching. The Scheduler owns every in-flight sequence and runs one forward step at
// a time on a Session: each step fills a token budget with the decode tokens of running
// sequences first, then prefill chunks (a long prompt is split over several steps, so running
// streams never stall). KV blocks are reference counted; full blocks are hashed into the
// pool's prefix cache so requests with a common prefix share them; when blocks run out the
// most recently admitted sequence is preempted (its blocks freed, its prompt + generated
// tokens recomputed later). The Scheduler is single-threaded (like Session): Engine
// (engine/engine.h) runs it on its own thread.
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/sampler.h"
#include "engine/session.h"
#include "engine/stop.h"
#include "tokenizer/tokenizer.h"

namespace farsight {

struct TokenInfo {
    int32_t id = 0;
    float logprob = 0;
    std::vector<TokenLogprob> top;  // sampling.top_logprobs alternatives
};

// One event of one choice (sequence) of a request.
struct SeqEvent {
    uint64_t request_id = 0;
    int index = 0;                  // choice index (0 .. n-1)
    std::string text;               // new text (valid UTF-8, stop strings held back)
    std::vector<TokenInfo> tokens;  // new tokens
    bool finished = false;
    std::string finish_reason;  // when finished: "stop" | "length" | "abort" | "error"
    std::string error;          // finish_reason "error": what went wrong
    // When finished:
    int64_t prompt_tokens = 0, completion_tokens = 0, cached_tokens = 0;
    double ttft_s = 0;     // arrival -> first token
    double prefill_s = 0;  // first scheduled -> first token
    double total_s = 0;    // arrival -> finish
};
using EventFn = std::function<void(const SeqEvent&)>;

struct Request {
    std::vector<int32_t> prompt;
    SamplingParams sampling;  // choice i > 0 of a seeded request uses seed + i
    int32_t max_tokens = 256;
    std::vector<std::string> stop;
    std::vector<int32_t> eos_ids;
    bool ignore_eos = false;
    int n = 1;              // independent choices sharing the prompt's cached blocks
    bool logprobs = false;  // report each token's logprob (and sampling.top_logprobs more)
    EventFn on_event;       // called on the scheduler's thread
};

struct SchedulerConfig {
    int64_t max_num_batched_tokens = 2048;  // tokens per forward step
    int64_t max_num_seqs = 256;             // running sequences at once
    bool prefix_caching = true;
};

// What one step computed for one sequence.
struct StepItem {
    uint64_t request_id = 0;
    int index = 0;
    int64_t num_tokens = 0;
    bool decode = false;  // one new token after the first (else a prefill or recompute chunk)
};

// Latency histogram (Prometheus style: cumulative buckets, sum, count).
struct Histogram {
    std::vector<double> bounds;
    std::vector<uint64_t> counts;  // per bound (not cumulative), plus +Inf at the end
    double sum = 0;
    uint64_t count = 0;
    explicit Histogram(std::vector<double> b = {});
    void observe(double v);
};

struct SchedulerMetrics {
    uint64_t requests_finished = 0, requests_stop = 0, requests_length = 0, requests_abort = 0,
             requests_error = 0;
    uint64_t requests_received = 0, prompt_tokens = 0, generation_tokens = 0;
    uint64_t prefix_cache_queries = 0, prefix_cache_hits = 0;  // in tokens
    uint64_t preemptions = 0, steps = 0, batched_tokens = 0;
    int64_t running = 0, waiting = 0;
    int64_t kv_blocks_total = 0, kv_blocks_used = 0, kv_blocks_free = 0, kv_blocks_cached_free = 0;
    Histogram ttft{{0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}};
    Histogram itl{{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}};
    Histogram e2e{{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120}};
};

class Scheduler {
  public:
    Scheduler(Session& session, const Tokenizer& tok, SchedulerConfig cfg = {});
    ~Scheduler();
    Scheduler(const Scheduler&) = delete;
    Scheduler& operator=(const Scheduler&) = delete;

    // Queues a request (ids must be unique). A prompt that cannot fit the context finishes at
    // once with finish_reason "error".
    void add(uint64_t id, Request r);
    // Ends every choice of a request now (finish_reason "abort"), freeing its blocks.
    void cancel(uint64_t id);
    void cancel_all();
    // Runs one forward step (scheduling, model, sampling, events). Returns false when there was
    // nothing to do.
    bool step();
    bool idle() const { return running_.empty() && waiting_.empty(); }
    int64_t num_running() const { return static_cast<int64_t>(running_.size()); }
    int64_t num_waiting() const { return static_cast<int64_t>(waiting_.size()); }
    const std::vector<StepItem>& last_step() const { return plan_; }
    const SchedulerMetrics& metrics();  // refreshes the gauges
    const SchedulerConfig& config() const { return cfg_; }
    Session& session() { return s_; }

    struct Sequence;

  private:
    using Clock = std::chrono::steady_clock;
    void admit_prefix(Sequence& q);
    void preempt(size_t running_index);
    void finish(Sequence& q, const std::string& reason, const std::string& error = {});
    void sample(Sequence& q, std::span<float> logits);
    void accept(Sequence& q, TokenInfo ti);  // a sampled token: stream it, stop or go on
    void register_full_blocks(Sequence& q);
    bool blocked(const Sequence& q) const;

    Session& s_;
    Tokenizer tok_;
    SchedulerConfig cfg_;
    std::vector<std::unique_ptr<Sequence>> running_;  // admission order
    std::deque<std::unique_ptr<Sequence>> waiting_;   // arrival order (preempted ones first)
    std::vector<StepItem> plan_;
    SchedulerMetrics m_;
    uint64_t admit_counter_ = 0;
};

}  // namespace farsight

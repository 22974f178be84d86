#include "engine/scheduler.h"

#include <algorithm>

#include "core/error.h"

namespace farsight {

Histogram::Histogram(std::vector<double> b) : bounds(std::move(b)), counts(bounds.size() + 1, 0) {}

void Histogram::observe(double v) {
    size_t i = 0;
    while (i < bounds.size() && v > bounds[i]) ++i;
    ++counts[i];
    sum += v;
    ++count;
}

struct Scheduler::Sequence {
    Sequence(uint64_t id, int idx, std::shared_ptr<const Request> r, const Tokenizer& tok)
        : request_id(id),
          index(idx),
          req(std::move(r)),
          tokens(req->prompt),
          prompt_len(static_cast<int64_t>(req->prompt.size())),
          sampler(choice_params(*req, idx)),
          stops(req->stop),
          dec(tok, /*skip_special=*/true) {
        hist.add_prompt(req->prompt);
        for (int32_t t : req->prompt) (void)dec.push(t);  // context for spacing; not emitted
        (void)dec.flush();
    }
    static SamplingParams choice_params(const Request& r, int idx) {
        SamplingParams p = r.sampling;
        p.seed += static_cast<uint64_t>(idx);
        return p;
    }
    int64_t computed() const { return table.num_cached(); }
    int64_t remaining() const { return static_cast<int64_t>(tokens.size()) - computed(); }
    bool is_decode() const { return generated > 0 && remaining() == 1; }

    uint64_t request_id;
    int index;
    std::shared_ptr<const Request> req;
    std::vector<int32_t> tokens;  // prompt + generated
    int64_t prompt_len;
    BlockTable table;
    std::vector<uint64_t> hashes;  // chain hash of each full block at the start of the table
    Sampler sampler;
    TokenHistory hist;
    StopMatcher stops;
    IncrementalDecoder dec;
    int64_t generated = 0;
    int64_t cached_tokens = 0;  // prefix-cache hit at first admission
    bool admitted_once = false, prompt_done = false, got_first = false, done = false;
    Clock::time_point arrival = Clock::now(), first_sched, first_token, last_token;
};

Scheduler::Scheduler(Session& session, const Tokenizer& tok, SchedulerConfig cfg)
    : s_(session), tok_(tok), cfg_(cfg) {
    FS_CHECK(cfg_.max_num_batched_tokens > 0, "--max-num-batched-tokens must be positive");
    FS_CHECK(cfg_.max_num_seqs > 0, "--max-num-seqs must be positive");
}

Scheduler::~Scheduler() {
    for (auto& q : running_) q->table.release(s_.pool());
}

void Scheduler::add(uint64_t id, Request r) {
    auto req = std::make_shared<const Request>(std::move(r));
    const int n = std::max(1, req->n);
    ++m_.requests_received;
    m_.prompt_tokens += req->prompt.size();
    std::string error;
    const int64_t ctx = s_.max_model_len();
    if (req->prompt.empty())
        error = "the prompt is empty";
    else if (static_cast<int64_t>(req->prompt.size()) >= ctx)
        error = fmt::format("the prompt has {} tokens but the context is {} tokens",
                            req->prompt.size(), ctx);
    for (int32_t t : req->prompt)
        if (error.empty() && (t < 0 || t >= s_.config().vocab_size))
            error = fmt::format("token id {} is outside the vocabulary [0, {})", t,
                                s_.config().vocab_size);
    for (int i = 0; i < n; ++i) {
        auto q = std::make_unique<Sequence>(id, i, req, tok_);
        if (!error.empty())
            finish(*q, "error", error);
        else if (req->max_tokens <= 0)
            finish(*q, "length");
        else
            waiting_.push_back(std::move(q));
    }
}

void Scheduler::cancel(uint64_t id) {
    for (auto& q : running_)
        if (q->request_id == id) finish(*q, "abort");
    for (auto& q : waiting_)
        if (q->request_id == id) finish(*q, "abort");
    std::erase_if(running_, [](const auto& q) { return q->done; });
    std::erase_if(waiting_, [](const auto& q) { return q->done; });
}

void Scheduler::cancel_all() {
    for (auto& q : running_) finish(*q, "abort");
    for (auto& q : waiting_) finish(*q, "abort");
    running_.clear();
    waiting_.clear();
}

bool Scheduler::blocked(const Sequence& q) const {
    // Choices after the first wait for the first one's prompt, then share its cached blocks.
    if (q.index == 0 || !cfg_.prefix_caching) return false;
    for (const auto& r : running_)
        if (r->request_id == q.request_id && r->index == 0) return !r->prompt_done;
    return false;
}

void Scheduler::admit_prefix(Sequence& q) {
    if (!cfg_.prefix_caching || !q.table.blocks().empty()) return;
    const int64_t bs = s_.block_size();
    // At least the last token is computed: its logits pick the next token.
    const int64_t max_blocks = (static_cast<int64_t>(q.tokens.size()) - 1) / bs;
    uint64_t parent = 0;
    q.hashes.clear();
    int64_t k = 0;
    for (; k < max_blocks; ++k) {
        std::span<const int32_t> blk(q.tokens.data() + k * bs, static_cast<size_t>(bs));
        const auto b = s_.pool().acquire_cached(parent, blk);
        if (!b) break;
        q.table.append(*b);
        parent = block_hash(parent, blk);
        q.hashes.push_back(parent);
    }
    q.table.set_cached(k * bs);
    m_.prefix_cache_queries += q.tokens.size();
    m_.prefix_cache_hits += static_cast<uint64_t>(k * bs);
    if (!q.admitted_once) q.cached_tokens = k * bs;
}

void Scheduler::register_full_blocks(Sequence& q) {
    const int64_t bs = s_.block_size();
    const int64_t full = q.computed() / bs;
    while (static_cast<int64_t>(q.hashes.size()) < full) {
        const size_t k = q.hashes.size();
        const uint64_t parent = k ? q.hashes[k - 1] : 0;
        std::span<const int32_t> blk(q.tokens.data() + k * static_cast<size_t>(bs),
                                     static_cast<size_t>(bs));
        if (cfg_.prefix_caching) (void)s_.pool().register_block(q.table.blocks()[k], parent, blk);
        q.hashes.push_back(block_hash(parent, blk));
    }
}

void Scheduler::preempt(size_t i) {
    auto q = std::move(running_[i]);
    running_.erase(running_.begin() + static_cast<std::ptrdiff_t>(i));
    q->table.release(s_.pool());
    q->hashes.clear();
    ++m_.preemptions;
    waiting_.push_front(std::move(q));
}

void Scheduler::finish(Sequence& q, const std::string& reason, const std::string& error) {
    SeqEvent ev;
    ev.request_id = q.request_id;
    ev.index = q.index;
    ev.finished = true;
    ev.finish_reason = reason;
    ev.error = error;
    q.table.release(s_.pool());
    q.hashes.clear();
    q.done = true;
    const auto now = Clock::now();
    ev.prompt_tokens = q.prompt_len;
    ev.completion_tokens = q.generated;
    ev.cached_tokens = q.cached_tokens;
    if (q.got_first) {
        ev.ttft_s = std::chrono::duration<double>(q.first_token - q.arrival).count();
        ev.prefill_s = std::chrono::duration<double>(q.first_token - q.first_sched).count();
    }
    ev.total_s = std::chrono::duration<double>(now - q.arrival).count();
    ++m_.requests_finished;
    if (reason == "stop")
        ++m_.requests_stop;
    else if (reason == "length")
        ++m_.requests_length;
    else if (reason == "abort")
        ++m_.requests_abort;
    else
        ++m_.requests_error;
    m_.e2e.observe(ev.total_s);
    if (q.req->on_event) q.req->on_event(ev);
}

void Scheduler::sample(Sequence& q, std::span<float> lg) {
    const Request& r = *q.req;
    TokenInfo ti;
    ti.id = q.sampler.sample(lg, q.hist);
    if (r.logprobs) {
        ti.logprob = Sampler::logprob_of(lg, ti.id);
        if (r.sampling.top_logprobs > 0)
            ti.top = Sampler::top_logprobs(lg, r.sampling.top_logprobs);
    }
    accept(q, std::move(ti));
}

void Scheduler::accept(Sequence& q, TokenInfo ti) {
    const Request& r = *q.req;
    const auto now = Clock::now();
    if (!q.got_first) {
        q.got_first = true;
        q.first_token = now;
        m_.ttft.observe(std::chrono::duration<double>(now - q.arrival).count());
    } else {
        m_.itl.observe(std::chrono::duration<double>(now - q.last_token).count());
    }
    q.last_token = now;
    q.tokens.push_back(ti.id);
    q.hist.add_output(ti.id);
    ++q.generated;
    ++m_.generation_tokens;

    SeqEvent ev;
    ev.request_id = q.request_id;
    ev.index = q.index;
    ev.tokens.push_back(std::move(ti));
    std::string reason;
    const int32_t id = ev.tokens.back().id;
    if (!r.ignore_eos && std::find(r.eos_ids.begin(), r.eos_ids.end(), id) != r.eos_ids.end()) {
        reason = "stop";
    } else {
        ev.text = q.stops.push(q.dec.push(id));
        if (q.stops.stopped()) reason = "stop";
    }
    if (reason.empty() && (q.generated >= r.max_tokens ||
                           static_cast<int64_t>(q.tokens.size()) >= s_.max_model_len()))
        reason = "length";
    if (!reason.empty() && !q.stops.stopped()) {
        ev.text += q.stops.push(q.dec.flush());
        if (q.stops.stopped())
            reason = "stop";
        else
            ev.text += q.stops.flush();
    }
    if (!ev.text.empty() || !ev.tokens.empty())
        if (r.on_event) r.on_event(ev);
    if (!reason.empty()) finish(q, reason);
}

bool Scheduler::step() {
    plan_.clear();
    if (idle()) return false;
    BlockPool& pool = s_.pool();
    const int64_t bs = s_.block_size();
    int64_t budget = cfg_.max_num_batched_tokens;
    std::vector<Sequence*> sel;
    std::vector<int64_t> counts;
    auto blocks_for = [&](const Sequence& q, int64_t n) {
        const int64_t need =
            (q.computed() + n + bs - 1) / bs - static_cast<int64_t>(q.table.blocks().size());
        return std::max<int64_t>(need, 0);
    };
    auto pick = [&](Sequence& q, int64_t n) {
        q.table.reserve(pool, q.computed() + n, bs);
        sel.push_back(&q);
        counts.push_back(n);
        budget -= n;
        if (!q.admitted_once) {
            q.admitted_once = true;
            q.first_sched = Clock::now();
        }
    };

    // 1. Decode tokens of running sequences, oldest first; preempt the newest for blocks.
    for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
        Sequence& q = *running_[i];
        if (!q.is_decode()) continue;
        const int64_t need = blocks_for(q, 1);
        while (pool.num_free() < need && running_.size() > i + 1) preempt(running_.size() - 1);
        if (pool.num_free() < need) {
            if (i == 0) {
                finish(
                    q, "error",
                    fmt::format("the KV cache ({} tokens) cannot hold this sequence of {} tokens; "
                                "raise --kv-tokens",
                                pool.num_blocks() * bs, q.tokens.size()));
                running_.erase(running_.begin());
            } else {
                preempt(i);
            }
            break;
        }
        pick(q, 1);
    }
    // 2. Prefill chunks of running sequences.
    for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
        Sequence& q = *running_[i];
        if (q.is_decode() || std::find(sel.begin(), sel.end(), &q) != sel.end()) continue;
        int64_t chunk = std::min(q.remaining(), budget);
        const int64_t fit =
            (static_cast<int64_t>(q.table.blocks().size()) + pool.num_free()) * bs - q.computed();
        chunk = std::min(chunk, fit);
        if (chunk > 0) pick(q, chunk);
    }
    // 3. Admit waiting sequences (FCFS) while their whole prompt fits the free blocks.
    while (budget > 0 && static_cast<int64_t>(running_.size()) < cfg_.max_num_seqs) {
        size_t j = 0;
        while (j < waiting_.size() && blocked(*waiting_[j])) ++j;
        if (j == waiting_.size()) break;
        Sequence& q = *waiting_[j];
        admit_prefix(q);
        const int64_t need_all = blocks_for(q, q.remaining());
        if (pool.num_free() < need_all) {
            q.table.release(pool);
            q.hashes.clear();
            if (running_.empty() && sel.empty()) {
                finish(q, "error",
                       fmt::format("the KV cache ({} tokens) cannot hold a sequence of {} tokens; "
                                   "raise --kv-tokens",
                                   pool.num_blocks() * bs, q.tokens.size()));
                waiting_.erase(waiting_.begin() + static_cast<std::ptrdiff_t>(j));
                continue;
            }
            break;
        }
        auto owned = std::move(waiting_[j]);
        waiting_.erase(waiting_.begin() + static_cast<std::ptrdiff_t>(j));
        running_.push_back(std::move(owned));
        pick(q, std::min(q.remaining(), budget));
    }
    if (sel.empty()) {
        // Every running sequence waits for blocks: free some by preempting the newest.
        if (running_.size() > 1)
            preempt(running_.size() - 1);
        else if (running_.size() == 1) {
            finish(*running_[0], "error",
                   "the KV cache is too small for this sequence; raise --kv-tokens");
            running_.clear();
        }
        return true;
    }

    std::vector<SeqStep> steps;
    steps.reserve(sel.size());
    for (size_t k = 0; k < sel.size(); ++k) {
        Sequence& q = *sel[k];
        plan_.push_back({q.request_id, q.index, counts[k], q.is_decode()});
        steps.push_back({&q.table,
                         std::span<const int32_t>(q.tokens.data() + q.computed(),
                                                  static_cast<size_t>(counts[k])),
                         false});
        m_.batched_tokens += static_cast<uint64_t>(counts[k]);
    }
    ++m_.steps;
    // Sampling on the backend (only ids and logprobs come back) when it prefers that and every
    // sequence's parameters allow it (rows of unfinished prompt chunks are sampled and dropped).
    std::vector<RowSampling> rows(sel.size());
    bool on_device = s_.device_sampling();
    for (size_t k = 0; k < sel.size() && on_device; ++k)
        on_device = sel[k]->sampler.row_sampling(static_cast<uint64_t>(sel[k]->generated), &rows[k]);
    std::vector<float> logits, lps;
    std::vector<int32_t> ids;
    try {
        if (on_device) ids = s_.forward_sample(steps, rows, &lps);
        else logits = s_.forward(steps);
    } catch (const std::exception& e) {
        for (Sequence* q : sel) finish(*q, "error", e.what());
        std::erase_if(running_, [](const auto& q) { return q->done; });
        return true;
    }
    const size_t V = static_cast<size_t>(s_.config().vocab_size);
    for (size_t k = 0; k < sel.size(); ++k) {
        Sequence& q = *sel[k];
        register_full_blocks(q);
        if (q.remaining() == 0) {
            q.prompt_done = true;
            if (on_device) {
                TokenInfo ti;
                ti.id = ids[k];
                if (q.req->logprobs) ti.logprob = lps[k];
                accept(q, std::move(ti));
            } else {
                sample(q, std::span<float>(logits.data() + k * V, V));
            }
        }
    }
    std::erase_if(running_, [](const auto& q) { return q->done; });
    return true;
}

const SchedulerMetrics& Scheduler::metrics() {
    const BlockPool& pool = s_.pool();
    m_.running = num_running();
    m_.waiting = num_waiting();
    m_.kv_blocks_total = pool.num_blocks();
    m_.kv_blocks_used = pool.num_used();
    m_.kv_blocks_free = pool.num_free();
    m_.kv_blocks_cached_free = pool.num_cached_free();
    return m_;
}

}  // namespace farsight

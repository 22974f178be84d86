#include "engine/engine.h"

namespace farsight {

std::optional<SeqEvent> RequestStream::next(std::chrono::milliseconds timeout) {
    std::unique_lock lk(mu_);
    if (!cv_.wait_for(lk, timeout, [&] { return !q_.empty() || finished_ >= n_; }))
        return std::nullopt;
    if (q_.empty()) return std::nullopt;
    SeqEvent ev = std::move(q_.front());
    q_.pop_front();
    return ev;
}

bool RequestStream::finished() const {
    std::lock_guard lk(mu_);
    return finished_ >= n_ && q_.empty();
}

void RequestStream::push(SeqEvent ev) {
    {
        std::lock_guard lk(mu_);
        if (ev.finished) ++finished_;
        q_.push_back(std::move(ev));
    }
    cv_.notify_all();
}

Engine::Engine(Session& session, const Tokenizer& tok, SchedulerConfig cfg, int64_t max_pending)
    : session_(session), sched_(session, tok, cfg), max_pending_(max_pending) {
    snapshot_ = sched_.metrics();
    thread_ = std::thread([this] { loop(); });
}

Engine::~Engine() {
    shutdown(false);
}

std::shared_ptr<RequestStream> Engine::submit(Request r) {
    const uint64_t id = next_id_.fetch_add(1);
    auto stream = std::make_shared<RequestStream>(id, std::max(1, r.n));
    std::weak_ptr<RequestStream> weak = stream;
    const int n = std::max(1, r.n);
    auto left = std::make_shared<int>(n);  // touched on the engine thread only
    r.on_event = [this, weak, left](const SeqEvent& ev) {
        if (ev.finished && --*left == 0) pending_.fetch_sub(1);
        if (auto s = weak.lock()) s->push(ev);
    };
    {
        std::lock_guard lk(mu_);
        if (stopping_) throw Overloaded("the server is shutting down");
        if (pending_.load() >= max_pending_)
            throw Overloaded(fmt::format(
                "the server is overloaded ({} requests in flight); retry later", pending_.load()));
        pending_.fetch_add(1);
        incoming_.emplace_back(id, std::move(r));
    }
    cv_.notify_all();
    return stream;
}

void Engine::cancel(uint64_t id) {
    {
        std::lock_guard lk(mu_);
        cancels_.push_back(id);
    }
    cv_.notify_all();
}

void Engine::shutdown(bool drain) {
    {
        std::lock_guard lk(mu_);
        stopping_ = true;
        if (!drain) abort_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
}

SchedulerMetrics Engine::metrics() const {
    std::lock_guard lk(mu_);
    return snapshot_;
}

int64_t Engine::pending() const {
    return pending_.load();
}

void Engine::loop() {
    for (;;) {
        std::vector<std::pair<uint64_t, Request>> in;
        std::vector<uint64_t> cancels;
        bool stopping = false, abort = false;
        {
            std::unique_lock lk(mu_);
            cv_.wait(lk, [&] {
                return stopping_ || !incoming_.empty() || !cancels_.empty() || !sched_.idle();
            });
            in.swap(incoming_);
            cancels.swap(cancels_);
            stopping = stopping_;
            abort = abort_;
        }
        for (auto& [id, r] : in) sched_.add(id, std::move(r));
        for (uint64_t id : cancels) sched_.cancel(id);
        if (stopping && abort) {
            sched_.cancel_all();
        }
        if (stopping && sched_.idle()) {
            std::lock_guard lk(mu_);
            snapshot_ = sched_.metrics();
            break;
        }
        try {
            sched_.step();
        } catch (const std::exception& e) {
            // A scheduler bug must not take the server down silently; fail what is in flight.
            fmt::print(stderr, "engine step failed: {}\n", e.what());
            sched_.cancel_all();
        }
        std::lock_guard lk(mu_);
        snapshot_ = sched_.metrics();
    }
}

}  // namespace farsight

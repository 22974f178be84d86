#pragma once
// The serving engine: a Scheduler (continuous batching) running on its own thread. Other
// threads (the HTTP server) submit requests and read their events through a RequestStream, a
// thread-safe channel. The model runner stays single-threaded.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "core/error.h"
#include "engine/scheduler.h"

namespace farsight {

// Thrown by Engine::submit when the queue is full or the engine is shutting down.
class Overloaded : public Error {
  public:
    using Error::Error;
};

// The events of one request, in order, as the engine produces them.
class RequestStream {
  public:
    RequestStream(uint64_t id, int n) : id_(id), n_(n) {}
    uint64_t id() const { return id_; }
    int n() const { return n_; }
    // The next event, waiting up to `timeout`; nullopt on timeout or when all choices are done
    // and every event was read (check finished()).
    std::optional<SeqEvent> next(std::chrono::milliseconds timeout);
    // Every choice has finished and every event was read.
    bool finished() const;
    void push(SeqEvent ev);  // engine side

  private:
    uint64_t id_;
    int n_;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::deque<SeqEvent> q_;
    int finished_ = 0;
};

class Engine {
  public:
    // max_pending: requests queued or running at once before submit() throws Overloaded.
    Engine(Session& session, const Tokenizer& tok, SchedulerConfig cfg = {},
           int64_t max_pending = 1024);
    ~Engine();  // aborts what is left and joins the thread
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;

    // Thread-safe. r.on_event is replaced by the stream.
    std::shared_ptr<RequestStream> submit(Request r);
    // Thread-safe: ends the request (its blocks are freed before the next step).
    void cancel(uint64_t id);
    // Stops accepting requests; drain = finish in-flight ones first, else abort them. Blocks
    // until the engine thread has ended.
    void shutdown(bool drain = true);
    SchedulerMetrics metrics() const;  // a snapshot, refreshed after every step
    int64_t pending() const;           // requests submitted and not yet finished
    const Session& session() const { return session_; }

  private:
    void loop();
    Session& session_;
    Scheduler sched_;
    int64_t max_pending_;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::vector<std::pair<uint64_t, Request>> incoming_;
    std::vector<uint64_t> cancels_;
    bool stopping_ = false, abort_ = false;
    std::atomic<uint64_t> next_id_{1};
    std::atomic<int64_t> pending_{0};
    SchedulerMetrics snapshot_;
    std::thread thread_;
};

}  // namespace farsight

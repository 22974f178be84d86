#pragma once
// A small persistent thread pool for data-parallel loops (the CPU backend's kernels).
// parallel_for splits [0, n) into contiguous chunks, one per worker, and blocks until done.
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace farsight {

class ThreadPool {
public:
    explicit ThreadPool(int n_threads = 0);  // 0 = hardware concurrency
    ~ThreadPool();
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    int size() const { return n_threads_; }
    // fn(begin, end, thread_index): called once per thread with its chunk (possibly empty).
    void parallel_for(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn);
    // fn(thread_index) on every thread.
    void run_on_all(const std::function<void(int)>& fn);

    static ThreadPool& global();  // sized from FARSIGHT_THREADS or hardware concurrency

private:
    void worker(int idx);
    int n_threads_;
    std::vector<std::thread> threads_;
    std::mutex mu_;
    std::condition_variable cv_start_;
    std::condition_variable cv_done_;
    // Dispatch: job_ is published by bumping generation_ (under mu_, so sleepers cannot miss it).
    // Workers and the caller spin briefly before sleeping: a decode step issues ~150 parallel
    // loops, and a futex wake-up per loop would cost more than the loop itself.
    const std::function<void(int)>* job_ = nullptr;
    std::atomic<uint64_t> generation_{0};
    std::atomic<int> pending_{0};
    bool stop_ = false;
};

}  // namespace farsight

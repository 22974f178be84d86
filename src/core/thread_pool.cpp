#include "core/thread_pool.h"

#include <cstdlib>
#include <exception>

namespace farsight {

ThreadPool::ThreadPool(int n_threads) {
    if (n_threads <= 0) n_threads = static_cast<int>(std::thread::hardware_concurrency());
    if (n_threads <= 0) n_threads = 1;
    n_threads_ = n_threads;
    for (int i = 1; i < n_threads_; ++i) threads_.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
    {
        std::lock_guard<std::mutex> lk(mu_);
        stop_ = true;
    }
    cv_start_.notify_all();
    for (auto& t : threads_) t.join();
}

namespace {
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}
constexpr int kSpins = 20000;  // ~ tens of microseconds
}  // namespace

void ThreadPool::worker(int idx) {
    uint64_t seen = 0;
    for (;;) {
        bool ready = false;
        for (int i = 0; i < kSpins && !ready; ++i) {
            ready = generation_.load(std::memory_order_acquire) != seen;
            if (!ready) cpu_relax();
        }
        const std::function<void(int)>* job;
        {
            std::unique_lock<std::mutex> lk(mu_);
            if (!ready)
                cv_start_.wait(lk, [&] { return stop_ || generation_.load(std::memory_order_acquire) != seen; });
            if (stop_) return;
            seen = generation_.load(std::memory_order_acquire);
            job = job_;
        }
        (*job)(idx);
        if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
            std::lock_guard<std::mutex> lk(mu_);
            cv_done_.notify_one();
        }
    }
}

void ThreadPool::run_on_all(const std::function<void(int)>& fn) {
    if (n_threads_ == 1) {
        fn(0);
        return;
    }
    std::exception_ptr err;
    std::mutex err_mu;
    std::function<void(int)> wrapped = [&](int i) {
        try {
            fn(i);
        } catch (...) {
            std::lock_guard<std::mutex> lk(err_mu);
            if (!err) err = std::current_exception();
        }
    };
    {
        std::lock_guard<std::mutex> lk(mu_);
        job_ = &wrapped;
        pending_.store(n_threads_ - 1, std::memory_order_release);
        generation_.fetch_add(1, std::memory_order_acq_rel);
    }
    cv_start_.notify_all();
    wrapped(0);
    bool done = false;
    for (int i = 0; i < kSpins && !done; ++i) {
        done = pending_.load(std::memory_order_acquire) == 0;
        if (!done) cpu_relax();
    }
    if (!done) {
        std::unique_lock<std::mutex> lk(mu_);
        cv_done_.wait(lk, [&] { return pending_.load(std::memory_order_acquire) == 0; });
    }
    {
        std::lock_guard<std::mutex> lk(mu_);
        job_ = nullptr;
    }
    if (err) std::rethrow_exception(err);
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn) {
    if (n <= 0) return;
    const int nt = n_threads_;
    if (nt == 1 || n == 1) {
        fn(0, n, 0);
        return;
    }
    run_on_all([&](int t) {
        const int64_t begin = n * t / nt;
        const int64_t end = n * (t + 1) / nt;
        if (begin < end) fn(begin, end, t);
    });
}

ThreadPool& ThreadPool::global() {
    static ThreadPool pool([] {
        const char* e = std::getenv("FARSIGHT_THREADS");
        return e ? std::atoi(e) : 0;
    }());
    return pool;
}

}  // namespace farsight

// The threads the kernels and layers split their work over, and how an engine plugs in its own.
//
// Every parallel step of the library is a parallel-for over independent work units (parallel.hpp):
// an Executor runs one. OpenMP is the default when the consumer compiles with it; without it, a
// small pool of std::threads (ThreadPool) is, so a build without OpenMP is never silently serial.
// An engine with a pool of its own (ggml's, TBB, its own std::threads) implements Executor over
// it and passes it in KernelOptions::executor or ForwardOptions::executor, so that attention
// runs on the engine's threads instead of oversubscribing the cores with a second team.
//
// Executor and ThreadPool are outside the ISA namespace: they hold no SIMD code, so one engine
// pool serves every ISA's kernels in a program (tests/two_isa).
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace multihead {

// A reference to body(worker, unit), without allocating: what an Executor runs.
class UnitWork {
 public:
  template <class F>
  explicit UnitWork(F& body)
      : body_(&body), call_([](void* b, int worker, std::int64_t unit) {
          (*static_cast<F*>(b))(worker, unit);
        }) {}
  void operator()(int worker, std::int64_t unit) const { call_(body_, worker, unit); }

 private:
  void* body_;
  void (*call_)(void*, int, std::int64_t);
};

class Executor {
 public:
  virtual ~Executor() = default;

  // How many units it can run at once: a call's thread count defaults to it (threads = 0) and
  // is capped by it (or by the processors, if more).
  virtual int workers() const = 0;

  // Calls work(worker, unit) exactly once for every unit in [0, units), on at most `workers`
  // threads at once (1 ≤ workers ≤ workers()), each call with a worker index in [0, workers)
  // that no other call running at the same time has, and returns when every call has
  // returned. Units are independent: any order, any thread, the caller's included. work never
  // throws (the library catches inside it).
  virtual void run(std::int64_t units, int workers, UnitWork work) = 0;
};

// A fixed team of std::threads, the calling thread one of them; units handed out one at a time
// as threads become free. A run that starts while another is running (from another thread, or
// from inside a unit) runs on its caller alone rather than wait.
class ThreadPool final : public Executor {
 public:
  // threads: the team, the caller included; 0 for every processor.
  explicit ThreadPool(int threads = 0)
      : size_(threads > 0 ? threads
                          : std::max(1, static_cast<int>(std::thread::hardware_concurrency()))) {
    for (int i = 1; i < size_; ++i) team_.emplace_back([this, i] { serve(i); });
  }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  ~ThreadPool() override {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (std::thread& t : team_) t.join();
  }

  int workers() const override { return size_; }

  void run(std::int64_t units, int workers, UnitWork work) override {
    std::unique_lock<std::mutex> busy(running_, std::try_to_lock);
    if (workers <= 1 || units <= 1 || !busy.owns_lock()) {
      for (std::int64_t unit = 0; unit < units; ++unit) work(0, unit);
      return;
    }
    const int helpers = static_cast<int>(std::min<std::int64_t>({workers, size_, units})) - 1;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      work_ = &work;
      units_ = units;
      next_.store(0);
      helpers_wanted_ = helpers;
      helpers_done_ = 0;
      ++generation_;
    }
    wake_.notify_all();
    drain(0);
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return helpers_done_ == helpers; });
    work_ = nullptr;
  }

 private:
  void drain(int worker) {
    for (std::int64_t unit = next_++; unit < units_; unit = next_++) (*work_)(worker, unit);
  }

  void serve(int index) {
    std::uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
      if (stopping_) return;
      seen = generation_;
      if (index > helpers_wanted_) continue;  // this run wants fewer threads
      lock.unlock();
      drain(index);
      lock.lock();
      if (++helpers_done_ == helpers_wanted_) done_.notify_one();
    }
  }

  const int size_;
  std::vector<std::thread> team_;
  std::mutex running_;  // one run at a time
  std::mutex mutex_;    // guards what follows but next_
  std::condition_variable wake_, done_;
  bool stopping_ = false;
  std::uint64_t generation_ = 0;
  UnitWork* work_ = nullptr;
  std::int64_t units_ = 0;
  std::atomic<std::int64_t> next_{0};
  int helpers_wanted_ = 0, helpers_done_ = 0;
};

}  // namespace multihead

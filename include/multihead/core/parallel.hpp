// Splitting independent work over threads: every parallel step is a parallel-for over work
// units run by an Executor (executor.hpp): OpenMP's threads when the consumer compiles with it,
// a ThreadPool of std::threads otherwise, or the engine's own, passed in a call's options.
// Kernels parallelise over independent work units (batch × heads, query blocks), never inside
// one small product, which is slower than one thread on tiles of attention's size.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <thread>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "executor.hpp"
#include "isa.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {

#ifdef _OPENMP
// OpenMP's threads: the default executor of a consumer compiled with OpenMP. Even one thread
// runs inside a parallel region, so that Eigen does not start threads of its own under it.
class OpenMpExecutor final : public Executor {
 public:
  int workers() const override { return omp_get_max_threads(); }
  void run(std::int64_t units, int workers, UnitWork work) override {
#pragma omp parallel num_threads(workers)
    {
      const int worker = omp_get_thread_num();
#pragma omp for schedule(dynamic, 1)
      for (std::int64_t unit = 0; unit < units; ++unit) work(worker, unit);
    }
  }
};
#endif

// The executor of calls that name none: OpenMP's threads, or without OpenMP one ThreadPool of
// every processor for the program, started at its first parallel call.
inline Executor& default_executor() {
#ifdef _OPENMP
  static OpenMpExecutor openmp;
  return openmp;
#else
  static ThreadPool pool;
  return pool;
#endif
}

namespace detail {

// The executor of the call running on this thread: set by the public entry points from their
// options (ExecutorScope) for the call's duration, so that the kernels below them, which pass
// thread counts, reach it without naming it.
inline Executor*& current_executor() {
  thread_local Executor* executor = nullptr;
  return executor;
}

inline Executor& executor() {
  Executor* e = current_executor();
  return e != nullptr ? *e : default_executor();
}

// Makes `executor` (null: the default) the current one until the scope ends; scopes nest.
class ExecutorScope {
 public:
  explicit ExecutorScope(Executor* executor) : saved_(current_executor()) {
    if (executor != nullptr) current_executor() = executor;
  }
  ~ExecutorScope() { current_executor() = saved_; }
  ExecutorScope(const ExecutorScope&) = delete;
  ExecutorScope& operator=(const ExecutorScope&) = delete;

 private:
  Executor* saved_;
};

}  // namespace detail

// The thread count a kernel runs with: `requested`, or all of the executor's workers for 0;
// never more than its workers or the processors, whichever is more: more threads than that
// only wait, and a million asked-for threads overflowed the OpenMP runtime's stack. Each kernel
// further caps it by its units of work. `executor`: the call's, or null for the current one.
inline int resolve_threads(int requested, Executor* executor = nullptr) {
  const Executor& e = executor != nullptr ? *executor : detail::executor();
  const int workers = std::max(1, e.workers());
#ifdef _OPENMP
  const int processors = omp_get_num_procs();
#else
  const int processors = static_cast<int>(std::thread::hardware_concurrency());
#endif
  return requested > 0 ? std::min(requested, std::max(workers, processors)) : workers;
}

namespace detail {

// An exception must not leave an executor's thread (an OpenMP region terminates the process),
// yet a body may throw: a custom modifier's hook (attention/modifiers.hpp), an allocation. The
// first one thrown is kept, the units not yet started are skipped, and it is rethrown on the
// calling thread once the run has ended. The call's outputs are then partly written.
class ParallelErrors {
 public:
  template <class Work>
  void run(Work&& work) noexcept {
    if (failed_.load(std::memory_order_relaxed)) return;
    try {
      work();
    } catch (...) {
      if (!failed_.exchange(true)) error_ = std::current_exception();
    }
  }
  void rethrow() const {
    if (error_) std::rethrow_exception(error_);
  }

 private:
  std::atomic<bool> failed_{false};
  std::exception_ptr error_;  // written once, by the thread that set failed_
};

// Runs body(worker, unit) for units [0, units) on the current executor with `threads` workers.
template <class Body>
void run_units(std::int64_t units, int threads, Body&& body) {
  if (units <= 0) return;
  ParallelErrors errors;
  auto guarded = [&](int worker, std::int64_t unit) {
#ifdef _OPENMP
    // A unit's Eigen products run on the unit's thread alone. Inside an OpenMP region Eigen sees
    // that; on another executor's thread it would start an OpenMP team of its own for each
    // product (oversubscribing the cores, and splitting sums differently): so that thread's
    // OpenMP thread count is 1 while the unit runs (a per-thread setting).
    const int eigen_threads = omp_in_parallel() ? 1 : omp_get_max_threads();
    if (eigen_threads != 1) omp_set_num_threads(1);
#endif
    errors.run([&] { body(worker, unit); });
#ifdef _OPENMP
    if (eigen_threads != 1) omp_set_num_threads(eigen_threads);
#endif
  };
  executor().run(units, std::max(1, threads), UnitWork(guarded));
  errors.rethrow();
}

}  // namespace detail

// Runs body(thread, begin, end) for `threads` contiguous chunks of [0, units), chunk `thread`
// being [units·thread/threads, units·(thread + 1)/threads): the split depends only on `units`
// and `threads`, so results are reproducible for a given thread count, and `thread` (distinct
// per chunk) may index per-chunk buffers. An exception from `body` is rethrown here, after the
// run (detail::ParallelErrors).
template <class Body>
void parallel_chunks(std::int64_t units, int threads, Body&& body) {
  const std::int64_t chunks = std::max<std::int64_t>(1, std::min<std::int64_t>(threads, units));
  detail::run_units(chunks, int(chunks), [&](int, std::int64_t chunk) {
    const std::int64_t begin = units * chunk / chunks, end = units * (chunk + 1) / chunks;
    if (begin < end) body(int(chunk), begin, end);
  });
}

// Runs body(thread, unit) for every unit in [0, units) on `threads` threads, handing units out
// one at a time as threads become free: for units of uneven cost. Which thread runs a unit
// varies, so a unit's result must not depend on it. An exception from `body` is rethrown here,
// after the run, the units not yet started skipped.
template <class Body>
void parallel_dynamic(std::int64_t units, int threads, Body&& body) {
  detail::run_units(units, threads, body);
}

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead

// Splitting independent work over threads: OpenMP when the consumer compiles with it, serial
// otherwise. Kernels parallelise over independent work units (batch × heads, query blocks), never
// inside one small product, which is slower than one thread on tiles of attention's size.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "isa.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {

// The thread count a kernel runs with: `requested`, or all OpenMP threads for 0; never more than
// the processors, or OMP_NUM_THREADS where the user set it higher: more threads than that only
// wait, and a million asked-for threads overflowed the OpenMP runtime's stack. Each kernel
// further caps it by its units of work.
inline int resolve_threads(int requested) {
#ifdef _OPENMP
  const int available = std::max(omp_get_max_threads(), omp_get_num_procs());
  return requested > 0 ? std::min(requested, available) : omp_get_max_threads();
#else
  (void)requested;
  return 1;
#endif
}

namespace detail {

// An exception must not leave an OpenMP region (the runtime terminates the process), yet a body
// may throw: a custom modifier's hook (attention/modifiers.hpp), an allocation. The first one
// thrown is kept, the units not yet started are skipped, and it is rethrown on the calling
// thread once the region has ended. The call's outputs are then partly written.
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

}  // namespace detail

// Runs body(thread, begin, end) on `threads` threads, each given one contiguous chunk of
// [0, units). The split depends only on `units` and `threads`, so results are reproducible for
// a given thread count. Even one thread runs inside a parallel region, so that Eigen does not
// start threads of its own under it. An exception from `body` is rethrown here, after the
// region (detail::ParallelErrors).
template <class Body>
void parallel_chunks(std::int64_t units, int threads, Body&& body) {
  detail::ParallelErrors errors;
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
  {
    const int count = omp_get_num_threads();
    const int thread = omp_get_thread_num();
    const std::int64_t begin = units * thread / count;
    const std::int64_t end = units * (thread + 1) / count;
    if (begin < end) errors.run([&] { body(thread, begin, end); });
  }
#else
  (void)threads;
  if (units > 0) errors.run([&] { body(0, std::int64_t{0}, units); });
#endif
  errors.rethrow();
}

// Runs body(thread, unit) for every unit in [0, units) on `threads` threads, handing units out
// one at a time as threads become free: for units of uneven cost. Which thread runs a unit
// varies, so a unit's result must not depend on it. An exception from `body` is rethrown here,
// after the region, the units not yet started skipped.
template <class Body>
void parallel_dynamic(std::int64_t units, int threads, Body&& body) {
  detail::ParallelErrors errors;
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
  {
    const int thread = omp_get_thread_num();
#pragma omp for schedule(dynamic, 1)
    for (std::int64_t unit = 0; unit < units; ++unit) errors.run([&] { body(thread, unit); });
  }
#else
  (void)threads;
  for (std::int64_t unit = 0; unit < units; ++unit) errors.run([&] { body(0, unit); });
#endif
  errors.rethrow();
}

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead

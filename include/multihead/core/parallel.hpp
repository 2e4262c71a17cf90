// Splitting independent work over threads: OpenMP when the consumer compiles with it, serial
// otherwise. Kernels parallelise over independent work units (batch × heads, query blocks), never
// inside one small product, which is slower than one thread on tiles of attention's size.
#pragma once

#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "isa.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {

// The thread count a kernel runs with: `requested`, or all OpenMP threads for 0.
inline int resolve_threads(int requested) {
#ifdef _OPENMP
  return requested > 0 ? requested : omp_get_max_threads();
#else
  (void)requested;
  return 1;
#endif
}

// Runs body(thread, begin, end) on `threads` threads, each given one contiguous chunk of
// [0, units). The split depends only on `units` and `threads`, so results are reproducible for
// a given thread count. Even one thread runs inside a parallel region, so that Eigen does not
// start threads of its own under it. `body` must not throw.
template <class Body>
void parallel_chunks(std::int64_t units, int threads, Body&& body) {
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
  {
    const int count = omp_get_num_threads();
    const int thread = omp_get_thread_num();
    const std::int64_t begin = units * thread / count;
    const std::int64_t end = units * (thread + 1) / count;
    if (begin < end) body(thread, begin, end);
  }
#else
  (void)threads;
  if (units > 0) body(0, std::int64_t{0}, units);
#endif
}

// Runs body(thread, unit) for every unit in [0, units) on `threads` threads, handing units out
// one at a time as threads become free: for units of uneven cost. Which thread runs a unit
// varies, so a unit's result must not depend on it. `body` must not throw.
template <class Body>
void parallel_dynamic(std::int64_t units, int threads, Body&& body) {
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
  {
    const int thread = omp_get_thread_num();
#pragma omp for schedule(dynamic, 1)
    for (std::int64_t unit = 0; unit < units; ++unit) body(thread, unit);
  }
#else
  (void)threads;
  for (std::int64_t unit = 0; unit < units; ++unit) body(0, unit);
#endif
}

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead

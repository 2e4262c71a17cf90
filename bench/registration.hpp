// What every benchmark of multihead_bench shares: the thread counts, the name suffix and the
// timing settings.
#pragma once

#include <benchmark/benchmark.h>

#include <string>
#include <vector>

namespace bench {

// Each benchmark runs on one core and on two, the cores of the machine the figures are taken on
// (add more counts here for bigger machines). Threads are OpenMP threads inside the measured
// code, not Google Benchmark's ->Threads(), which would run several copies of the benchmark.
inline std::vector<int> thread_counts() {
#ifdef _OPENMP
  return {1, 2};
#else
  return {1};  // without OpenMP every "parallel" region runs on the calling thread
#endif
}

// "<path>/threads:<n>", e.g. "reference/P1/threads:2".
inline std::string with_threads(const std::string& path, int threads) {
  return path + "/threads:" + std::to_string(threads);
}

// Wall-clock time, since the work is spread over threads; rate counters are then divided by the
// real time too (checked against manual timing with Google Benchmark 1.7.1). Google Benchmark
// appends "/real_time" to the reported names. MeasureProcessCPUTime() would make the CPU column
// show how many cores were busy, but would append "/process_time" as well.
inline benchmark::internal::Benchmark* configure(benchmark::internal::Benchmark* b) {
  return b->UseRealTime()->Unit(benchmark::kMillisecond);
}

}  // namespace bench

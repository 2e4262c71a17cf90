// What every kernel benchmark of multihead_bench reports: the timed loop, and its work held
// against the machine's peaks.
#pragma once

#include <benchmark/benchmark.h>

#include <chrono>

#include "peak.hpp"

namespace bench {

// The work of one kernel call.
struct Work {
  double flops;  // useful floating-point operations
  double bytes;  // compulsory memory traffic
  bool bf16_products = false;  // flops on the bf16 dot product, where the CPU has it
};

// Runs `call` once per iteration of `state` and returns the loop's wall-clock seconds, which
// report_roofline() divides by. ClobberMemory keeps the compiler from dropping a call whose
// outputs are never read.
template <class Call>
double timed_loop(benchmark::State& state, Call&& call) {
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    call();
    benchmark::ClobberMemory();
  }
  const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
  return elapsed.count();
}

// Sets the counters
//   flops     the useful work per second
//   bytes     the compulsory traffic per second
//   roofline  max(flops / peak flops, bytes / peak bandwidth) / time: the fraction of what the
//             machine could do on that many threads, from peaks measured in the same process
//             (peak flops: the bf16 dot product's for work.bf16_products, where measured)
// and a label naming the roof that binds (fma or read) and its value. `seconds` is the time
// timed_loop() returned for state.iterations() calls.
void report_roofline(benchmark::State& state, const Work& work, const MachinePeak& peak,
                     double seconds);

}  // namespace bench

// The attention benchmark body: the timed loop and its counters.
#include "attention_bench.hpp"

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>

#include "peak.hpp"
#include "registration.hpp"

namespace bench {
namespace {

// "roof: fma 451 GFLOP/s" or "roof: read 81.2 GB/s": the roof that binds this shape at this
// thread count.
std::string roof_label(bool compute_bound, const MachinePeak& peak) {
  char label[64];
  if (compute_bound)
    std::snprintf(label, sizeof label, "roof: fma %.0f GFLOP/s", peak.flops_per_second * 1e-9);
  else
    std::snprintf(label, sizeof label, "roof: read %.1f GB/s", peak.bytes_per_second * 1e-9);
  return label;
}

void run_attention(benchmark::State& state, const AttentionKernel& kernel, const Shape& shape,
                   int threads) {
  // Both untimed: the peaks are measured on the first benchmark at this thread count and
  // cached; the buffers are filled when the shape changes.
  const MachinePeak& peak = machine_peak(threads);
  const AttentionViews views = AttentionBuffers::of(shape).views();
  multihead::KernelOptions options;
  options.causal = shape.causal;
  options.threads = threads;

  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    kernel(views, options);
    benchmark::ClobberMemory();
  }
  const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;

  // Rates per second of real time (see configure()).
  using benchmark::Counter;
  state.counters["flops"] = Counter(shape.flops(), Counter::kIsIterationInvariantRate);
  state.counters["bytes"] = Counter(shape.bytes(), Counter::kIsIterationInvariantRate);

  // The time the machine would need at its peaks, over the time taken. Computed here rather
  // than as a rate counter, which the console would print as a rate ("0.3/s"); the loop's own
  // clock differs from Google Benchmark's by the loop overhead only, microseconds in seconds.
  const double flops_seconds = shape.flops() / peak.flops_per_second;
  const double bytes_seconds = shape.bytes() / peak.bytes_per_second;
  const double roof_seconds = std::max(flops_seconds, bytes_seconds);
  state.counters["roofline"] =
      roof_seconds * static_cast<double>(state.iterations()) / elapsed.count();
  state.SetLabel(roof_label(flops_seconds >= bytes_seconds, peak));
}

}  // namespace

void register_attention(const std::string& path, AttentionKernel kernel,
                        const std::vector<Shape>& shapes) {
  for (const Shape& shape : shapes)
    for (int threads : thread_counts()) {
      const std::string name = with_threads(path + "/" + shape.name, threads);
      configure(benchmark::RegisterBenchmark(name.c_str(), run_attention, kernel, shape, threads));
    }
}

}  // namespace bench

// The counters of a kernel benchmark (see roofline.hpp).
#include "roofline.hpp"

#include <algorithm>
#include <cstdio>
#include <string>

namespace bench {
namespace {

// "roof: fma 451 GFLOP/s" or "roof: read 81.2 GB/s": the roof that binds this work at this
// thread count.
std::string roof_label(bool compute_bound, bool bf16, double flops_per_second,
                       const MachinePeak& peak) {
  char label[64];
  if (compute_bound)
    std::snprintf(label, sizeof label, "roof: %s %.0f GFLOP/s", bf16 ? "bf16-dot" : "fma",
                  flops_per_second * 1e-9);
  else
    std::snprintf(label, sizeof label, "roof: read %.1f GB/s", peak.bytes_per_second * 1e-9);
  return label;
}

}  // namespace

void report_roofline(benchmark::State& state, const Work& work, const MachinePeak& peak,
                     double seconds) {
  // Rates per second of real time (see configure()).
  using benchmark::Counter;
  state.counters["flops"] = Counter(work.flops, Counter::kIsIterationInvariantRate);
  state.counters["bytes"] = Counter(work.bytes, Counter::kIsIterationInvariantRate);

  // The time the machine would need at its peaks, over the time taken. Computed here rather
  // than as a rate counter, which the console would print as a rate ("0.3/s"); the loop's own
  // clock differs from Google Benchmark's by the loop overhead only, microseconds in seconds.
  const bool bf16 = work.bf16_products && peak.bf16_flops_per_second > 0;
  const double flops_per_second = bf16 ? peak.bf16_flops_per_second : peak.flops_per_second;
  const double flops_seconds = work.flops / flops_per_second;
  const double bytes_seconds = work.bytes / peak.bytes_per_second;
  const double roof_seconds = std::max(flops_seconds, bytes_seconds);
  state.counters["roofline"] = roof_seconds * static_cast<double>(state.iterations()) / seconds;
  state.SetLabel(roof_label(flops_seconds >= bytes_seconds, bf16, flops_per_second, peak));
}

}  // namespace bench

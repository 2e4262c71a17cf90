// Registers the peak benchmark family (see peak_bench.cpp).
#pragma once

namespace bench {

// peak/fma/threads:<n> and peak/read/threads:<n> for every n of thread_counts().
void register_peak_benchmarks();

}  // namespace bench

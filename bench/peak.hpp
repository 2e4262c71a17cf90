// The machine's own peaks, measured in the benchmark binary: fp32 FMA throughput and memory read
// bandwidth, on a given number of OpenMP threads.
//
// Both use the widest vector instructions the CPU runs, chosen at run time, whatever ISA the
// binary was compiled for: the peak is the machine's, so a generic build of a kernel shows how
// far it is from what the hardware could do.
#pragma once

#include <cstdint>

namespace bench {

// The instruction set the peak kernels run with: "avx512", "avx2" or "scalar".
const char* peak_isa();

// One burst of independent FMA chains on each of `threads` OpenMP threads (about 4 ms);
// returns the floating-point operations done, 2 per FMA lane.
double run_fma(int threads);

// The same burst of vdpbf16ps (AVX-512 BF16: 32 bf16 multiply-adds into 16 fp32 lanes per
// instruction), the roof of bf16 products; 0 where the CPU lacks the instruction.
bool has_bf16_dot();
double run_bf16_dot(int threads);

// The read buffer: far larger than any L3 cache, so every pass streams from memory.
constexpr std::int64_t kReadBufferBytes = std::int64_t{512} << 20;

// One pass of `threads` OpenMP threads summing the read buffer; returns the bytes read. The
// buffer is allocated and first touched on the first call only: a first touch costs far more
// than a read, and would swamp the bandwidth if it were paid per pass.
double run_read(int threads);

// The same pass over the buffer cut into chunks of chunk_bytes (whole 512-byte blocks that
// divide it), read in a fixed random order: what a paged KV cache's scattered blocks cost the
// memory system (its prefetchers restart at every chunk), beside run_read's one stream.
double run_read_scattered(int threads, std::int64_t chunk_bytes);

struct MachinePeak {
  double flops_per_second;
  double bytes_per_second;
  double bf16_flops_per_second;  // the bf16 dot product's; 0 without AVX-512 BF16
};

// The peaks at `threads` threads: measured on the first request (best of a few short runs,
// about 0.15 s at one thread) and cached for the rest of the process, so that every benchmark
// at that thread count is divided by the same numbers.
const MachinePeak& machine_peak(int threads);

// machine_peak(threads) with its read roof that of chunks of chunk_bytes read in random order
// (run_read_scattered, measured and cached the same way): the roof of a benchmark whose bytes
// come from a paged pool's scattered blocks.
const MachinePeak& machine_peak_scattered(int threads, std::int64_t chunk_bytes);

}  // namespace bench

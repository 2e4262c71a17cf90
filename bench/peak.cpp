// Peak FMA throughput and read bandwidth: the kernels, their run-time dispatch and the cache.
#include "peak.hpp"

#include <multihead/core/aligned_buffer.hpp>

#include <algorithm>
#include <chrono>
#include <map>
#include <numeric>
#include <random>
#include <stdexcept>
#include <utility>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define BENCH_X86 1
#endif

namespace bench {
namespace {

// Independent accumulators per thread. A core keeps latency × pipes FMAs in flight: 4 cycles ×
// 2 pipes = 8 on Zen 4/5 and recent Intel cores; 12 leaves a margin and still fits, with the
// two constants, in the 16 registers of AVX2.
constexpr int kFmaChains = 12;
// Rounds of kFmaChains FMAs per burst: about 3.6 ms at 3.5 GHz. Far above the cost of starting
// an OpenMP region, and long enough that a thread preempted by another process delays the
// burst's closing barrier by a fraction of it, not many times over (bursts of 0.45 ms ran
// several times slower than these at 2 threads on a shared machine).
constexpr std::int64_t kFmaRounds = std::int64_t{1} << 21;
// acc = acc·a + b converges to b / (1 - a) = 1, so the values stay normal however long it runs.
constexpr float kFmaA = 0.999f;
constexpr float kFmaB = 0.001f;

// The read kernels sum blocks of this many floats (512 bytes, 8 cache lines) per step.
constexpr std::int64_t kReadBlock = 128;
constexpr std::int64_t kReadFloats = kReadBufferBytes / static_cast<std::int64_t>(sizeof(float));
static_assert(kReadFloats % kReadBlock == 0, "the read buffer must be whole blocks");

// Where results go so that the compiler cannot drop the work that produced them.
volatile float g_sink = 0.0f;

#ifdef BENCH_X86
__attribute__((target("avx512f,fma"))) float fma_avx512(std::int64_t rounds) {
  static_assert(kFmaChains == 12, "update the unroll pragma");
  const __m512 a = _mm512_set1_ps(kFmaA), b = _mm512_set1_ps(kFmaB);
  __m512 acc[kFmaChains];
  for (int i = 0; i < kFmaChains; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i));
  for (std::int64_t r = 0; r < rounds; ++r) {
#pragma GCC unroll 12
    for (int i = 0; i < kFmaChains; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  }
  for (int i = 1; i < kFmaChains; ++i) acc[0] = _mm512_add_ps(acc[0], acc[i]);
  return _mm512_reduce_add_ps(acc[0]);
}

// vdpbf16ps: each lane adds the products of a pair of bf16 values, 32 multiply-adds per
// instruction. acc grows by 2·a·b a round, 2^21 rounds from 0: about 4, so it stays normal.
__attribute__((target("avx512f,avx512bf16"))) float bf16_dot_avx512(std::int64_t rounds) {
  const __m512bh a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-6f), _mm512_set1_ps(1e-6f));
  const __m512bh b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1.0f), _mm512_set1_ps(1.0f));
  __m512 acc[kFmaChains];
  for (int i = 0; i < kFmaChains; ++i) acc[i] = _mm512_setzero_ps();
  for (std::int64_t r = 0; r < rounds; ++r) {
#pragma GCC unroll 12
    for (int i = 0; i < kFmaChains; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
  }
  for (int i = 1; i < kFmaChains; ++i) acc[0] = _mm512_add_ps(acc[0], acc[i]);
  return _mm512_reduce_add_ps(acc[0]);
}

__attribute__((target("avx2,fma"))) float fma_avx2(std::int64_t rounds) {
  const __m256 a = _mm256_set1_ps(kFmaA), b = _mm256_set1_ps(kFmaB);
  __m256 acc[kFmaChains];
  for (int i = 0; i < kFmaChains; ++i) acc[i] = _mm256_set1_ps(static_cast<float>(i));
  for (std::int64_t r = 0; r < rounds; ++r) {
#pragma GCC unroll 12
    for (int i = 0; i < kFmaChains; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  }
  for (int i = 1; i < kFmaChains; ++i) acc[0] = _mm256_add_ps(acc[0], acc[i]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, acc[0]);
  float sum = 0.0f;
  for (float lane : lanes) sum += lane;
  return sum;
}

// Eight accumulators, one per cache line of a block: memory, not the adds, sets the pace.
__attribute__((target("avx512f"))) float sum_avx512(const float* data, std::int64_t blocks) {
  __m512 acc[8];
  for (__m512& a : acc) a = _mm512_setzero_ps();
  for (std::int64_t block = 0; block < blocks; ++block) {
    const float* p = data + block * kReadBlock;
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) acc[i] = _mm512_add_ps(acc[i], _mm512_load_ps(p + 16 * i));
  }
  for (int i = 1; i < 8; ++i) acc[0] = _mm512_add_ps(acc[0], acc[i]);
  return _mm512_reduce_add_ps(acc[0]);
}

__attribute__((target("avx2"))) float sum_avx2(const float* data, std::int64_t blocks) {
  __m256 acc[8];
  for (__m256& a : acc) a = _mm256_setzero_ps();
  for (std::int64_t block = 0; block < blocks; ++block) {
    const float* p = data + block * kReadBlock;
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i)
      acc[i % 8] = _mm256_add_ps(acc[i % 8], _mm256_load_ps(p + 8 * i));
  }
  for (int i = 1; i < 8; ++i) acc[0] = _mm256_add_ps(acc[0], acc[i]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, acc[0]);
  float sum = 0.0f;
  for (float lane : lanes) sum += lane;
  return sum;
}
#endif  // BENCH_X86

// Fallbacks for CPUs without AVX2 and FMA (and non-x86 machines): what the compiler makes of
// plain loops with the same independent chains.
float fma_scalar(std::int64_t rounds) {
  float acc[kFmaChains];
  for (int i = 0; i < kFmaChains; ++i) acc[i] = static_cast<float>(i);
  for (std::int64_t r = 0; r < rounds; ++r)
    for (float& a : acc) a = a * kFmaA + kFmaB;
  float sum = 0.0f;
  for (float a : acc) sum += a;
  return sum;
}

float sum_scalar(const float* data, std::int64_t blocks) {
  float acc[8] = {};
  for (std::int64_t i = 0; i < blocks * kReadBlock; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += data[i + j];
  float sum = 0.0f;
  for (float a : acc) sum += a;
  return sum;
}

struct PeakIsa {
  const char* name;
  int lanes;                                 // fp32 lanes of one FMA
  float (*fma)(std::int64_t rounds);         // kFmaChains chains of `rounds` FMAs
  float (*sum)(const float*, std::int64_t);  // sum of `blocks` 64-byte-aligned blocks
};

// The widest path this CPU runs, asked of the CPU (and OS) once.
const PeakIsa& peak_path() {
  static const PeakIsa path = [] {
#ifdef BENCH_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma"))
      return PeakIsa{"avx512", 16, fma_avx512, sum_avx512};
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      return PeakIsa{"avx2", 8, fma_avx2, sum_avx2};
#endif
    return PeakIsa{"scalar", 1, fma_scalar, sum_scalar};
  }();
  return path;
}

// Allocated and written (first touched) once per process, by all OpenMP threads, in the
// caches' memory (aligned_buffer.hpp): transparent huge pages on Linux, as 4 KiB pages cost
// about a tenth of the bandwidth (38 instead of 42 GB/s on one core of the Zen 5 this was
// written on), and the peak should be the best the machine does.
const float* read_buffer() {
  static const multihead::detail::AlignedBuffer<float> buffer = [] {
    static_assert(kReadBufferBytes % multihead::detail::kHugePageBytes == 0, "whole huge pages");
    multihead::detail::AlignedBuffer<float> memory(kReadFloats);
    float* data = memory.data();
#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
    for (std::int64_t i = 0; i < kReadFloats; ++i) data[i] = 1.0f;
    return memory;
  }();
  return buffer.data();
}

// The best rate of `samples` measurements of `calls` calls of run(), which returns its work.
template <class Run>
double best_rate(int samples, int calls, Run run) {
  double best = 0.0;
  for (int s = 0; s < samples; ++s) {
    double work = 0.0;
    const auto start = std::chrono::steady_clock::now();
    for (int c = 0; c < calls; ++c) work += run();
    const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
    best = std::max(best, work / elapsed.count());
  }
  return best;
}

MachinePeak measure_peak(int threads) {
  // Warm-up: starts the OpenMP threads, lets the clocks ramp up, touches the read buffer.
  run_fma(threads);
  run_read(threads);
  MachinePeak peak{};
  peak.flops_per_second = best_rate(5, 3, [threads] { return run_fma(threads); });  // 5 × ~11 ms
  peak.bytes_per_second = best_rate(5, 1, [threads] { return run_read(threads); });  // 5 passes
  if (has_bf16_dot())
    peak.bf16_flops_per_second = best_rate(5, 3, [threads] { return run_bf16_dot(threads); });
  return peak;
}

}  // namespace

const char* peak_isa() { return peak_path().name; }

bool has_bf16_dot() {
#ifdef BENCH_X86
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

namespace {

// burst(kFmaRounds) on each of `threads` OpenMP threads; returns how many threads ran it.
int run_burst(int threads, float (*burst)(std::int64_t)) {
  float checksum = 0.0f;
  int team = 1;
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) reduction(+ : checksum)
  {
#pragma omp single nowait
    team = omp_get_num_threads();
    checksum += burst(kFmaRounds);
  }
#else
  (void)threads;
  checksum = burst(kFmaRounds);
#endif
  g_sink = checksum;
  return team;
}

}  // namespace

double run_bf16_dot(int threads) {
#ifdef BENCH_X86
  if (!has_bf16_dot()) return 0.0;
  // 32 multiply-adds per instruction, 2 flops each.
  return 2.0 * 32 * kFmaChains * static_cast<double>(kFmaRounds) *
         run_burst(threads, bf16_dot_avx512);
#else
  (void)threads;
  return 0.0;
#endif
}

double run_fma(int threads) {
  const PeakIsa& path = peak_path();
  return 2.0 * path.lanes * kFmaChains * static_cast<double>(kFmaRounds) *
         run_burst(threads, path.fma);
}

namespace {

// One pass over the read buffer by `threads` threads, in chunks of chunk_blocks blocks: in
// address order without `order` (each thread one contiguous share), else the chunks `order`
// lists, the threads taking equal shares of the list.
float read_pass(int threads, std::int64_t chunk_blocks, const std::vector<std::int64_t>* order) {
  const PeakIsa& path = peak_path();
  const float* data = read_buffer();
  const std::int64_t chunks = kReadFloats / kReadBlock / chunk_blocks;
  const std::int64_t chunk_floats = chunk_blocks * kReadBlock;
  const auto share = [&](std::int64_t begin, std::int64_t end) {
    if (order == nullptr) return path.sum(data + begin * chunk_floats, (end - begin) * chunk_blocks);
    float sum = 0.0f;
    for (std::int64_t i = begin; i < end; ++i)
      sum += path.sum(data + (*order)[static_cast<std::size_t>(i)] * chunk_floats, chunk_blocks);
    return sum;
  };
  float checksum = 0.0f;
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) reduction(+ : checksum)
  {
    const std::int64_t team = omp_get_num_threads(), thread = omp_get_thread_num();
    checksum += share(chunks * thread / team, chunks * (thread + 1) / team);
  }
#else
  (void)threads;
  checksum = share(0, chunks);
#endif
  return checksum;
}

}  // namespace

double run_read(int threads) {
  g_sink = read_pass(threads, 1, nullptr);
  return static_cast<double>(kReadBufferBytes);
}

double run_read_scattered(int threads, std::int64_t chunk_bytes) {
  constexpr std::int64_t block_bytes = kReadBlock * std::int64_t(sizeof(float));
  if (chunk_bytes <= 0 || chunk_bytes % block_bytes != 0 || kReadBufferBytes % chunk_bytes != 0)
    throw std::invalid_argument("run_read_scattered: chunk_bytes must be whole 512-byte blocks "
                                "that divide the read buffer");
  // One fixed shuffle per chunk size, made on first use (untimed by the caller's warm-up).
  static std::map<std::int64_t, std::vector<std::int64_t>> orders;
  std::vector<std::int64_t>& order = orders[chunk_bytes];
  if (order.empty()) {
    order.resize(static_cast<std::size_t>(kReadBufferBytes / chunk_bytes));
    std::iota(order.begin(), order.end(), std::int64_t{0});
    std::shuffle(order.begin(), order.end(), std::mt19937_64(20261123));
  }
  g_sink = read_pass(threads, chunk_bytes / block_bytes, &order);
  return static_cast<double>(kReadBufferBytes);
}

const MachinePeak& machine_peak(int threads) {
  static std::map<int, MachinePeak> cache;  // benchmarks run one at a time on the main thread
  auto found = cache.find(threads);
  if (found == cache.end()) found = cache.emplace(threads, measure_peak(threads)).first;
  return found->second;
}

const MachinePeak& machine_peak_scattered(int threads, std::int64_t chunk_bytes) {
  static std::map<std::pair<int, std::int64_t>, MachinePeak> cache;
  const std::pair<int, std::int64_t> key{threads, chunk_bytes};
  auto found = cache.find(key);
  if (found == cache.end()) {
    MachinePeak peak = machine_peak(threads);
    run_read_scattered(threads, chunk_bytes);  // the chunk order, made on first use
    peak.bytes_per_second =
        best_rate(5, 1, [=] { return run_read_scattered(threads, chunk_bytes); });
    found = cache.emplace(key, peak).first;
  }
  return found->second;
}

}  // namespace bench

// compare_variants: builds MHA, GQA, MQA and MLA layers of one model size and compares what they
// cost: parameters and the time of a prefill over random input, with the attention in fp32 and
// in bf16 (and the bf16 output's error against fp32's); then, per cache storage (fp32,
// bf16, int8 = q8, int4 = q4), the cache's bytes per token and at a context length, the time of
// a decode step — one token through the whole layer (projections, cache append, attention over
// the context) — and what the storage changes in that step's output against an fp32 cache.
// Last, the MHA layer turned into MLA by a truncated SVD of its K/V projections at several ranks:
// what each rank saves in cache and what it changes in the output.
//
//   compare_variants [--model-dim N] [--heads N] [--groups N] [--latent N] [--rope-dim N]
//                    [--tokens N] [--context N] [--threads N] [--kernel fused|reference]
//                    [--json FILE]
//
// The defaults are DeepSeek-V2-Lite's attention: model dim 2048, 16 heads of 128; its MLA caches
// a 512-value latent and a 64-value RoPE key per token (heads 128 + 64 for q·k, 128 for v). The
// dense layers get the same model dim and heads, so the four differ only in what they cache.
//
// Every figure is held against the machine itself: its FMA rate and read bandwidth, measured by
// bench/peak.cpp's kernels on the threads the layers use, before the layers run and again after
// them. A prefill does most of its work in projections and attention tiles, so it is judged by
// GFLOP/s against the FMA rate. Caches are filled with random values directly (a prefill of the
// whole context would take longer than the decode it sets up and measure nothing new); the steps
// then run through forward(x, cache, y). A decode step reads all weights and the whole cache once
// and does little arithmetic per byte, so it is memory-bound: GB/s is those bytes over the step's
// time, to hold against the read bandwidth.
//
// Every time is the median of several runs, shown with its interquartile range: the machine may
// be shared, and a spread says so where a single figure cannot. Prefills run 7 times and decode
// steps 24 (3 and 16 before: too few for steady quartiles). A warning (stderr, and under the
// tables) marks figures a busy machine spoiled: the rule is at kBusyFraction below.
//
// The SVD is the slow part: [Wk; Wv] is 4096 × 2048 at the defaults, 10-16 s of one core in
// double precision, and latent_from_dense computes it afresh for every rank asked of it: five
// ranks took about three quarters of the 63 s the whole run used to take on two idle cores
// (about 110 s on busy ones). So it runs once, at full rank, and each lower rank keeps the
// leading directions of that conversion (truncate() below): the layer latent_from_dense returns
// for that rank, weight for weight. Each further rank costs a forward over 64 tokens, so the
// ranks now go down to 1/64 of full (1/16 before), and the default run takes about 15 s on two
// idle cores, 30 s on two cores shared with a compiler.
//
// The run says what it is doing on stderr, one line per stage; --json FILE writes every figure of
// the tables to FILE, for examples/plot_variants.py to chart.
#include <multihead/multihead.hpp>
#include <multihead/layer/latent_from_dense.hpp>

#include "peak.hpp"  // bench/: the machine's FMA rate and read bandwidth

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#ifdef __linux__
#include <dirent.h>
#include <sys/resource.h>
#endif

namespace {

struct Settings {
  long long model_dim = 2048;
  long long heads = 16;
  long long groups = 4;   // the GQA layer's KV groups
  long long latent = 512;    // the MLA layer's latent_dim
  long long rope_dim = 64;   // the MLA layer's RoPE key
  long long tokens = 512;
  long long context = 8192;  // tokens in the KV cache when decoding
  int threads = 0;        // 0: all OpenMP threads
  multihead::KernelChoice kernel = multihead::KernelChoice::fused;
  std::string json;          // --json FILE; empty: no JSON
};

void print_usage(std::FILE* out) {
  std::fprintf(out,
               "usage: compare_variants [options]\n"
               "Compares MHA, GQA, MQA and MLA layers of the same model size on a prefill and on\n"
               "decode steps over fp32 and bf16 caches, and MHA turned into MLA by SVD, against\n"
               "the machine's FMA rate and read bandwidth. Progress goes to stderr.\n"
               "  --model-dim N  model dimension (default 2048)\n"
               "  --heads N      query heads; head dim = model dim / heads (default 16)\n"
               "  --groups N     KV groups of the GQA layer (default 4)\n"
               "  --latent N     latent dim of the MLA layer (default 512)\n"
               "  --rope-dim N   RoPE key dim of the MLA layer, even (default 64)\n"
               "  --tokens N     prefill length (default 512)\n"
               "  --context N    tokens in the KV cache when decoding (default 8192)\n"
               "  --threads N    threads, 0 for all (default 0)\n"
               "  --kernel K     prefill kernel: fused or reference (default fused)\n"
               "  --json FILE    also write every figure printed, as JSON, to FILE\n"
               "                 (chart it: python3 examples/plot_variants.py FILE DIR)\n"
               "  --help         this text\n");
}

// Parses the flags; returns false (after printing why) on anything it does not understand.
bool parse(int argc, char** argv, Settings& settings, bool& help) {
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      help = true;
      return true;
    }
    if (flag == "--kernel") {
      const std::string value = i + 1 < argc ? argv[++i] : "";
      if (value != "fused" && value != "reference") {
        std::fprintf(stderr, "compare_variants: --kernel takes fused or reference, not '%s'\n",
                     value.c_str());
        return false;
      }
      settings.kernel = value == "fused" ? multihead::KernelChoice::fused
                                         : multihead::KernelChoice::reference;
      continue;
    }
    if (flag == "--json") {
      if (i + 1 >= argc || argv[i + 1][0] == '\0') {
        std::fprintf(stderr, "compare_variants: --json needs a file name\n");
        return false;
      }
      settings.json = argv[++i];
      continue;
    }
    long long* target = flag == "--model-dim" ? &settings.model_dim
                        : flag == "--heads"   ? &settings.heads
                        : flag == "--groups"  ? &settings.groups
                        : flag == "--latent"  ? &settings.latent
                        : flag == "--rope-dim" ? &settings.rope_dim
                        : flag == "--tokens"  ? &settings.tokens
                        : flag == "--context" ? &settings.context
                                              : nullptr;
    long long threads = 0;
    if (flag == "--threads") target = &threads;
    if (target == nullptr) {
      std::fprintf(stderr, "compare_variants: unknown option '%s'\n", flag.c_str());
      return false;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "compare_variants: %s needs a value\n", flag.c_str());
      return false;
    }
    char* end = nullptr;
    const long long value = std::strtoll(argv[++i], &end, 10);
    if (end == argv[i] || *end != '\0' || value < 0) {
      std::fprintf(stderr, "compare_variants: %s: '%s' is not a non-negative integer\n",
                   flag.c_str(), argv[i]);
      return false;
    }
    *target = value;
    if (flag == "--threads") settings.threads = static_cast<int>(threads);
  }
  return true;
}

// "1 thread", "2 threads".
std::string counted(long long n, const char* noun) {
  return std::to_string(n) + " " + noun + (n == 1 ? "" : "s");
}

// printf into a std::string: stage names and warnings are built once and both printed and
// written to the JSON.
#ifdef __GNUC__
__attribute__((format(printf, 1, 2)))
#endif
std::string format(const char* pattern, ...) {
  va_list args, count;
  va_start(args, pattern);
  va_copy(count, args);
  const int size = std::vsnprintf(nullptr, 0, pattern, count);
  va_end(count);
  std::string text(static_cast<std::size_t>(std::max(size, 0)), '\0');
  std::vsnprintf(text.data(), text.size() + 1, pattern, args);
  va_end(args);
  return text;
}

// Timed runs after the warm-ups: a prefill, a decode step, an FMA burst, a pass over the read
// buffer. Enough for quartiles that hold still from run to run; the peaks' kernels take a few ms
// a call at two threads (more where they share the cores), so their runs cost little.
constexpr int kPrefillRuns = 7, kPrefillWarmups = 1;
constexpr int kDecodeSteps = 24, kDecodeWarmups = 2;
constexpr int kFmaRuns = 31, kReadRuns = 31;

// The busy-machine rule, one threshold for its three tests: a timing whose interquartile range
// is more than this fraction of its median; a peak that differs between its measurement before
// the layers and after them by more than this fraction of the higher one; a stage that times
// something during which our threads, ready to run, waited for a CPU more than this fraction of
// the time. On the two idle cores of the virtual machine this was written on, decode steps' IQRs
// were mostly under 12 % (up to 19 % for steps under a millisecond), FMA bursts' under 10 %, and
// the threads waited 0-4 %; with a compiler on the cores they waited about half the time, and
// most figures broke the rule. Passes over the read buffer varied by 3-28 % and the read peak
// moved by up to 30 % with no other process in the machine: the host's memory bandwidth is
// shared too, and a warning then says the GB/s fractions are that uncertain. The third test is
// there because the first two can both miss a compiler: decode steps ran at a steady 40 ms
// instead of 1-5 ms, and FMA bursts at a steady 8 ms instead of 3.5 (half the peak), spreads as
// tight as a quiet run's.
constexpr double kBusyFraction = 0.15;

// Seconds the threads of this process have spent ready to run but waiting for a CPU: the second
// field of Linux's per-thread /proc/self/task/*/schedstat, in ns (a run-queue wait: a thread
// that sleeps in a barrier or on I/O is not waiting). NaN where there is no such file: the test
// is skipped there. Threads that exited take their waits with them; OpenMP keeps its own.
double cpu_wait_seconds() {
  double total = NAN;
#ifdef __linux__
  if (DIR* tasks = opendir("/proc/self/task")) {
    while (const dirent* task = readdir(tasks)) {
      if (task->d_name[0] == '.') continue;
      const std::string path = std::string("/proc/self/task/") + task->d_name + "/schedstat";
      if (std::FILE* stat = std::fopen(path.c_str(), "r")) {
        unsigned long long run = 0, wait = 0;
        if (std::fscanf(stat, "%llu %llu", &run, &wait) == 2)
          total = (std::isnan(total) ? 0.0 : total) + 1e-9 * static_cast<double>(wait);
        std::fclose(stat);
      }
    }
    closedir(tasks);
  }
#endif
  return total;
}

// CPU seconds this process has used, user and system: the run's total, beside its wall time.
double cpu_seconds() {
#ifdef __linux__
  rusage usage{};
  if (getrusage(RUSAGE_SELF, &usage) == 0)
    return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
           1e-6 * static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
#endif
  return NAN;
}

template <class F>
double seconds(F&& run) {
  const auto start = std::chrono::steady_clock::now();
  run();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// The times of one measurement's runs, ascending.
struct Timing {
  std::vector<double> runs;

  // Linear interpolation between the nearest runs, as numpy's default quantile.
  double quantile(double p) const {
    const double at = p * static_cast<double>(runs.size() - 1);
    const std::size_t below = static_cast<std::size_t>(at);
    const std::size_t above = std::min(below + 1, runs.size() - 1);
    return runs[below] + (at - static_cast<double>(below)) * (runs[above] - runs[below]);
  }
  double median() const { return quantile(0.5); }
  double q1() const { return quantile(0.25); }
  double q3() const { return quantile(0.75); }
  double best() const { return runs.front(); }
  // The interquartile range over the median: what the tables show as IQR%, and what the
  // busy-machine rule tests.
  double spread() const { return (q3() - q1()) / median(); }
};

// The one timing helper every stage uses: `runs` calls of run(), after `warmups` untimed ones.
template <class F>
Timing time_runs(int warmups, int runs, F&& run) {
  Timing timing;
  for (int i = 0; i < warmups + runs; ++i) {
    const double t = seconds(run);
    if (i >= warmups) timing.runs.push_back(t);
  }
  std::sort(timing.runs.begin(), timing.runs.end());
  return timing;
}

struct Stage {
  std::string what;
  double seconds;
  double waited;  // the fraction of the time our threads waited for a CPU; NaN: unknown
  bool timed;     // whether the stage timed something (judge() ran in it)
};

// Progress on stderr, the stages' times and the busy-machine warnings: one per stage that broke
// the rule, with every test it broke.
class Log {
 public:
  explicit Log(int threads) : threads_(threads) {}

  // Runs one stage: its line goes out before the work starts (flushed, so that a slow stage
  // shows what it is waiting for), its time and how long our threads waited for a CPU when the
  // work is done, then its warning if it has one.
  template <class F>
  auto stage(const std::string& what, F&& work) {
    std::fprintf(stderr, "compare_variants: %s... ", what.c_str());
    std::fflush(stderr);
    timed_ = false;
    reasons_.clear();
    const double wait_before = cpu_wait_seconds();
    const auto start = std::chrono::steady_clock::now();
    auto result = work();
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    // Over the threads a kernel runs: two of ours and a compiler on two cores show about 50 %.
    const double waited = (cpu_wait_seconds() - wait_before) / (elapsed * threads_);
    if (std::isfinite(waited))
      std::fprintf(stderr, "%.2f s (threads waited for a CPU %.0f%% of it)\n", elapsed,
                   100 * waited);
    else
      std::fprintf(stderr, "%.2f s\n", elapsed);
    if (timed_ && waited > kBusyFraction)
      flag(format("our threads waited for a CPU %.0f%% of the time", 100 * waited));
    if (!reasons_.empty()) {
      std::string warning = what;
      for (std::size_t i = 0; i < reasons_.size(); ++i)
        warning += (i == 0 ? ": " : "; ") + reasons_[i];
      warnings_.push_back(warning + format(" (limit %.0f%%): the machine is busy, these figures "
                                           "are unreliable", 100 * kBusyFraction));
      std::fprintf(stderr, "compare_variants: WARNING: %s\n", warnings_.back().c_str());
    }
    std::fflush(stderr);
    stages_.push_back({what, elapsed, waited, timed_});
    return result;
  }

  // The spread test of the busy-machine rule, on the timing of `runs` (plural: "steps",
  // "prefills"); the stage's CPU-wait test follows when the stage ends.
  void judge(const char* runs, const Timing& timing) {
    timed_ = true;
    if (timing.spread() > kBusyFraction)
      flag(format("the %s' IQR is %.1f%% of their median", runs, 100 * timing.spread()));
  }
  // A broken test of the rule, for the current stage's warning.
  void flag(std::string reason) { reasons_.push_back(std::move(reason)); }

  const std::vector<Stage>& stages() const { return stages_; }
  const std::vector<std::string>& warnings() const { return warnings_; }

 private:
  std::vector<Stage> stages_;
  std::vector<std::string> warnings_;
  std::vector<std::string> reasons_;  // the current stage's
  bool timed_ = false;
  int threads_;
};

// One measurement of the machine's peaks on `threads` threads: bench/peak.cpp's kernels, timed
// burst by burst and pass by pass by time_runs (not bench::machine_peak, which keeps only the
// best of its samples once per process: here the spread counts, and the peaks are measured
// again after the layers to see whether the machine changed under them).
struct PeakSample {
  double flops_per_burst, bytes_per_pass;
  Timing fma, read;
  double flops_per_second() const { return flops_per_burst / fma.best(); }
  double bytes_per_second() const { return bytes_per_pass / read.best(); }
};

PeakSample measure_peaks(int threads, Log& log) {
  PeakSample sample{};
  // The untimed first calls start the OpenMP threads, let the clocks ramp up and, the first
  // time, allocate and touch the read buffer.
  sample.flops_per_burst = bench::run_fma(threads);
  sample.bytes_per_pass = bench::run_read(threads);
  sample.fma = time_runs(0, kFmaRuns, [threads] { bench::run_fma(threads); });
  sample.read = time_runs(0, kReadRuns, [threads] { bench::run_read(threads); });
  log.judge("FMA bursts", sample.fma);
  log.judge("read passes", sample.read);
  return sample;
}

// The machine as the tables divide by it: the best rate either measurement reached.
struct MachinePeaks {
  PeakSample before, after;
  double flops_per_second() const {
    return std::max(before.flops_per_second(), after.flops_per_second());
  }
  double bytes_per_second() const {
    return std::max(before.bytes_per_second(), after.bytes_per_second());
  }
};

// The drift test of the busy-machine rule, once both measurements are in.
void judge_drift(const char* what, const char* unit, double before, double after, Log& log) {
  const double change = std::abs(after - before) / std::max(before, after);
  if (change > kBusyFraction)
    log.flag(format("the %s peak moved from %.1f %s before the layers to %.1f after, by %.0f%%",
                    what, before / 1e9, unit, after / 1e9, 100 * change));
}

struct PrefillRow {
  std::string name, attention;  // attention: "fp32", or "bf16" (Precision::bf16)
  long long heads, groups, parameters;
  double flops;  // per prefill: see prefill_flops
  Timing time;
  // bf16: the output against the fp32 prefill's on the same input, ||y - y_fp32|| / ||y_fp32||.
  double error = 0.0;
  double flops_per_second() const { return flops / time.median(); }
};

struct DecodeRow {
  std::string name, storage;
  long long kv_bytes_per_token;
  double bytes_read;  // per step: the fp32 weights and the cache at the context length
  Timing time;
  // A step's output against the same step over an fp32 cache of the same values (relative
  // Frobenius norm), on uniform random K/V and with outlier channels (quantization_error).
  double error_random = 0.0, error_outliers = 0.0;
  double bytes_per_second() const { return bytes_read / time.median(); }
};

// The forward options of a layer: ForwardOptions for the dense ones, LatentForwardOptions for MLA.
template <class Layer>
auto forward_options(const Layer&, const Settings& settings,
                     multihead::Precision precision = multihead::Precision::fp32) {
  using Options = std::conditional_t<std::is_same_v<Layer, multihead::MLA>,
                                     multihead::LatentForwardOptions, multihead::ForwardOptions>;
  Options options;
  options.threads = settings.threads;
  options.kernel = settings.kernel;
  options.precision = precision;
  return options;
}

// KV groups as the prefill table shows them: MLA's latent is one shared "group".
long long kv_groups_of(const multihead::LayerConfig& c) { return c.kv_groups; }
long long kv_groups_of(const multihead::LatentConfig&) { return 1; }

// Per head, the multiply-adds of one query-key pair: q·k, then p·v. MLA's prefill up-projects
// its latents (the naive path), so it attends with nope + rope for q·k and value_dim for v.
long long pair_dims(const multihead::LayerConfig& c) { return c.head_dim + c.v_dim(); }
long long pair_dims(const multihead::LatentConfig& c) { return c.qk_dim() + c.value_dim; }

// Floating-point operations of one causal prefill of `tokens` tokens, 2 per multiply-add:
//  - projections: every weight meets every token once, 2·tokens·weights. That is
//    2·tokens·model_dim·(q + k + v + o features) for the dense layers (no biases), and for MLA
//    q_proj, kv_a_proj_with_mqa, kv_b_proj (run on every token's latent) and o_proj; MLA's
//    latent RMSNorm weights count as if they were projections, 1e-5 of the total;
//  - attention: each head takes the tokens·(tokens + 1)/2 query-key pairs of a causal mask
//    through q·k and p·v, 2·pairs·heads·(qk_dim + v_dim).
// Softmax's exponentials and RoPE's rotations are left out.
template <class Layer>
double prefill_flops(const Layer& layer, long long tokens) {
  const double t = static_cast<double>(tokens);
  const double pairs = t * (t + 1) / 2;
  return 2 * t * static_cast<double>(layer.parameter_count()) +
         2 * pairs * static_cast<double>(layer.config().heads * pair_dims(layer.config()));
}

template <class Layer>
PrefillRow measure_prefill(const char* name, Layer& layer, const Settings& settings, Log& log,
                           multihead::Precision precision) {
  using namespace multihead;
  const RowMatrix x = RowMatrix::Random(settings.tokens, layer.config().model_dim);
  RowMatrix y;
  const auto options = forward_options(layer, settings, precision);
  const bool bf16 = precision == Precision::bf16;
  PrefillRow row{name, bf16 ? "bf16" : "fp32", layer.config().heads, kv_groups_of(layer.config()),
                 layer.parameter_count(), prefill_flops(layer, settings.tokens),
                 time_runs(kPrefillWarmups, kPrefillRuns, [&] { layer.forward(x, y, options); })};
  log.judge("prefills", row.time);
  if (bf16) {
    const RowMatrix exact = layer.forward(x, forward_options(layer, settings));
    row.error = (y - exact).norm() / exact.norm();
  }
  return row;
}

// `n` values uniform in [-1, 1), the same for the same seed; with outliers, every value whose
// index within its row of `dim` is 7 mod 64 twenty times wider, as a few channels of real
// models' keys (and latents) are.
Eigen::VectorXf random_rows(std::int64_t n, std::int64_t dim, bool outliers, unsigned seed) {
  std::mt19937 generator(seed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  Eigen::VectorXf x(n);
  for (std::int64_t i = 0; i < n; ++i)
    x(i) = uniform(generator) * (outliers && i % dim % 64 == 7 ? 20.0f : 1.0f);
  return x;
}

// Appends `tokens` tokens of random K/V to the cache, a chunk at a time from one random chunk
// (outlier channels in K only).
template <class Storage>
void fill_cache(multihead::KvCache<Storage>& cache, std::int64_t tokens, bool outliers = false) {
  using multihead::TensorView;
  constexpr std::int64_t kChunk = 256;
  const std::int64_t groups = cache.kv_groups(), d = cache.head_dim(), dv = cache.value_dim();
  const Eigen::VectorXf k = random_rows(kChunk * groups * d, d, outliers, 1);
  const Eigen::VectorXf v = random_rows(kChunk * groups * dv, dv, false, 2);
  for (std::int64_t done = 0; done < tokens;) {
    const std::int64_t n = std::min(kChunk, tokens - done);
    cache.append(TensorView<const float>(k.data(), n * groups * d, 1, n, groups, d),
                 TensorView<const float>(v.data(), n * groups * dv, 1, n, groups, dv));
    done += n;
  }
}

// The same for a latent cache: random latents (outlier channels there) and RoPE keys.
template <class Storage>
void fill_cache(multihead::LatentCache<Storage>& cache, std::int64_t tokens, bool outliers = false) {
  using multihead::TensorView;
  constexpr std::int64_t kChunk = 256;
  const std::int64_t dc = cache.latent_dim(), dr = cache.rope_dim();
  const Eigen::VectorXf c = random_rows(kChunk * dc, dc, outliers, 1);
  const Eigen::VectorXf r = random_rows(kChunk * dr + 1, std::max<std::int64_t>(dr, 1), false, 2);
  for (std::int64_t done = 0; done < tokens;) {
    const std::int64_t n = std::min(kChunk, tokens - done);
    const TensorView<const float> latent(c.data(), n * dc, 1, n, 1, dc);
    if (dr == 0)
      cache.append(latent);
    else
      cache.append(latent, TensorView<const float>(r.data(), n * dr, 1, n, 1, dr));
    done += n;
  }
}

// A cache for `tokens` tokens of one sequence of the layer.
template <class Storage>
multihead::KvCache<Storage> make_cache(const multihead::LayerConfig& c, std::int64_t tokens) {
  return {1, tokens, c.kv_groups, c.head_dim, c.v_dim()};
}
template <class Storage>
multihead::LatentCache<Storage> make_cache(const multihead::LatentConfig& c, std::int64_t tokens) {
  return {1, tokens, c.latent_dim, c.rope_dim};
}

// One step's output over a cache of Storage holding kErrorContext random tokens, against the
// same step over an fp32 cache of the same values: ‖y − y_fp32‖ / ‖y_fp32‖.
constexpr std::int64_t kErrorContext = 1024;
template <class Storage, class Layer>
double quantization_error(Layer& layer, const Settings& settings, bool outliers) {
  using namespace multihead;
  const auto options = forward_options(layer, settings);
  const RowMatrix x = random_rows(layer.config().model_dim, layer.config().model_dim, false, 3)
                          .transpose();
  const auto step = [&](auto cache) {
    fill_cache(cache, kErrorContext, outliers);
    RowMatrix y;
    layer.forward(x, cache, y, options);
    return y;
  };
  const RowMatrix exact = step(make_cache<float>(layer.config(), kErrorContext + 1));
  const RowMatrix stored = step(make_cache<Storage>(layer.config(), kErrorContext + 1));
  return (stored - exact).norm() / exact.norm();
}

// Single-token steps of one sequence over a cache holding `context` tokens.
template <class Storage, class Layer>
DecodeRow measure_decode(const char* name, const char* storage, Layer& layer,
                         const Settings& settings, Log& log) {
  using namespace multihead;
  auto cache = make_cache<Storage>(layer.config(), settings.context + kDecodeWarmups + kDecodeSteps);
  fill_cache(cache, settings.context);
  const RowMatrix x = RowMatrix::Random(1, layer.config().model_dim);
  RowMatrix y;
  const auto options = forward_options(layer, settings);
  const double bytes = 4.0 * static_cast<double>(layer.parameter_count()) +
                       static_cast<double>(cache.bytes_per_token()) * settings.context;
  DecodeRow row{
      name, storage, cache.bytes_per_token(), bytes,
      time_runs(kDecodeWarmups, kDecodeSteps, [&] { layer.forward(x, cache, y, options); })};
  log.judge("steps", row.time);
  if constexpr (!std::is_same_v<Storage, float>) {
    row.error_random = quantization_error<Storage>(layer, settings, false);
    row.error_outliers = quantization_error<Storage>(layer, settings, true);
  }
  return row;
}

// One layer of the variant: its prefill, then decoding over an fp32 and a bf16 cache, a stage
// each (the first also draws the random weights: the stages' times add up to the run's).
template <class Layer, class Config>
void measure(const char* name, const Config& config, const Settings& settings, Log& log,
             std::vector<PrefillRow>& prefill, std::vector<DecodeRow>& decode) {
  Layer layer(config);
  prefill.push_back(log.stage(format("%s: prefill of %lld tokens", name, settings.tokens), [&] {
    layer.init_random(42);
    return measure_prefill(name, layer, settings, log, multihead::Precision::fp32);
  }));
  prefill.push_back(
      log.stage(format("%s: prefill of %lld tokens, attention in bf16", name, settings.tokens),
                [&] { return measure_prefill(name, layer, settings, log, multihead::Precision::bf16); }));
  decode.push_back(
      log.stage(format("%s: decode over an fp32 cache of %lld tokens", name, settings.context),
                [&] { return measure_decode<float>(name, "fp32", layer, settings, log); }));
  decode.push_back(log.stage(
      format("%s: decode over a bf16 cache of %lld tokens", name, settings.context),
      [&] { return measure_decode<multihead::bf16>(name, "bf16", layer, settings, log); }));
  decode.push_back(log.stage(
      format("%s: decode over an int8 (q8) cache of %lld tokens", name, settings.context),
      [&] { return measure_decode<multihead::q8>(name, "int8", layer, settings, log); }));
  decode.push_back(log.stage(
      format("%s: decode over an int4 (q4) cache of %lld tokens", name, settings.context),
      [&] { return measure_decode<multihead::q4>(name, "int4", layer, settings, log); }));
}

struct RankRow {
  long long rank, kv_bytes_per_token;
  double weight_error, output_error;
};

struct RankStudy {
  long long svd_rows = 0, svd_cols = 0, tokens = 0;
  std::vector<RankRow> rows;
};

// The rank-r layer of a full-rank conversion. latent_from_dense's latent is S·Vᵀ·x, one value
// per singular direction in descending order, and kv_b_proj's columns are the matching columns
// of U; so the rank-r layer keeps the first r rows of kv_a_proj_with_mqa and the first r columns
// of kv_b_proj. That is latent_from_dense(dense, LatentRank::fixed(r)) exactly (the same SVD,
// cut at r: equal weights, equal outputs), without computing the SVD again for every rank.
multihead::MLA truncate(const multihead::LatentConversion& full, std::int64_t rank) {
  using multihead::LatentWeight;
  multihead::LatentConfig config = full.layer.config();
  config.latent_dim = rank;
  multihead::MLA layer(config);
  layer.set_weight(LatentWeight::q_proj, full.layer.weight(LatentWeight::q_proj));
  layer.set_weight(LatentWeight::kv_a_proj_with_mqa,
                   full.layer.weight(LatentWeight::kv_a_proj_with_mqa).topRows(rank));
  layer.set_weight(LatentWeight::kv_b_proj,
                   full.layer.weight(LatentWeight::kv_b_proj).leftCols(rank));
  layer.set_weight(LatentWeight::o_proj, full.layer.weight(LatentWeight::o_proj));
  return layer;
}

// The MHA layer (of `c`, with the weights measure() gave it: the same seed) as MLA at ranks from
// full down to 1/64 of it: the relative error of the stacked K/V weights, and the relative error
// of the outputs on random input (max|Δy| / max|y| over `tokens` tokens, causal). A stage for the
// SVD, one per rank.
RankStudy measure_ranks(const multihead::LayerConfig& c, const Settings& settings, Log& log) {
  using namespace multihead;
  RankStudy study;
  study.svd_rows = c.kv_groups * (c.head_dim + c.v_dim());
  study.svd_cols = c.model_dim;
  study.tokens = std::min<long long>(settings.tokens, 64);
  const std::int64_t full = std::min<std::int64_t>(study.svd_rows, study.svd_cols);
  const RowMatrix x = RowMatrix::Random(study.tokens, c.model_dim);
  RowMatrix y;  // the MHA layer's own output, which every rank is held against
  const LatentConversion conversion = log.stage(
      format("MHA -> MLA: SVD of the %lld x %lld K/V projection, once for every rank",
             study.svd_rows, study.svd_cols),
      [&] {
        MHA mha(c);
        mha.init_random(42);
        ForwardOptions options;
        options.threads = settings.threads;
        y = mha.forward(x, options);
        return latent_from_dense(mha, LatentRank::fixed(full));
      });
  // ‖W − W_r‖_F / ‖W‖_F from the singular values, which the conversion returns for this: the
  // tail summed by itself as latent_from_dense sums it, so that a small error is not the
  // difference of two large sums.
  const Eigen::ArrayXd squares = conversion.singular_values.array().square();
  const double total = squares.sum();
  for (std::int64_t rank = full; rank >= std::max<std::int64_t>(1, full / 64); rank /= 2) {
    study.rows.push_back(log.stage(format("MHA -> MLA at rank %lld: output on %lld tokens",
                                          static_cast<long long>(rank), study.tokens), [&] {
      MLA layer = truncate(conversion, rank);
      LatentForwardOptions options;
      options.threads = settings.threads;
      const RowMatrix approx = layer.forward(x, options);
      const double tail = squares.tail(full - rank).sum();
      return RankRow{rank, layer.kv_cache_bytes_per_token(2),
                     total > 0.0 ? std::sqrt(tail / total) : 0.0,
                     (approx - y).cwiseAbs().maxCoeff() / y.cwiseAbs().maxCoeff()};
    }));
  }
  return study;
}

// The busy-machine rule's tests, as the tables' footnote and the JSON state them.
std::vector<std::string> busy_tests() {
  const double percent = 100 * kBusyFraction;
  return {format("a timing whose IQR is over %.0f%% of its median", percent),
          format("a peak that moved by over %.0f%% between before and after the layers", percent),
          format("threads ready to run that waited for a CPU over %.0f%% of the time, in a stage "
                 "that times something", percent)};
}

// Everything a run measured: what the tables print and the JSON holds.
struct Results {
  Settings settings;
  int threads = 1;
  long long head_dim = 0;
  MachinePeaks peaks;
  std::vector<PrefillRow> prefill;
  std::vector<DecodeRow> decode;
  RankStudy ranks;
  double wall_seconds = 0.0, cpu_seconds = 0.0;  // of the whole run, this process
};

// The tables, one row printer each.

// Rates per second, shown in G (GFLOP/s, GB/s).
void print_peak_row(const char* what, const Timing& before_timing, double before,
                    const Timing& after_timing, double after, double best) {
  std::printf("%-16s %10.1f %6.1f %10.1f %6.1f %10.1f\n", what, before / 1e9,
              100 * before_timing.spread(), after / 1e9, 100 * after_timing.spread(), best / 1e9);
}

void print_peaks(const Results& r) {
  const MachinePeaks& p = r.peaks;
  std::printf("Machine peaks on %s (bench/peak.cpp, %s kernels), before and after the layers:\n",
              counted(r.threads, "thread").c_str(), bench::peak_isa());
  std::printf("%-16s %10s %6s %10s %6s %10s\n", "peak", "before", "IQR%", "after", "IQR%", "best");
  print_peak_row("FMA GFLOP/s", p.before.fma, p.before.flops_per_second(), p.after.fma,
                 p.after.flops_per_second(), p.flops_per_second());
  print_peak_row("read GB/s", p.before.read, p.before.bytes_per_second(), p.after.read,
                 p.after.bytes_per_second(), p.bytes_per_second());
  std::printf(
      "The best of %d FMA bursts (%.1f ms each) and of %d passes over %lld MiB; \"of peak\" "
      "below divides by the best.\n",
      kFmaRuns, 1e3 * p.before.fma.median(), kReadRuns,
      static_cast<long long>(bench::kReadBufferBytes >> 20));
}

void print_prefill_row(const PrefillRow& row, const Results& r) {
  const double median = row.time.median();
  std::printf("%-8s %9s %6lld %10lld %11.1fM %11.1f %6.1f %10.0f %9.1f %8.2f %9s\n",
              row.name.c_str(), row.attention.c_str(), row.heads, row.groups,
              row.parameters / 1e6, median * 1e3, 100 * row.time.spread(),
              r.settings.tokens / median, row.flops_per_second() / 1e9,
              row.flops_per_second() / r.peaks.flops_per_second(),
              row.error > 0 ? format("%.1e", row.error).c_str() : "-");
}

void print_decode_row(const DecodeRow& row, const Results& r) {
  const double median = row.time.median();
  std::printf("%-8s %6s %15lld %16.1f %10.3f %6.1f %10.1f %8.1f %8.2f %9.1e %9.1e\n",
              row.name.c_str(), row.storage.c_str(), row.kv_bytes_per_token,
              static_cast<double>(row.kv_bytes_per_token) * r.settings.context / (1 << 20),
              median * 1e3, 100 * row.time.spread(), 1.0 / median, row.bytes_per_second() / 1e9,
              row.bytes_per_second() / r.peaks.bytes_per_second(), row.error_random,
              row.error_outliers);
}

void print_rank_row(const RankRow& row) {
  std::printf("%8lld %22lld %18.2e %18.2e\n", row.rank, row.kv_bytes_per_token, row.weight_error,
              row.output_error);
}

void print_tables(const Results& r, const std::vector<std::string>& warnings) {
  const Settings& s = r.settings;
  std::printf("multihead compare_variants: model dim %lld, %lld heads of dim %lld, causal, fp32 "
              "weights, %s prefill kernel, %s, %s path\n\n",
              s.model_dim, s.heads, r.head_dim,
              s.kernel == multihead::KernelChoice::fused ? "fused" : "reference",
              counted(r.threads, "thread").c_str(), multihead::isa_name());
  print_peaks(r);

  std::printf("\nPrefill of %lld tokens:\n", s.tokens);
  std::printf("%-8s %9s %6s %10s %12s %11s %6s %10s %9s %8s %9s\n", "variant", "attention",
              "heads", "kv groups", "parameters", "prefill ms", "IQR%", "tokens/s", "GFLOP/s",
              "of peak", "error");
  for (const PrefillRow& row : r.prefill) print_prefill_row(row, r);

  std::printf("\nDecode, one sequence, one token per step, at a context of %lld tokens:\n",
              s.context);
  std::printf("%-8s %6s %15s %16s %10s %6s %10s %8s %8s %9s %9s\n", "variant", "cache",
              "KV bytes/token", "KV MiB @context", "ms/token", "IQR%", "tokens/s", "GB/s",
              "of peak", "error", "outliers");
  for (const DecodeRow& row : r.decode) print_decode_row(row, r);
  // Above 1 is no error: the peak streams from memory, but the weights and cache of a small
  // layer are not much more than a last-level cache holds, so steps find part of them there.
  std::string cached;
  for (const DecodeRow& row : r.decode)
    if (row.bytes_per_second() > r.peaks.bytes_per_second())
      cached += (cached.empty() ? "" : ", ") + row.name + " " + row.storage;
  if (!cached.empty())
    std::printf("Above the read peak (%s): part of the weights and cache a step reads is still in "
                "the CPU's caches\nfrom the step before, and does not come from memory.\n",
                cached.c_str());

  std::printf(
      "\nKV bytes: what one layer caches per token (MLA: its latent and RoPE key). Prefill: "
      "median of %d runs;\nGFLOP/s counts 2 per multiply-add of the projections "
      "(2 x tokens x weights) and of causal attention\n(tokens x (tokens + 1) / 2 pairs x "
      "heads x (q.k + v dims)), over the FMA peak. attention bf16: Q, K and V rounded to bf16 for\nthe attention (Precision::bf16, on the bf16 dot product where the CPU has one); error: its\noutput against the fp32 prefill's, ||y - y_fp32|| / ||y_fp32||. Decode: median of %d steps;\na step "
      "runs the whole layer and reads the cache with decode_attention (MLA: absorbed, over "
      "the latents).\nGB/s: the fp32 weights and the cache a step reads, over its time, "
      "against the read peak. MLA: latent %lld,\nRoPE key %lld, heads %lld + %lld for q.k "
      "and %lld for v. IQR%%: the interquartile range of the runs, in %% of their "
      "median.\nerror: a step's output over the cache against the same step over an fp32 "
      "cache of the same values,\n||y - y_fp32|| / ||y_fp32||, at %lld tokens of uniform random "
      "K/V; outliers: the same with K's channels 7 mod 64\n(MLA: the latent's) 20 times wider, "
      "as a few channels of real models' keys are.\n",
      kPrefillRuns, kDecodeSteps, s.latent, s.rope_dim, r.head_dim, s.rope_dim, r.head_dim,
      static_cast<long long>(kErrorContext));

  std::printf("\nMHA turned into MLA by a truncated SVD of its stacked K/V projection (no RoPE "
              "key), by latent rank:\n");
  std::printf("%8s %22s %18s %18s\n", "rank", "bf16 KV bytes/token", "weight error", "output error");
  for (const RankRow& row : r.ranks.rows) print_rank_row(row);
  std::printf(
      "weight error: ||W - W_r|| / ||W|| (Frobenius) of W = [Wk; Wv] (%lld x %lld, one SVD "
      "cut at each rank);\noutput error: max|y_MLA - y_MHA| / max|y_MHA| on %lld tokens of "
      "random input. The layers' weights are random\n(flat spectrum): a trained layer's K/V "
      "projections concentrate their energy in fewer directions.\n",
      r.ranks.svd_rows, r.ranks.svd_cols, r.ranks.tokens);

  std::printf("\nBusy-machine rule: any of these means other work shared the cores or the memory, "
              "and marks figures unreliable:\n");
  for (const std::string& test : busy_tests()) std::printf("  - %s\n", test.c_str());
  if (warnings.empty())
    std::printf("No warnings: every figure passed.\n");
  for (const std::string& warning : warnings) std::printf("WARNING: %s\n", warning.c_str());
}

// JSON, written by hand (no dependency for one file of output): objects and arrays opened and
// closed in order, a comma wherever a value follows another, containers of numbers on one line
// and the rest one value a line. Integers print exactly, other numbers to 9 digits; JSON has no
// NaN or infinity, so those become null.
class Json {
 public:
  explicit Json(std::FILE* out) : out_(out) {}

  // `key` is null inside arrays and for the outermost object; `one_line` keeps the container's
  // values on its first line.
  Json& open(const char* key, char bracket, bool one_line = false) {
    next(key);
    std::fputc(bracket, out_);
    levels_.push_back({true, one_line || (!levels_.empty() && levels_.back().one_line)});
    return *this;
  }
  Json& close(char bracket) {
    const Level level = levels_.back();
    levels_.pop_back();
    if (!level.one_line && !level.first) newline();
    std::fputc(bracket, out_);
    if (levels_.empty()) std::fputc('\n', out_);
    return *this;
  }
  Json& value(const char* key, double number) {
    next(key);
    if (!std::isfinite(number))
      std::fputs("null", out_);
    else if (number == std::floor(number) && std::abs(number) < 9007199254740992.0)
      std::fprintf(out_, "%.0f", number);
    else
      std::fprintf(out_, "%.9g", number);
    return *this;
  }
  Json& value(const char* key, bool flag) {
    next(key);
    std::fputs(flag ? "true" : "false", out_);
    return *this;
  }
  Json& value(const char* key, const std::string& text) {
    next(key);
    string(text);
    return *this;
  }
  Json& value(const char* key, const char* text) { return value(key, std::string(text)); }

 private:
  struct Level {
    bool first, one_line;
  };
  void newline() { std::fprintf(out_, "\n%*s", 2 * static_cast<int>(levels_.size()), ""); }
  // The separator and key of the next value.
  void next(const char* key) {
    if (!levels_.empty()) {
      Level& level = levels_.back();
      if (!level.first) std::fputc(',', out_);
      if (level.one_line) {
        if (!level.first) std::fputc(' ', out_);
      } else {
        newline();
      }
      level.first = false;
    }
    if (key != nullptr) {
      string(key);
      std::fputs(": ", out_);
    }
  }
  void string(const std::string& text) {
    std::fputc('"', out_);
    for (const char ch : text) {
      const unsigned char c = static_cast<unsigned char>(ch);
      if (c == '"' || c == '\\')
        std::fprintf(out_, "\\%c", c);
      else if (c < 0x20)
        std::fprintf(out_, "\\u%04x", c);
      else
        std::fputc(c, out_);  // UTF-8 passes through as it is
    }
    std::fputc('"', out_);
  }

  std::FILE* out_;
  std::vector<Level> levels_;
};

// A timing in seconds: its summary, and every run.
void json_timing(Json& json, const char* key, const Timing& t) {
  json.open(key, '{', true)
      .value("median", t.median())
      .value("q1", t.q1())
      .value("q3", t.q3())
      .value("min", t.best())
      .value("max", t.runs.back())
      .value("iqr_fraction", t.spread())
      .open("runs", '[');
  for (const double run : t.runs) json.value(nullptr, run);
  json.close(']').close('}');
}

void json_peak_sample(Json& json, const char* key, const PeakSample& p) {
  json.open(key, '{')
      .value("fma_flops_per_second", p.flops_per_second())
      .value("read_bytes_per_second", p.bytes_per_second())
      .value("flops_per_burst", p.flops_per_burst)
      .value("bytes_per_pass", p.bytes_per_pass);
  json_timing(json, "fma_seconds", p.fma);
  json_timing(json, "read_seconds", p.read);
  json.close('}');
}

// Every figure print_tables prints, and the stages' times. Times are in seconds (the tables show
// ms), rates per second, fractions of the best peak.
void write_json(std::FILE* out, const Results& r, const Log& log) {
  const Settings& s = r.settings;
  Json json(out);
  json.open(nullptr, '{').value("program", "compare_variants");
  json.open("settings", '{', true)
      .value("model_dim", static_cast<double>(s.model_dim))
      .value("heads", static_cast<double>(s.heads))
      .value("head_dim", static_cast<double>(r.head_dim))
      .value("groups", static_cast<double>(s.groups))
      .value("latent", static_cast<double>(s.latent))
      .value("rope_dim", static_cast<double>(s.rope_dim))
      .value("tokens", static_cast<double>(s.tokens))
      .value("context", static_cast<double>(s.context))
      .value("threads_requested", static_cast<double>(s.threads))
      .value("kernel", s.kernel == multihead::KernelChoice::fused ? "fused" : "reference")
      .value("prefill_runs", static_cast<double>(kPrefillRuns))
      .value("decode_steps", static_cast<double>(kDecodeSteps))
      .close('}');
  json.value("isa", multihead::isa_name())
      .value("peak_isa", bench::peak_isa())
      .value("threads", static_cast<double>(r.threads));
  json.open("machine", '{')
      .value("fma_flops_per_second", r.peaks.flops_per_second())
      .value("read_bytes_per_second", r.peaks.bytes_per_second());
  json_peak_sample(json, "before", r.peaks.before);
  json_peak_sample(json, "after", r.peaks.after);
  json.close('}');

  json.open("prefill", '[');
  for (const PrefillRow& row : r.prefill) {
    const double median = row.time.median();
    json.open(nullptr, '{', true)
        .value("variant", row.name)
        .value("attention", row.attention)
        .value("error_against_fp32", row.error)
        .value("heads", static_cast<double>(row.heads))
        .value("kv_groups", static_cast<double>(row.groups))
        .value("parameters", static_cast<double>(row.parameters))
        .value("flops", row.flops)
        .value("tokens_per_second", s.tokens / median)
        .value("flops_per_second", row.flops_per_second())
        .value("fraction_of_fma_peak", row.flops_per_second() / r.peaks.flops_per_second());
    json_timing(json, "seconds", row.time);
    json.close('}');
  }
  json.close(']');

  json.open("decode", '[');
  for (const DecodeRow& row : r.decode) {
    const double median = row.time.median();
    json.open(nullptr, '{', true)
        .value("variant", row.name)
        .value("storage", row.storage)
        .value("kv_bytes_per_token", static_cast<double>(row.kv_bytes_per_token))
        .value("kv_bytes_at_context", static_cast<double>(row.kv_bytes_per_token) * s.context)
        .value("bytes_read_per_step", row.bytes_read)
        .value("tokens_per_second", 1.0 / median)
        .value("bytes_per_second", row.bytes_per_second())
        .value("fraction_of_read_peak", row.bytes_per_second() / r.peaks.bytes_per_second())
        .value("output_error_vs_fp32_cache", row.error_random)
        .value("output_error_vs_fp32_cache_outlier_channels", row.error_outliers);
    json_timing(json, "seconds", row.time);
    json.close('}');
  }
  json.close(']');

  json.open("ranks", '{')
      .value("svd_rows", static_cast<double>(r.ranks.svd_rows))
      .value("svd_cols", static_cast<double>(r.ranks.svd_cols))
      .value("tokens", static_cast<double>(r.ranks.tokens))
      .open("rows", '[');
  for (const RankRow& row : r.ranks.rows)
    json.open(nullptr, '{', true)
        .value("rank", static_cast<double>(row.rank))
        .value("bf16_kv_bytes_per_token", static_cast<double>(row.kv_bytes_per_token))
        .value("weight_error", row.weight_error)
        .value("output_error", row.output_error)
        .close('}');
  json.close(']').close('}');

  json.open("stages", '[');
  for (const Stage& stage : log.stages())
    json.open(nullptr, '{', true)
        .value("stage", stage.what)
        .value("seconds", stage.seconds)
        .value("waited_for_cpu_fraction", stage.waited)
        .value("timed", stage.timed)
        .close('}');
  json.close(']');
  json.value("wall_seconds", r.wall_seconds)
      .value("cpu_seconds", r.cpu_seconds)
      .value("busy_fraction", kBusyFraction)
      .value("busy", !log.warnings().empty());
  json.open("busy_tests", '[');
  for (const std::string& test : busy_tests()) json.value(nullptr, test);
  json.close(']');
  json.open("warnings", '[');
  for (const std::string& warning : log.warnings()) json.value(nullptr, warning);
  json.close(']').close('}');
}

}  // namespace

int main(int argc, char** argv) {
  using namespace multihead;
  const auto start = std::chrono::steady_clock::now();
  Results results;
  Settings& settings = results.settings;
  bool help = false;
  if (!parse(argc, argv, settings, help)) {
    print_usage(stderr);
    return 2;
  }
  if (help) {
    print_usage(stdout);
    return 0;
  }
  if (settings.heads <= 0 || settings.model_dim % settings.heads != 0) {
    std::fprintf(stderr, "compare_variants: heads (%lld) must be positive and divide model dim (%lld)\n",
                 settings.heads, settings.model_dim);
    return 2;
  }

  LayerConfig config;
  config.model_dim = settings.model_dim;
  config.heads = settings.heads;
  config.head_dim = settings.model_dim / settings.heads;
  config.causal = true;

  if (settings.tokens <= 0 || settings.context <= 0) {
    std::fprintf(stderr, "compare_variants: tokens (%lld) and context (%lld) must be positive\n",
                 settings.tokens, settings.context);
    return 2;
  }

  LatentConfig latent;
  latent.model_dim = settings.model_dim;
  latent.heads = settings.heads;
  latent.latent_dim = settings.latent;
  latent.nope_dim = config.head_dim;
  latent.rope_dim = settings.rope_dim;
  latent.value_dim = config.head_dim;
  latent.causal = true;

  // The dense layers differ in their KV groups only. All four configs are checked now, so that a
  // flag the library rejects fails at once, not after the stages before its layer.
  LayerConfig mha_config = config, gqa_config = config, mqa_config = config;
  mha_config.kv_groups = settings.heads;
  gqa_config.kv_groups = settings.groups;
  mqa_config.kv_groups = 1;
  try {
    for (const LayerConfig* dense : {&mha_config, &gqa_config, &mqa_config}) dense->validate();
    latent.validate();
  } catch (const std::exception& error) {
    std::fprintf(stderr, "compare_variants: %s\n", error.what());
    return 2;
  }

  // Opened now, so that a path that cannot be written fails before the run, not after it.
  std::FILE* json = nullptr;
  if (!settings.json.empty() && (json = std::fopen(settings.json.c_str(), "w")) == nullptr) {
    std::fprintf(stderr, "compare_variants: cannot write %s: %s\n", settings.json.c_str(),
                 std::strerror(errno));
    return 2;
  }

  results.threads = resolve_threads(settings.threads);
  results.head_dim = config.head_dim;
  const int threads = results.threads;
  Log log(threads);
  try {
    results.peaks.before = log.stage(
        format("measuring the machine's FMA rate and read bandwidth on %s",
               counted(threads, "thread").c_str()),
        [&] { return measure_peaks(threads, log); });
    measure<MHA>("MHA", mha_config, settings, log, results.prefill, results.decode);
    measure<GQA>("GQA", gqa_config, settings, log, results.prefill, results.decode);
    measure<MQA>("MQA", mqa_config, settings, log, results.prefill, results.decode);
    measure<MLA>("MLA", latent, settings, log, results.prefill, results.decode);
    results.ranks = measure_ranks(mha_config, settings, log);
    results.peaks.after = log.stage("measuring the machine's peaks again", [&] {
      PeakSample after = measure_peaks(threads, log);
      judge_drift("FMA", "GFLOP/s", results.peaks.before.flops_per_second(),
                  after.flops_per_second(), log);
      judge_drift("read", "GB/s", results.peaks.before.bytes_per_second(),
                  after.bytes_per_second(), log);
      return after;
    });
  } catch (const std::exception& error) {
    std::fprintf(stderr, "compare_variants: %s\n", error.what());
    if (json != nullptr) {
      std::fclose(json);
      std::remove(settings.json.c_str());  // empty: it would pass for a run's results
    }
    return 2;
  }
  results.wall_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  results.cpu_seconds = cpu_seconds();
  const long long warnings = static_cast<long long>(log.warnings().size());
  std::fprintf(stderr, "compare_variants: done in %.1f s (%.1f s of CPU)%s\n", results.wall_seconds,
               results.cpu_seconds,
               warnings == 0 ? ""
                             : (", with " + counted(warnings, "warning") + ": the machine was busy")
                                   .c_str());

  print_tables(results, log.warnings());
  if (json != nullptr) {
    write_json(json, results, log);
    if (std::fclose(json) != 0) {
      std::fprintf(stderr, "compare_variants: writing %s failed\n", settings.json.c_str());
      return 2;
    }
  }
  return 0;
}

// compare_variants: builds MHA, GQA, MQA and MLA layers of one model size and compares what they
// cost: parameters and the time of a prefill over random input; then, per cache storage (fp32,
// bf16), the cache's bytes per token and at a context length, and the time of a decode step —
// one token through the whole layer (projections, cache append, attention over the context).
// Last, the MHA layer turned into MLA by a truncated SVD of its K/V projections at several ranks:
// what each rank saves in cache and what it changes in the output.
//
//   compare_variants [--model-dim N] [--heads N] [--groups N] [--latent N] [--rope-dim N]
//                    [--tokens N] [--context N] [--threads N] [--kernel fused|reference]
//
// The defaults are DeepSeek-V2-Lite's attention: model dim 2048, 16 heads of 128; its MLA caches
// a 512-value latent and a 64-value RoPE key per token (heads 128 + 64 for q·k, 128 for v). The
// dense layers get the same model dim and heads, so the four differ only in what they cache.
//
// Caches are filled with random values directly (a prefill of the whole context would take longer
// than the decode it sets up and measure nothing new); the steps then run through forward(x, cache,
// y). A decode step reads all weights and the whole cache once and does little arithmetic per
// byte, so it is memory-bound: GB/s is those bytes over the step's time, to hold against the
// machine's read bandwidth.
#include <multihead/multihead.hpp>
#include <multihead/latent_from_dense.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

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
};

void print_usage(std::FILE* out) {
  std::fprintf(out,
               "usage: compare_variants [options]\n"
               "Compares MHA, GQA, MQA and MLA layers of the same model size on a prefill and on\n"
               "decode steps over fp32 and bf16 caches, and MHA turned into MLA by SVD.\n"
               "  --model-dim N  model dimension (default 2048)\n"
               "  --heads N      query heads; head dim = model dim / heads (default 16)\n"
               "  --groups N     KV groups of the GQA layer (default 4)\n"
               "  --latent N     latent dim of the MLA layer (default 512)\n"
               "  --rope-dim N   RoPE key dim of the MLA layer, even (default 64)\n"
               "  --tokens N     prefill length (default 512)\n"
               "  --context N    tokens in the KV cache when decoding (default 8192)\n"
               "  --threads N    threads, 0 for all (default 0)\n"
               "  --kernel K     prefill kernel: fused or reference (default fused)\n"
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

// Times of a prefill and of decode steps: medians over this many runs, after the warm-ups.
constexpr int kPrefillRuns = 3, kPrefillWarmups = 1;
constexpr int kDecodeSteps = 16, kDecodeWarmups = 2;

double median(std::vector<double> times) {
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

template <class F>
double seconds(F&& run) {
  const auto start = std::chrono::steady_clock::now();
  run();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

struct PrefillRow {
  std::string name;
  long long heads, groups, parameters;
  double seconds;
};

struct DecodeRow {
  std::string name, storage;
  long long kv_bytes_per_token;
  double seconds;
  double bytes_read;  // per step: the fp32 weights and the cache at the context length
};

// The forward options of a layer: ForwardOptions for the dense ones, LatentForwardOptions for MLA.
template <class Layer>
auto forward_options(const Layer&, const Settings& settings) {
  using Options = std::conditional_t<std::is_same_v<Layer, multihead::MLA>,
                                     multihead::LatentForwardOptions, multihead::ForwardOptions>;
  Options options;
  options.threads = settings.threads;
  options.kernel = settings.kernel;
  return options;
}

// KV groups as the prefill table shows them: MLA's latent is one shared "group".
long long kv_groups_of(const multihead::LayerConfig& c) { return c.kv_groups; }
long long kv_groups_of(const multihead::LatentConfig&) { return 1; }

template <class Layer>
PrefillRow measure_prefill(const char* name, Layer& layer, const Settings& settings) {
  using namespace multihead;
  const RowMatrix x = RowMatrix::Random(settings.tokens, layer.config().model_dim);
  RowMatrix y;
  const auto options = forward_options(layer, settings);
  std::vector<double> times;
  for (int run = 0; run < kPrefillWarmups + kPrefillRuns; ++run) {
    const double t = seconds([&] { layer.forward(x, y, options); });
    if (run >= kPrefillWarmups) times.push_back(t);
  }
  return {name, layer.config().heads, kv_groups_of(layer.config()), layer.parameter_count(),
          median(times)};
}

// Appends `tokens` tokens of random K/V to the cache, a chunk at a time from one random chunk.
template <class Storage>
void fill_cache(multihead::KvCache<Storage>& cache, std::int64_t tokens) {
  using multihead::TensorView;
  constexpr std::int64_t kChunk = 256;
  const std::int64_t groups = cache.kv_groups(), d = cache.head_dim(), dv = cache.value_dim();
  const Eigen::VectorXf k = Eigen::VectorXf::Random(kChunk * groups * d);
  const Eigen::VectorXf v = Eigen::VectorXf::Random(kChunk * groups * dv);
  for (std::int64_t done = 0; done < tokens;) {
    const std::int64_t n = std::min(kChunk, tokens - done);
    cache.append(TensorView<const float>(k.data(), n * groups * d, 1, n, groups, d),
                 TensorView<const float>(v.data(), n * groups * dv, 1, n, groups, dv));
    done += n;
  }
}

// The same for a latent cache: random latents and RoPE keys, a chunk at a time.
template <class Storage>
void fill_cache(multihead::LatentCache<Storage>& cache, std::int64_t tokens) {
  using multihead::TensorView;
  constexpr std::int64_t kChunk = 256;
  const std::int64_t dc = cache.latent_dim(), dr = cache.rope_dim();
  const Eigen::VectorXf c = Eigen::VectorXf::Random(kChunk * dc);
  const Eigen::VectorXf r = Eigen::VectorXf::Random(kChunk * dr + 1);
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

// Median time of single-token steps of one sequence over a cache holding `context` tokens.
template <class Storage, class Layer>
DecodeRow measure_decode(const char* name, const char* storage, Layer& layer,
                         const Settings& settings) {
  using namespace multihead;
  auto cache = make_cache<Storage>(layer.config(), settings.context + kDecodeWarmups + kDecodeSteps);
  fill_cache(cache, settings.context);
  const RowMatrix x = RowMatrix::Random(1, layer.config().model_dim);
  RowMatrix y;
  const auto options = forward_options(layer, settings);
  std::vector<double> times;
  for (int step = 0; step < kDecodeWarmups + kDecodeSteps; ++step) {
    const double t = seconds([&] { layer.forward(x, cache, y, options); });
    if (step >= kDecodeWarmups) times.push_back(t);
  }
  const double bytes = 4.0 * static_cast<double>(layer.parameter_count()) +
                       static_cast<double>(cache.bytes_per_token()) * settings.context;
  return {name, storage, cache.bytes_per_token(), median(times), bytes};
}

// One layer of the variant: its prefill, then decoding over an fp32 and a bf16 cache.
template <class Layer, class Config>
void measure(const char* name, const Config& config, const Settings& settings,
             std::vector<PrefillRow>& prefill, std::vector<DecodeRow>& decode) {
  Layer layer(config);
  layer.init_random(42);
  prefill.push_back(measure_prefill(name, layer, settings));
  decode.push_back(measure_decode<float>(name, "fp32", layer, settings));
  decode.push_back(measure_decode<multihead::bf16>(name, "bf16", layer, settings));
}

struct RankRow {
  long long rank, kv_bytes_per_token;
  double weight_error, output_error;
};

// The MHA layer as MLA at ranks from full down to 1/16 of it: the relative error of the stacked
// K/V weights the SVD reports, and the relative error of the outputs on random input (max|Δy| /
// max|y| over `tokens` tokens, causal).
std::vector<RankRow> measure_ranks(const multihead::MHA& mha, const Settings& settings) {
  using namespace multihead;
  const RowMatrix x = RowMatrix::Random(std::min<long long>(settings.tokens, 64), mha.config().model_dim);
  ForwardOptions dense_options;
  dense_options.threads = settings.threads;
  MHA dense = mha;
  const RowMatrix y = dense.forward(x, dense_options);
  const std::int64_t full = std::min<std::int64_t>(
      mha.config().kv_groups * (mha.config().head_dim + mha.config().v_dim()),
      mha.config().model_dim);
  std::vector<RankRow> rows;
  for (std::int64_t rank = full; rank >= std::max<std::int64_t>(1, full / 16); rank /= 2) {
    LatentConversion conversion = latent_from_dense(mha, LatentRank::fixed(rank));
    LatentForwardOptions options;
    options.threads = settings.threads;
    const RowMatrix approx = conversion.layer.forward(x, options);
    rows.push_back({rank, conversion.layer.kv_cache_bytes_per_token(2), conversion.relative_error,
                    (approx - y).cwiseAbs().maxCoeff() / y.cwiseAbs().maxCoeff()});
  }
  return rows;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace multihead;
  Settings settings;
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

  std::vector<PrefillRow> prefill;
  std::vector<DecodeRow> decode;
  std::vector<RankRow> ranks;
  try {
    config.kv_groups = settings.heads;
    measure<MHA>("MHA", config, settings, prefill, decode);
    config.kv_groups = settings.groups;
    measure<GQA>("GQA", config, settings, prefill, decode);
    config.kv_groups = 1;
    measure<MQA>("MQA", config, settings, prefill, decode);
    measure<MLA>("MLA", latent, settings, prefill, decode);
    config.kv_groups = settings.heads;
    MHA mha(config);
    mha.init_random(42);
    ranks = measure_ranks(mha, settings);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "compare_variants: %s\n", error.what());
    return 2;
  }

  std::printf("multihead compare_variants: model dim %lld, %lld heads of dim %lld, causal, fp32 "
              "weights, %s prefill kernel, %d threads, %s path\n\n",
              settings.model_dim, settings.heads, static_cast<long long>(config.head_dim),
              settings.kernel == KernelChoice::fused ? "fused" : "reference",
              resolve_threads(settings.threads), isa_name());
  std::printf("Prefill of %lld tokens:\n", settings.tokens);
  std::printf("%-8s %6s %10s %12s %12s %12s\n", "variant", "heads", "kv groups", "parameters",
              "prefill ms", "tokens/s");
  for (const PrefillRow& row : prefill)
    std::printf("%-8s %6lld %10lld %11.1fM %12.1f %12.0f\n", row.name.c_str(), row.heads,
                row.groups, row.parameters / 1e6, row.seconds * 1e3,
                settings.tokens / row.seconds);

  std::printf("\nDecode, one sequence, one token per step, at a context of %lld tokens:\n",
              settings.context);
  std::printf("%-8s %6s %16s %16s %12s %12s %10s\n", "variant", "cache", "KV bytes/token",
              "KV MiB @context", "ms/token", "tokens/s", "GB/s");
  for (const DecodeRow& row : decode)
    std::printf("%-8s %6s %16lld %16.1f %12.3f %12.1f %10.1f\n", row.name.c_str(),
                row.storage.c_str(), row.kv_bytes_per_token,
                static_cast<double>(row.kv_bytes_per_token) * settings.context / (1 << 20),
                row.seconds * 1e3, 1.0 / row.seconds, row.bytes_read / row.seconds / 1e9);

  std::printf("\nKV bytes: what one layer caches per token (MLA: its latent and RoPE key). "
              "Prefill: median of %d runs. Decode:\nmedian of %d steps; a step runs the whole "
              "layer and reads the cache with decode_attention (MLA: absorbed, over the\n"
              "latents). GB/s: the fp32 weights and the cache a step reads, over its time. MLA: "
              "latent %lld, RoPE key %lld,\nheads %lld + %lld for q.k and %lld for v.\n",
              kPrefillRuns, kDecodeSteps, settings.latent, settings.rope_dim,
              static_cast<long long>(latent.nope_dim), settings.rope_dim,
              static_cast<long long>(latent.value_dim));

  std::printf("\nMHA turned into MLA by a truncated SVD of its stacked K/V projection (no RoPE "
              "key), by latent rank:\n");
  std::printf("%8s %22s %18s %18s\n", "rank", "bf16 KV bytes/token", "weight error", "output error");
  for (const RankRow& row : ranks)
    std::printf("%8lld %22lld %18.2e %18.2e\n", row.rank, row.kv_bytes_per_token,
                row.weight_error, row.output_error);
  std::printf("weight error: ||W - W_r|| / ||W|| (Frobenius) of W = [Wk; Wv]; output error: "
              "max|y_MLA - y_MHA| / max|y_MHA| on random input.\nThe layers' weights are random "
              "(flat spectrum): a trained layer's K/V projections concentrate their energy in "
              "fewer directions.\n");
  return 0;
}

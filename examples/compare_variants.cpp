// compare_variants: builds MHA, GQA and MQA layers of one model size and compares what they cost:
// parameters, KV-cache bytes per token, and the time of a prefill over random input.
//
//   compare_variants [--model-dim N] [--heads N] [--groups N] [--tokens N] [--threads N]
#include <multihead/multihead.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

struct Settings {
  long long model_dim = 4096;
  long long heads = 32;
  long long groups = 8;   // the GQA layer's KV groups
  long long tokens = 512;
  int threads = 0;        // 0: all OpenMP threads
  multihead::KernelChoice kernel = multihead::KernelChoice::fused;
};

void print_usage(std::FILE* out) {
  std::fprintf(out,
               "usage: compare_variants [options]\n"
               "Compares MHA, GQA and MQA layers of the same model size on a prefill.\n"
               "  --model-dim N  model dimension (default 4096)\n"
               "  --heads N      query heads; head dim = model dim / heads (default 32)\n"
               "  --groups N     KV groups of the GQA layer (default 8)\n"
               "  --tokens N     prefill length (default 512)\n"
               "  --threads N    threads, 0 for all (default 0)\n"
               "  --kernel K     attention kernel: fused or reference (default fused)\n"
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
                        : flag == "--tokens"  ? &settings.tokens
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

struct Row {
  std::string name;
  long long heads, groups, parameters, kv_bytes_per_token;
  double prefill_seconds;
};

// Median wall time of a few prefills, after one that warms up caches and workspaces.
template <class Layer>
Row measure(const char* name, const multihead::LayerConfig& config, const Settings& settings) {
  using namespace multihead;
  Layer layer(config);
  layer.init_random(42);
  const RowMatrix x = RowMatrix::Random(settings.tokens, config.model_dim);
  RowMatrix y;
  ForwardOptions options;
  options.threads = settings.threads;
  options.kernel = settings.kernel;
  layer.forward(x, y, options);
  std::vector<double> times;
  for (int run = 0; run < 3; ++run) {
    const auto start = std::chrono::steady_clock::now();
    layer.forward(x, y, options);
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  return {name, config.heads, config.kv_groups, layer.parameter_count(),
          layer.kv_cache_bytes_per_token(), times[times.size() / 2]};
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

  std::vector<Row> rows;
  try {
    config.kv_groups = settings.heads;
    rows.push_back(measure<MHA>("MHA", config, settings));
    config.kv_groups = settings.groups;
    rows.push_back(measure<GQA>("GQA", config, settings));
    config.kv_groups = 1;
    rows.push_back(measure<MQA>("MQA", config, settings));
  } catch (const std::exception& error) {
    std::fprintf(stderr, "compare_variants: %s\n", error.what());
    return 2;
  }

  std::printf("multihead compare_variants: model dim %lld, %lld heads of dim %lld, prefill of %lld "
              "tokens, causal, fp32, %s kernel, %d threads, %s path\n\n",
              settings.model_dim, settings.heads, static_cast<long long>(config.head_dim),
              settings.tokens,
              settings.kernel == KernelChoice::fused ? "fused" : "reference",
              resolve_threads(settings.threads), isa_name());
  std::printf("%-8s %6s %10s %12s %16s %12s %12s\n", "variant", "heads", "kv groups",
              "parameters", "KV bytes/token", "prefill ms", "tokens/s");
  for (const Row& row : rows)
    std::printf("%-8s %6lld %10lld %11.1fM %16lld %12.1f %12.0f\n", row.name.c_str(), row.heads,
                row.groups, row.parameters / 1e6, row.kv_bytes_per_token,
                row.prefill_seconds * 1e3, settings.tokens / row.prefill_seconds);
  std::printf("\nKV bytes/token: K and V of one layer in fp32. Times: median of 3 prefills.\n");
  return 0;
}

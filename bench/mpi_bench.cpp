// Context parallelism's benchmarks (distributed/mpi.hpp), run under mpirun: a decode step over a
// sharded 65,536-token bf16 cache (local decode_attention, then merge_shards) and a causal
// ring-attention prefill of 8,192 tokens; GQA 32/8, head_dim 128. Compare 2 ranks of one thread
// with one process of two:
//
//   OMP_NUM_THREADS=1 mpirun -np 2 --bind-to core multihead_mpi_bench
//   OMP_NUM_THREADS=2 mpirun -np 1 --bind-to none multihead_mpi_bench
//
// Every rank runs every iteration in step (fixed iteration counts: Google Benchmark's adaptive
// counts would let the ranks disagree on how many collectives to make); an iteration's time is
// the slowest rank's, from a barrier. Rank 0 reports.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <random>
#include <vector>

#include <multihead/distributed/mpi.hpp>
#include <multihead/multihead.hpp>

namespace {

constexpr std::int64_t kHeads = 32, kGroups = 8, kDim = 128;

std::vector<float> random_floats(std::int64_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> out(static_cast<std::size_t>(n));
  for (float& x : out) x = u(rng);
  return out;
}

int rank() { return multihead::detail::mpi_rank(MPI_COMM_WORLD); }
int ranks() { return multihead::detail::mpi_size(MPI_COMM_WORLD); }

// Times `call` on every rank from a barrier; the iteration's time is the slowest rank's.
template <class Call>
void timed(benchmark::State& state, Call&& call) {
  for (auto _ : state) {
    MPI_Barrier(MPI_COMM_WORLD);
    const double start = MPI_Wtime();
    call();
    double mine = MPI_Wtime() - start, slowest = 0.0;
    MPI_Allreduce(&mine, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    state.SetIterationTime(slowest);
  }
}

void decode_step(benchmark::State& state) {
  const std::int64_t tokens = state.range(0);
  const std::int64_t begin = tokens * rank() / ranks();
  const std::int64_t length = tokens * (rank() + 1) / ranks() - begin;
  multihead::KvCache<multihead::bf16> cache(1, std::max<std::int64_t>(length, 1), kGroups, kDim);
  const auto k = random_floats(length * kGroups * kDim, 1 + unsigned(rank()));
  const multihead::TensorView<const float> kv(k.data(), length * kGroups * kDim, 1, length,
                                              kGroups, kDim);
  if (length > 0) cache.append(kv, kv);
  const auto q = random_floats(kHeads * kDim, 99);
  std::vector<float> o(kHeads * kDim), lse(kHeads);
  const multihead::TensorView<const float> q_view(q.data(), kHeads * kDim, 1, 1, kHeads, kDim);
  const multihead::TensorView<float> o_view(o.data(), kHeads * kDim, 1, 1, kHeads, kDim);
  timed(state, [&] {
    multihead::decode_attention(q_view, cache, o_view, {}, {lse.data(), kHeads});
    multihead::merge_shards(MPI_COMM_WORLD, o_view, {lse.data(), kHeads});
  });
  // The cache bytes read, over all ranks: bytes/s reads against peak/read of multihead_bench.
  state.SetBytesProcessed(state.iterations() * tokens * kGroups * 2 * kDim * 2);
  state.SetLabel(std::to_string(ranks()) + " rank(s)");
}

void prefill(benchmark::State& state) {
  const std::int64_t tokens = state.range(0);
  const multihead::ZigzagShard shard = multihead::zigzag_shard(tokens, ranks(), rank());
  const std::int64_t n = shard.tokens();
  const auto q = random_floats(n * kHeads * kDim, 7 + unsigned(rank()));
  const auto kv = random_floats(n * kGroups * kDim, 17 + unsigned(rank()));
  std::vector<float> o(static_cast<std::size_t>(n * kHeads * kDim));
  multihead::KernelOptions options;
  options.causal = true;
  timed(state, [&] {
    multihead::ring_attention(
        MPI_COMM_WORLD, tokens,
        multihead::TensorView<const float>(q.data(), n * kHeads * kDim, 1, n, kHeads, kDim),
        multihead::TensorView<const float>(kv.data(), n * kGroups * kDim, 1, n, kGroups, kDim),
        multihead::TensorView<const float>(kv.data(), n * kGroups * kDim, 1, n, kGroups, kDim),
        multihead::TensorView<float>(o.data(), n * kHeads * kDim, 1, n, kHeads, kDim), options);
  });
  // Causal: half of 4·L²·H·d multiply-adds' flops.
  state.counters["flops"] = benchmark::Counter(
      double(state.iterations()) * 2.0 * double(tokens) * double(tokens) * kHeads * kDim,
      benchmark::Counter::kIsRate);
  state.SetLabel(std::to_string(ranks()) + " rank(s)");
}

BENCHMARK(decode_step)->Name("mpi/decode")->Arg(65536)->Iterations(20)->Repetitions(5)
    ->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(prefill)->Name("mpi/prefill")->Arg(8192)->Iterations(2)->Repetitions(3)
    ->UseManualTime()->Unit(benchmark::kMillisecond);

// Rank 0 reports; the others run the same iterations silently.
class Silent : public benchmark::BenchmarkReporter {
 public:
  bool ReportContext(const Context&) override { return true; }
  void ReportRuns(const std::vector<Run>&) override {}
};

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  benchmark::Initialize(&argc, argv);
  if (rank() == 0) {
    benchmark::RunSpecifiedBenchmarks();
  } else {
    Silent silent;
    benchmark::RunSpecifiedBenchmarks(&silent);
  }
  benchmark::Shutdown();
  MPI_Finalize();
  return 0;
}

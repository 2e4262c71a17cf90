// Context parallelism over MPI (distributed/mpi.hpp): a decode step over a KV cache sharded
// across the ranks, and a ring-attention prefill of a prompt split zig-zag across them, with
// the time per call and the bytes each rank sends. Run it on N ranks, or on one process with
// several threads to compare:
//
//   mpirun -np 2 context_parallel [decode_tokens = 65536] [prefill_tokens = 8192] [threads = 1]
//   mpirun -np 1 context_parallel 65536 8192 2
//
// Shapes: GQA 32 query heads over 8 KV heads, head_dim 128; the cache in bf16, the prompt in
// fp32. Medians of 9 calls (3 for the prefill), each timed from a barrier to the slowest rank.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <multihead/distributed/mpi.hpp>
#include <multihead/multihead.hpp>
#include <random>
#include <vector>

namespace {

constexpr std::int64_t kHeads = 32, kGroups = 8, kDim = 128;

std::vector<float> random_floats(std::int64_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> out(static_cast<std::size_t>(n));
  for (float& x : out) x = u(rng);
  return out;
}

// The median over `runs` of the slowest rank's time of `call`, in seconds.
template <class Call>
double median_seconds(int runs, Call&& call) {
  std::vector<double> times;
  for (int i = 0; i < runs; ++i) {
    MPI_Barrier(MPI_COMM_WORLD);
    const double start = MPI_Wtime();
    call();
    double mine = MPI_Wtime() - start, slowest = 0.0;
    MPI_Allreduce(&mine, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    times.push_back(slowest);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  const int rank = multihead::detail::mpi_rank(MPI_COMM_WORLD);
  const int ranks = multihead::detail::mpi_size(MPI_COMM_WORLD);
  const std::int64_t decode_tokens = argc > 1 ? std::atoll(argv[1]) : 65536;
  const std::int64_t prefill_tokens = argc > 2 ? std::atoll(argv[2]) : 8192;
  multihead::KernelOptions options;
  options.threads = argc > 3 ? std::atoi(argv[3]) : 1;

  // Decode: this rank's slice of the cache, one new token's queries, the merge.
  const std::int64_t begin = decode_tokens * rank / ranks;
  const std::int64_t length = decode_tokens * (rank + 1) / ranks - begin;
  multihead::KvCache<multihead::bf16> cache(1, std::max<std::int64_t>(length, 1), kGroups, kDim);
  {
    const auto k = random_floats(length * kGroups * kDim, 1 + unsigned(rank));
    const multihead::TensorView<const float> view(k.data(), length * kGroups * kDim, 1, length,
                                                  kGroups, kDim);
    if (length > 0) cache.append(view, view);
  }
  const auto q = random_floats(kHeads * kDim, 99);
  std::vector<float> o(kHeads * kDim), lse(kHeads);
  const multihead::TensorView<const float> q_view(q.data(), kHeads * kDim, 1, 1, kHeads, kDim);
  const multihead::TensorView<float> o_view(o.data(), kHeads * kDim, 1, 1, kHeads, kDim);
  const double decode = median_seconds(9, [&] {
    multihead::decode_attention(q_view, cache, o_view, options, {lse.data(), kHeads});
    multihead::merge_shards(MPI_COMM_WORLD, o_view, {lse.data(), kHeads});
  });

  // Prefill: this rank's zig-zag shard of the prompt, causal.
  const multihead::ZigzagShard shard = multihead::zigzag_shard(prefill_tokens, ranks, rank);
  const std::int64_t n = shard.tokens();
  const auto pq = random_floats(n * kHeads * kDim, 7 + unsigned(rank));
  const auto pk = random_floats(n * kGroups * kDim, 17 + unsigned(rank));
  std::vector<float> po(std::size_t(n * kHeads * kDim));
  options.causal = true;
  const double prefill = median_seconds(3, [&] {
    multihead::ring_attention(
        MPI_COMM_WORLD, prefill_tokens,
        multihead::TensorView<const float>(pq.data(), n * kHeads * kDim, 1, n, kHeads, kDim),
        multihead::TensorView<const float>(pk.data(), n * kGroups * kDim, 1, n, kGroups, kDim),
        multihead::TensorView<const float>(pk.data(), n * kGroups * kDim, 1, n, kGroups, kDim),
        multihead::TensorView<float>(po.data(), n * kHeads * kDim, 1, n, kHeads, kDim), options);
  });

  if (rank == 0) {
    std::printf("%d rank(s) x %d thread(s); GQA %lld/%lld, head_dim %lld\n", ranks, options.threads,
                static_cast<long long>(kHeads), static_cast<long long>(kGroups),
                static_cast<long long>(kDim));
    std::printf(
        "decode step over %lld cached bf16 tokens: %.3f ms; each rank sends %lld bytes "
        "(its o and lse) once\n",
        static_cast<long long>(decode_tokens), decode * 1e3,
        static_cast<long long>(kHeads * (kDim + 1) * 4));
    std::printf(
        "causal prefill of %lld tokens: %.2f ms; each rank sends %d messages of its K/V "
        "chunks, about %lld bytes each\n",
        static_cast<long long>(prefill_tokens), prefill * 1e3, ranks - 1,
        static_cast<long long>(prefill_tokens / ranks * kGroups * 2 * kDim * 4));
  }
  MPI_Finalize();
  return 0;
}

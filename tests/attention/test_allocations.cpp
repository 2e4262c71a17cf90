// The kernels allocate nothing once a call's shapes have been seen: attention runs once per
// layer and token, and a fresh page costs about 12 µs on first touch. This binary's global
// operator new counts its calls (every std::vector and plain `new` goes through it), and the
// tests count what repeated calls on one thread allocate.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#include <multihead/multihead.hpp>

#include "support/naive_reference.hpp"

namespace {
std::atomic<long> allocations{0};
}  // namespace

// The aligned forms (AlignedBuffer: the caches) are not counted; caches are made outside the
// calls counted.
// None of the three is inlined: GCC would then see malloc's pointer reach operator delete, or
// free() given operator new's, and warn of a mismatch.
[[gnu::noinline]] void* operator new(std::size_t size) {
  allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
[[gnu::noinline]] void operator delete(void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace {

using multihead::TensorView;
using naive::random_vector;

// Heap allocations made by `calls` further runs of `step`, after one run to warm up.
template <class Step>
long allocations_in_repeats(Step&& step, int calls = 3) {
  step();
  const long before = allocations.load();
  for (int i = 0; i < calls; ++i) step();
  return allocations.load() - before;
}

TEST(Allocations, CountingOperatorNewSeesVectors) {
  // The counter itself works: a vector's storage is one allocation.
  const long before = allocations.load();
  std::vector<float> v(100);
  EXPECT_EQ(allocations.load() - before, 1) << v.size();
}

// The fused kernel at a fixed-dim shape (128) and a general one (96, value dim 80), causal GQA.
TEST(Allocations, RepeatedFusedCallsAllocateNothing) {
  for (const std::int64_t d : {128, 96}) {
    const std::int64_t dv = d == 128 ? 128 : 80, L = 100, H = 8, G = 2;
    const std::vector<float> q = random_vector(L * H * d, 1), k = random_vector(L * G * d, 2),
                             v = random_vector(L * G * dv, 3);
    std::vector<float> o(static_cast<std::size_t>(L * H * dv));
    multihead::KernelOptions options;
    options.threads = 1;  // one thread: the same thread runs every unit of every call
    options.causal = true;
    const long count = allocations_in_repeats([&] {
      multihead::fused_attention(TensorView<const float>(q.data(), q.size(), 1, L, H, d),
                                 TensorView<const float>(k.data(), k.size(), 1, L, G, d),
                                 TensorView<const float>(v.data(), v.size(), 1, L, G, dv),
                                 TensorView<float>(o.data(), o.size(), 1, L, H, dv), options);
    });
    EXPECT_EQ(count, 0) << "head dim " << d;
  }
}

// Decode over a bf16 cache, over float views and over head-major float views, with 4 rows per
// KV group (the row-major tiles, which read bf16 rows in place) and 32 (MQA: the transposed
// tiles, which widen bf16 rows into the thread's scratch).
TEST(Allocations, RepeatedDecodeCallsAllocateNothing) {
  for (const std::int64_t H : {8, 32}) {
    SCOPED_TRACE("heads " + std::to_string(H));
    const std::int64_t L = 300, G = H == 8 ? 2 : 1, d = 128;
    multihead::KvCache<multihead::bf16> cache(1, L, G, d);
    const std::vector<float> k = random_vector(L * G * d, 4), v = random_vector(L * G * d, 5),
                             q = random_vector(H * d, 6);
    cache.append(TensorView<const float>(k.data(), k.size(), 1, L, G, d),
                 TensorView<const float>(v.data(), v.size(), 1, L, G, d));
    std::vector<float> o(static_cast<std::size_t>(H * d));
    multihead::KernelOptions options;
    options.threads = 1;
    const TensorView<const float> q_view(q.data(), q.size(), 1, 1, H, d);
    const TensorView<float> o_view(o.data(), o.size(), 1, 1, H, d);
    EXPECT_EQ(allocations_in_repeats(
                  [&] { multihead::decode_attention(q_view, cache, o_view, options); }),
              0);
    const std::int64_t size = L * G * d;
    for (const bool head_major : {false, true}) {
      const std::int64_t token = head_major ? d : G * d, group = head_major ? L * d : d;
      const auto view = [&](const std::vector<float>& x) {
        return TensorView<const float>::strided(x.data(), size, 1, L, G, d, size, token, group);
      };
      EXPECT_EQ(allocations_in_repeats([&] {
                  multihead::decode_attention<float>(q_view, view(k), view(v), o_view, options);
                }),
                0)
          << (head_major ? "head-major" : "token-major") << " views";
    }
  }
}

}  // namespace

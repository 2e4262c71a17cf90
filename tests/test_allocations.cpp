// The kernels allocate nothing once a call's shapes have been seen: attention runs once per
// layer and token, and a fresh page costs about 12 µs on first touch. This binary's global
// operator new counts its calls (every std::vector and plain `new` goes through it), and the
// tests count what repeated calls on one thread allocate.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <vector>

#include <multihead/multihead.hpp>

namespace {
std::atomic<long> allocations{0};
}  // namespace

// The aligned forms (AlignedBuffer: the caches) are not counted; caches are made outside the
// calls counted.
void* operator new(std::size_t size) {
  allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
// Not inlined: GCC would then see free() given operator new's pointer and warn of a mismatch.
[[gnu::noinline]] void operator delete(void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace {

using multihead::TensorView;

// Heap allocations made by `calls` further runs of `step`, after one run to warm up.
template <class Step>
long allocations_in_repeats(Step&& step, int calls = 3) {
  step();
  const long before = allocations.load();
  for (int i = 0; i < calls; ++i) step();
  return allocations.load() - before;
}

std::vector<float> filled(std::int64_t n) {
  std::vector<float> x(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) x[std::size_t(i)] = float((i * 37) % 101) / 101.0f - 0.5f;
  return x;
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
    const std::vector<float> q = filled(L * H * d), k = filled(L * G * d), v = filled(L * G * dv);
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

// Decode over a bf16 cache and over float views (4 rows per group: the row-major tiles, which
// read bf16 rows in place; their per-group state lives in the thread's scratch).
TEST(Allocations, RepeatedDecodeCallsAllocateNothing) {
  const std::int64_t L = 300, H = 8, G = 2, d = 128;
  multihead::KvCache<multihead::bf16> cache(1, L, G, d);
  const std::vector<float> k = filled(L * G * d), v = filled(L * G * d), q = filled(H * d);
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
  EXPECT_EQ(allocations_in_repeats([&] {
              multihead::decode_attention<float>(
                  q_view, TensorView<const float>(k.data(), k.size(), 1, L, G, d),
                  TensorView<const float>(v.data(), v.size(), 1, L, G, d), o_view, options);
            }),
            0);
}

}  // namespace

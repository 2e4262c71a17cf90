// The thread-safety contract (README, "Threads"), under ThreadSanitizer: kernels may be called
// from several threads at once over shared inputs; caches may be read (decoded over) from several
// threads at once; layers are one per thread. Built without OpenMP (tests/CMakeLists.txt), so
// the calls run on the library's ThreadPool (one caller's call at a time; a call that finds it
// busy runs on its caller) and every race TSan sees is between our callers' threads or the
// pool's, never a false report from the OpenMP runtime. Each thread's result must equal the same call
// made alone, bit for bit.
#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

#include <multihead/multihead.hpp>

#include "support/naive_reference.hpp"

namespace {

using multihead::KernelOptions;
using multihead::TensorView;

constexpr int kThreads = 4;

// Runs `work(t)` on kThreads threads at once and returns each one's result.
std::vector<std::vector<float>> concurrently(const std::function<std::vector<float>(int)>& work) {
  std::vector<std::vector<float>> results(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back([&, t] { results[std::size_t(t)] = work(t); });
  for (std::thread& thread : threads) thread.join();
  return results;
}

struct Problem {
  std::int64_t batch = 2, q_len = 17, kv_len = 130, heads = 8, groups = 2, d = 64;
  std::vector<float> q = naive::random_vector(std::size_t(batch * q_len * heads * d), 1);
  std::vector<float> k = naive::random_vector(std::size_t(batch * kv_len * groups * d), 2);
  std::vector<float> v = naive::random_vector(std::size_t(batch * kv_len * groups * d), 3);

  TensorView<const float> q_view() const {
    return {q.data(), std::int64_t(q.size()), batch, q_len, heads, d};
  }
  TensorView<const float> k_view() const {
    return {k.data(), std::int64_t(k.size()), batch, kv_len, groups, d};
  }
  TensorView<const float> v_view() const {
    return {v.data(), std::int64_t(v.size()), batch, kv_len, groups, d};
  }
  std::int64_t o_size() const { return batch * q_len * heads * d; }
};

TEST(Concurrency, KernelsOverSharedInputs) {
  const Problem p;
  KernelOptions options;
  options.causal = true;
  options.threads = 1;
  // Thread t runs kernel t % 3: fused, decode and reference side by side, and each twice.
  const auto run = [&](int t) {
    std::vector<float> o(std::size_t(p.o_size()));
    const TensorView<float> out(o.data(), p.o_size(), p.batch, p.q_len, p.heads, p.d);
    if (t % 3 == 0) multihead::fused_attention(p.q_view(), p.k_view(), p.v_view(), out, options);
    if (t % 3 == 1) multihead::decode_attention<float>(p.q_view(), p.k_view(), p.v_view(), out, options);
    if (t % 3 == 2) multihead::reference_attention(p.q_view(), p.k_view(), p.v_view(), out, options);
    return o;
  };
  const std::vector<std::vector<float>> results = concurrently(run);
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(results[std::size_t(t)], run(t)) << "thread " << t;
}

TEST(Concurrency, DecodingReadsOneCacheFromManyThreads) {
  const Problem p;
  multihead::KvCache<multihead::bf16> cache(p.batch, p.kv_len, p.groups, p.d);
  cache.append(p.k_view(), p.v_view());
  multihead::PagedKvCache<multihead::fp16> paged(40, 16, p.groups, p.d);
  const std::int64_t ids[] = {paged.add_sequence(), paged.add_sequence()};
  for (std::int64_t b = 0; b < p.batch; ++b) {
    const std::int64_t row = p.kv_len * p.groups * p.d;
    paged.append(ids[b], TensorView<const float>(p.k.data() + b * row, row, 1, p.kv_len, p.groups, p.d),
                 TensorView<const float>(p.v.data() + b * row, row, 1, p.kv_len, p.groups, p.d));
  }
  KernelOptions options;
  options.threads = 1;
  const auto run = [&](int t) {
    const std::int64_t q_size = p.batch * p.heads * p.d;
    std::vector<float> o(static_cast<std::size_t>(q_size));
    const TensorView<const float> q(p.q.data(), q_size, p.batch, 1, p.heads, p.d);
    const TensorView<float> out(o.data(), q_size, p.batch, 1, p.heads, p.d);
    if (t % 2 == 0)
      multihead::decode_attention(q, cache, out, options);
    else
      multihead::decode_attention(q, paged, {ids, 2}, out, options);
    return o;
  };
  const std::vector<std::vector<float>> results = concurrently(run);
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(results[std::size_t(t)], run(t)) << "thread " << t;
}

// Layers keep workspaces: one per thread (here, each built from the same config and seed).
TEST(Concurrency, OneLayerPerThread) {
  multihead::LayerConfig config;
  config.model_dim = 128;
  config.heads = 8;
  config.kv_groups = 2;
  config.head_dim = 16;
  const std::int64_t tokens = 24;
  const std::vector<float> input = naive::random_vector(std::size_t(tokens * config.model_dim), 9);
  const auto run = [&](int) {
    multihead::GQA layer(config);
    layer.init_random(5);
    const multihead::RowMatrix x = Eigen::Map<const multihead::RowMatrix>(
        input.data(), tokens, config.model_dim);
    multihead::ForwardOptions options;
    options.threads = 1;
    multihead::RowMatrix y = layer.forward(x, options);
    // And incrementally, over a cache of its own: a prefill, then one step.
    multihead::KvCache<float> cache(1, tokens + 1, config.kv_groups, config.head_dim);
    multihead::RowMatrix step;
    layer.forward(x, cache, step, options);
    layer.forward(x.topRows(1), cache, step, options);
    std::vector<float> out(y.data(), y.data() + y.size());
    out.insert(out.end(), step.data(), step.data() + step.size());
    return out;
  };
  const std::vector<std::vector<float>> results = concurrently(run);
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(results[std::size_t(t)], run(t)) << "thread " << t;
}

}  // namespace

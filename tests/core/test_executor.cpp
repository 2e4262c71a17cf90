// Executors (core/executor.hpp): an engine's own threads run every parallel step of a call that
// names them, every work unit exactly once, with results bitwise those of the default
// executor; the std::thread pool keeps its contract (each unit once, worker indices in range
// and never shared by two units at once, a run from inside a run does not deadlock).
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include <multihead/multihead.hpp>

#include "support/naive_reference.hpp"

namespace {

using multihead::Executor;
using multihead::KernelOptions;
using multihead::TensorView;
using multihead::ThreadPool;
using multihead::UnitWork;

// An engine's executor, over a ThreadPool of its own: counts what it is given and checks that
// every unit of every run is called exactly once, with a worker index in range.
class CountingExecutor final : public Executor {
 public:
  explicit CountingExecutor(int threads) : pool_(threads) {}
  int workers() const override { return pool_.workers(); }
  void run(std::int64_t units, int workers, UnitWork work) override {
    ++runs;
    std::vector<std::atomic<int>> calls(static_cast<std::size_t>(units));
    std::atomic<bool> bad_worker{false};
    auto counted = [&](int worker, std::int64_t unit) {
      if (worker < 0 || worker >= workers) bad_worker = true;
      ++calls[static_cast<std::size_t>(unit)];
      work(worker, unit);
    };
    pool_.run(units, workers, UnitWork(counted));
    for (const auto& c : calls) EXPECT_EQ(c.load(), 1);
    EXPECT_FALSE(bad_worker.load());
    total_units += units;
  }
  int runs = 0;
  std::int64_t total_units = 0;

 private:
  ThreadPool pool_;
};

struct Problem {
  std::int64_t batch = 2, q_len = 67, kv_len = 300, heads = 8, groups = 2, d = 64;
  std::vector<float> q = naive::random_vector(std::size_t(batch * q_len * heads * d), 1);
  std::vector<float> k = naive::random_vector(std::size_t(batch * kv_len * groups * d), 2);
  std::vector<float> v = naive::random_vector(std::size_t(batch * kv_len * groups * d), 3);
  TensorView<const float> qv() const { return {q.data(), std::int64_t(q.size()), batch, q_len, heads, d}; }
  TensorView<const float> kv() const { return {k.data(), std::int64_t(k.size()), batch, kv_len, groups, d}; }
  TensorView<const float> vv() const { return {v.data(), std::int64_t(v.size()), batch, kv_len, groups, d}; }
  std::vector<float> out() const { return std::vector<float>(q.size(), std::nanf("")); }
  TensorView<float> ov(std::vector<float>& o) const { return {o.data(), std::int64_t(o.size()), batch, q_len, heads, d}; }
};

// Each kernel and a layer, through the default executor and through an engine's: every unit
// run once by the engine's threads, the same bits.
TEST(Executor, KernelsAndLayersRunOnTheCallersThreadsWithTheDefaultsBits) {
  const Problem p;
  CountingExecutor engine(3);
  const auto both = [&](const char* what, auto call) {
    SCOPED_TRACE(what);
    KernelOptions options;
    options.threads = 2;  // decode's split points depend on the count: the same for both
    options.causal = true;
    std::vector<float> a = p.out(), b = p.out();
    call(options, a);
    const int runs = engine.runs;
    options.executor = &engine;
    call(options, b);
    EXPECT_GT(engine.runs, runs);
    EXPECT_EQ(a, b);
  };
  both("fused", [&](const KernelOptions& o, std::vector<float>& out) {
    multihead::fused_attention(p.qv(), p.kv(), p.vv(), p.ov(out), o);
  });
  both("decode", [&](const KernelOptions& o, std::vector<float>& out) {
    multihead::decode_attention(p.qv(), p.kv(), p.vv(), p.ov(out), o);
  });
  both("reference", [&](const KernelOptions& o, std::vector<float>& out) {
    multihead::reference_attention(p.qv(), p.kv(), p.vv(), p.ov(out), o);
  });

  // Large enough that Eigen would split a projection over threads of its own, were it let.
  multihead::LayerConfig config;
  config.model_dim = 512;
  config.heads = 8;
  config.kv_groups = 2;
  config.head_dim = 64;
  multihead::GQA layer(config);
  layer.init_random(5);
  const multihead::RowMatrix x = multihead::RowMatrix::Random(256, 512);
  multihead::RowMatrix y1, y2;
  multihead::ForwardOptions options;
  options.threads = 2;
  layer.forward(x, y1, options);
  const int runs = engine.runs;
  options.executor = &engine;
  layer.forward(x, y2, options);
  EXPECT_GT(engine.runs, runs + 3);  // projections and attention
  EXPECT_EQ(y1, y2);
}

// An exception from a unit (a custom modifier's hook) reaches the caller through any executor.
TEST(Executor, AnExceptionInAUnitReachesTheCaller) {
  const Problem p;
  ThreadPool pool(2);
  KernelOptions options;
  options.executor = &pool;
  struct Throwing {
    float logit(float, const multihead::ScoreSite&) const { throw std::runtime_error("hook"); }
  } throwing;
  options.modifier = multihead::ModifierRef(throwing);
  std::vector<float> o = p.out();
  EXPECT_THROW(multihead::fused_attention(p.qv(), p.kv(), p.vv(), p.ov(o), options),
               std::runtime_error);
}

TEST(ThreadPool, EveryUnitOnceOnDistinctWorkers) {
  ThreadPool pool(4);
  EXPECT_EQ(pool.workers(), 4);
  for (int workers : {1, 2, 3, 4}) {
    const std::int64_t units = 1000;
    std::vector<std::atomic<int>> calls(units);
    std::vector<std::atomic<int>> busy(4);
    std::atomic<bool> shared{false}, out_of_range{false};
    auto body = [&](int worker, std::int64_t unit) {
      if (worker < 0 || worker >= workers) {
        out_of_range = true;
        return;
      }
      if (busy[std::size_t(worker)]++ != 0) shared = true;
      ++calls[std::size_t(unit)];
      --busy[std::size_t(worker)];
    };
    pool.run(units, workers, UnitWork(body));
    for (const auto& c : calls) ASSERT_EQ(c.load(), 1);
    EXPECT_FALSE(shared.load());
    EXPECT_FALSE(out_of_range.load());
  }
}

TEST(ThreadPool, ARunFromInsideARunCompletes) {
  ThreadPool pool(2);
  std::atomic<std::int64_t> inner{0};
  auto leaf = [&](int, std::int64_t) { ++inner; };
  auto outer = [&](int, std::int64_t) { pool.run(10, 2, UnitWork(leaf)); };
  pool.run(4, 2, UnitWork(outer));
  EXPECT_EQ(inner.load(), 40);
}

TEST(ThreadPool, CallersOnSeveralThreadsAtOnce) {
  ThreadPool pool(2);
  std::atomic<std::int64_t> total{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < 4; ++t)
    callers.emplace_back([&] {
      auto body = [&](int, std::int64_t) { ++total; };
      for (int i = 0; i < 50; ++i) pool.run(20, 2, UnitWork(body));
    });
  for (std::thread& c : callers) c.join();
  EXPECT_EQ(total.load(), 4 * 50 * 20);
}

}  // namespace

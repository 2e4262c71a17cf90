// An engine that owns its threads runs multihead's kernels and layers on them.
//
// The engine here has a task queue served by a fixed team of std::threads, as a server keeps
// one for everything it does. multihead splits each parallel step into independent work units
// and hands them to an Executor (multihead/core/executor.hpp); this one posts one task per
// worker to the engine's queue, each task taking units from a shared counter until none are
// left. Nothing else in the engine changes, and no second team of threads (OpenMP's) competes
// with the engine's for the cores.
//
// It checks its own result: the same layer forward through the default executor gives the
// same bits.
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include <multihead/multihead.hpp>

namespace {

// The engine's own pool: tasks in, run by whichever thread is free.
class EnginePool {
 public:
  explicit EnginePool(int threads) {
    for (int i = 0; i < threads; ++i) team_.emplace_back([this] { serve(); });
  }
  ~EnginePool() {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    ready_.notify_all();
    for (std::thread& t : team_) t.join();
  }
  int size() const { return int(team_.size()); }
  void post(std::function<void()> task) {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      tasks_.push_back(std::move(task));
    }
    ready_.notify_one();
  }

 private:
  void serve() {
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        ready_.wait(lock, [&] { return stopping_ || !tasks_.empty(); });
        if (tasks_.empty()) return;
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      task();
    }
  }

  std::vector<std::thread> team_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> tasks_;
  bool stopping_ = false;
};

// multihead's view of the engine's pool. The calling thread takes units too, so a step never
// waits for a free engine thread to begin.
class EngineExecutor final : public multihead::Executor {
 public:
  explicit EngineExecutor(EnginePool& pool) : pool_(pool) {}
  int workers() const override { return pool_.size() + 1; }

  void run(std::int64_t units, int workers, multihead::UnitWork work) override {
    std::atomic<std::int64_t> next{0};
    std::mutex mutex;
    std::condition_variable finished;
    int running = workers - 1;
    const auto take_units = [&](int worker) {
      for (std::int64_t unit = next++; unit < units; unit = next++) work(worker, unit);
    };
    for (int worker = 1; worker < workers; ++worker)
      pool_.post([&, worker] {
        take_units(worker);
        const std::lock_guard<std::mutex> lock(mutex);
        if (--running == 0) finished.notify_one();
      });
    take_units(0);
    std::unique_lock<std::mutex> lock(mutex);
    finished.wait(lock, [&] { return running == 0; });
  }

 private:
  EnginePool& pool_;
};

}  // namespace

int main() {
  EnginePool engine(1);  // with the calling thread: two workers, one per core here
  EngineExecutor executor(engine);

  multihead::LayerConfig config;
  config.model_dim = 1024;
  config.heads = 16;
  config.kv_groups = 4;
  config.head_dim = 64;
  multihead::GQA layer(config);
  layer.init_random(1);
  const multihead::RowMatrix x = multihead::RowMatrix::Random(256, config.model_dim);

  multihead::ForwardOptions options;
  options.threads = 2;
  const multihead::RowMatrix by_default = layer.forward(x, options);
  options.executor = &executor;  // the only change: whose threads run the call
  const multihead::RowMatrix by_engine = layer.forward(x, options);

  const bool same = by_default == by_engine;
  std::printf("layer forward of 256 tokens on the engine's threads: %s the default executor's\n",
              same ? "the same bits as" : "DIFFERENT from");
  return same ? 0 : 1;
}

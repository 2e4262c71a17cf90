// A continuous-batching loop, as an inference server runs one attention layer of its model:
// requests of different prompt lengths arrive, their prompts are prefilled in chunks mixed with
// the running requests' decode steps, one call per step (Attention::forward over sequences), and
// finished requests release their blocks of the paged bf16 KV pool for the next ones.
//
// The "model" is one GQA layer (32 query heads, 8 K/V heads, d 128, a rope); a request's next
// input row is derived from its last output row, so every step depends on the one before.
// Prints the steps, tokens per second, and checks at the end that one request's outputs equal
// a run of that request alone (the batch changes nothing but the speed).
//
//   serve_batch [requests] [threads]
#include <multihead/multihead.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <random>
#include <vector>

namespace {

using multihead::RowMatrix;

constexpr std::int64_t kModel = 1024, kBlock = 16, kTokenBudget = 512, kMaxRunning = 8;

struct Request {
  std::int64_t id = 0, prompt = 0, generate = 0;
  RowMatrix prompt_rows;   // [prompt, model]
  std::int64_t fed = 0;    // prompt rows fed so far
  std::int64_t produced = 0;
  std::int64_t sequence = -1;  // its sequence in the pool while running
  Eigen::RowVectorXf next;  // the next decode input
  std::vector<float> last_outputs;  // its final output row (for the check)
};

// The next input from an output row: normalised, as a stand-in for sampling and embedding.
Eigen::RowVectorXf next_input(const Eigen::Ref<const Eigen::RowVectorXf>& y) {
  return y / std::max(y.norm() / std::sqrt(float(kModel)), 1e-6f);
}

multihead::GQA make_layer() {
  multihead::LayerConfig config;
  config.model_dim = kModel;
  config.heads = 32;
  config.kv_groups = 8;
  config.head_dim = 128;
  config.causal = true;
  config.rope = multihead::RopeConfig{};
  multihead::GQA layer(config);
  layer.init_random(7);
  return layer;
}

// Serves `requests` until all are done; returns the final output row of request 0.
std::vector<float> serve(multihead::GQA& layer, std::vector<Request> requests, int threads,
                         bool verbose) {
  std::int64_t pool_tokens = 0;
  for (const Request& r : requests)
    pool_tokens = std::max(pool_tokens, r.prompt + r.generate);
  multihead::PagedKvCache<multihead::bf16> cache(kMaxRunning * (pool_tokens / kBlock + 1), kBlock,
                                                 8, 128);
  std::deque<Request*> waiting;
  for (Request& r : requests) waiting.push_back(&r);
  std::vector<Request*> running;
  multihead::ForwardOptions options;
  options.threads = threads;
  RowMatrix x, y;
  std::vector<std::int64_t> cu, ids, counts;
  std::vector<Request*> in_step;
  std::int64_t steps = 0, tokens = 0, prefill_tokens = 0;
  const auto start = std::chrono::steady_clock::now();
  while (!waiting.empty() || !running.empty()) {
    // Admit requests while there is room for their whole sequence.
    while (!waiting.empty() && std::int64_t(running.size()) < kMaxRunning &&
           cache.free_blocks() * kBlock >=
               waiting.front()->prompt + waiting.front()->generate + kBlock) {
      waiting.front()->sequence = cache.add_sequence();
      running.push_back(waiting.front());
      waiting.pop_front();
    }
    // The step: a decode token for every request past its prompt, then prompt chunks from the
    // budget that is left.
    in_step.clear();
    counts.clear();
    std::int64_t budget = kTokenBudget;
    for (Request* r : running)
      if (r->fed == r->prompt) {
        in_step.push_back(r);
        counts.push_back(1);
        --budget;
      }
    for (Request* r : running)
      if (r->fed < r->prompt && budget > 0) {
        in_step.push_back(r);
        counts.push_back(std::min(budget, r->prompt - r->fed));
        budget -= counts.back();
      }
    x.resize(kTokenBudget, kModel);
    cu = {0};
    ids.clear();
    for (std::size_t i = 0; i < in_step.size(); ++i) {
      Request* r = in_step[i];
      if (r->fed == r->prompt) {
        x.row(cu.back()) = r->next;
      } else {
        x.middleRows(cu.back(), counts[i]) = r->prompt_rows.middleRows(r->fed, counts[i]);
        prefill_tokens += counts[i];
      }
      cu.push_back(cu.back() + counts[i]);
      ids.push_back(r->sequence);
    }
    const std::int64_t rows = cu.back();
    layer.forward(x.topRows(rows), multihead::Span<const std::int64_t>{cu.data(), std::int64_t(cu.size())},
                  cache, multihead::Span<const std::int64_t>{ids.data(), std::int64_t(ids.size())},
                  y, options);
    // Each request's last row of this step gives its next input once its prompt is in.
    for (std::size_t i = 0; i < in_step.size(); ++i) {
      Request* r = in_step[i];
      const std::int64_t n = cu[i + 1] - cu[i];
      if (r->fed < r->prompt) r->fed += n;
      else ++r->produced;
      if (r->fed == r->prompt) r->next = next_input(y.row(cu[i + 1] - 1));
      if (r->produced == r->generate) {
        const auto row = y.row(cu[i + 1] - 1);
        r->last_outputs.assign(row.data(), row.data() + kModel);
        cache.release(r->sequence);
      }
    }
    running.erase(std::remove_if(running.begin(), running.end(),
                                 [](Request* r) { return r->produced == r->generate; }),
                  running.end());
    ++steps;
    tokens += rows;
    if (verbose && steps % 16 == 1)
      std::printf("step %4lld: %3zu sequences, %4lld tokens, %zu waiting, %lld free blocks\n",
                  static_cast<long long>(steps), in_step.size(), static_cast<long long>(rows),
                  waiting.size(), static_cast<long long>(cache.free_blocks()));
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (verbose)
    std::printf("%lld steps, %lld tokens (%lld prefill, %lld decode) in %.2f s: %.0f tokens/s, "
                "%.0f decode tokens/s\n",
                static_cast<long long>(steps), static_cast<long long>(tokens),
                static_cast<long long>(prefill_tokens),
                static_cast<long long>(tokens - prefill_tokens), seconds, tokens / seconds,
                (tokens - prefill_tokens) / seconds);
  return requests.front().last_outputs;
}

}  // namespace

int main(int argc, char** argv) {
  const int count = argc > 1 ? std::atoi(argv[1]) : 24;
  const int threads = argc > 2 ? std::atoi(argv[2]) : 0;
  std::mt19937 generator(2026);
  std::uniform_int_distribution<std::int64_t> prompt(50, 1500), generate(8, 48);
  std::vector<Request> requests(static_cast<std::size_t>(std::max(count, 1)));
  for (std::size_t i = 0; i < requests.size(); ++i) {
    Request& r = requests[i];
    r.id = std::int64_t(i);
    r.prompt = prompt(generator);
    r.generate = generate(generator);
    r.prompt_rows = RowMatrix::Random(r.prompt, kModel);
  }
  multihead::GQA layer = make_layer();
  std::printf("serving %zu requests (prompts of 50 to 1500 tokens, 8 to 48 generated), at most "
              "%lld at once, %lld tokens per step\n",
              requests.size(), static_cast<long long>(kMaxRunning),
              static_cast<long long>(kTokenBudget));
  const std::vector<float> batched = serve(layer, requests, threads, true);
  // Request 0 served alone: its own chunks and steps, the same outputs up to the cache's
  // rounding being identical (bf16 K/V either way) and fp32 summation order.
  const std::vector<float> alone = serve(layer, {requests.front()}, threads, false);
  float worst = 0.0f;
  for (std::size_t i = 0; i < alone.size(); ++i)
    worst = std::max(worst, std::abs(alone[i] - batched[i]));
  std::printf("request 0 alone vs in the batch: max |difference| %.2e\n", double(worst));
  return worst <= 1e-3f ? 0 : 1;
}

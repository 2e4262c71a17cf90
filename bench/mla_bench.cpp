// The MLA family (see mla_bench.hpp): DeepSeek-V2-Lite's attention over latent caches, the
// naive path, and MHA of the same size.
#include "mla_bench.hpp"

#include <benchmark/benchmark.h>

#include <multihead/multihead.hpp>

#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "attention_buffers.hpp"
#include "peak.hpp"
#include "registration.hpp"
#include "roofline.hpp"

namespace bench {
namespace {

// DeepSeek-V2-Lite's attention dims.
constexpr std::int64_t kHeads = 16, kLatent = 512, kRope = 64, kNope = 128, kValue = 128;
constexpr std::int64_t kRow = kLatent + kRope, kQk = kNope + kRope;

// `count` uniform values in [-1, 1) into `data`.
void fill_uniform(float* data, std::int64_t count, std::mt19937& generator) {
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (std::int64_t i = 0; i < count; ++i) data[i] = uniform(generator);
}

// A step to time, with its work; built (cache filled) outside the timed loop.
class Problem {
 public:
  virtual ~Problem() = default;
  virtual void step(const multihead::KernelOptions& options) = 0;
  virtual Work work() const = 0;
};

// A LatentCache<Storage> of L tokens of random latents and RoPE keys.
template <class Storage>
class LatentProblem : public Problem {
 public:
  explicit LatentProblem(std::int64_t length) : length_(length), cache_(1, length, kLatent, kRope) {
    constexpr std::int64_t kChunk = 256;  // small staging buffers however long the cache
    std::vector<float> rows(static_cast<std::size_t>(kChunk * kRow));
    for (std::int64_t t = 0; t < length; t += kChunk) {
      const std::int64_t n = std::min(kChunk, length - t);
      fill_uniform(rows.data(), n * kRow, generator_);
      const std::int64_t size = n * kRow;
      cache_.append(multihead::TensorView<const float>::strided(rows.data(), size, 1, n, 1, kLatent,
                                                                size, kRow, kLatent),
                    multihead::TensorView<const float>::strided(rows.data() + kLatent,
                                                                size - kLatent, 1, n, 1, kRope,
                                                                size, kRow, kRope));
    }
  }

 protected:
  std::int64_t length_;
  std::mt19937 generator_{20240601};
  multihead::LatentCache<Storage> cache_;
};

// The absorbed path: the absorbed queries [1, 1, 16, 576] straight over the latents.
template <class Storage>
class AbsorbedProblem final : public LatentProblem<Storage> {
 public:
  explicit AbsorbedProblem(std::int64_t length)
      : LatentProblem<Storage>(length), q_(kHeads * kRow), o_(kHeads * kLatent) {
    fill_uniform(q_.data(), q_.size(), this->generator_);
  }

  void step(const multihead::KernelOptions& options) override {
    multihead::KernelOptions scaled = options;
    scaled.scale = 1.0f / std::sqrt(static_cast<float>(kQk));  // MLA's: of the per-head q·k
    multihead::decode_attention(
        multihead::TensorView<const float>(q_.data(), q_.size(), 1, 1, kHeads, kRow), this->cache_,
        multihead::TensorView<float>(o_.data(), o_.size(), 1, 1, kHeads, kLatent), scaled);
  }
  Work work() const override {
    const double length = static_cast<double>(this->length_);
    return {2.0 * kHeads * length * (kRow + kLatent), length * kRow * bytes_per_value<Storage>()};
  }

 private:
  AlignedFloats q_, o_;
};

// The naive path: widen the cached rows, up-project every latent into per-head K = [W_UK·c; k_R]
// and V = W_UV·c, then dense decode of the per-head queries [1, 1, 16, 192].
template <class Storage>
class NaiveProblem final : public LatentProblem<Storage> {
 public:
  explicit NaiveProblem(std::int64_t length)
      : LatentProblem<Storage>(length),
        kv_b_(kHeads * (kNope + kValue), kLatent),
        rows_(length, kRow),
        kv_(length, kHeads * (kNope + kValue)),
        k_(length, kHeads * kQk),
        q_(kHeads * kQk),
        o_(kHeads * kValue) {
    fill_uniform(kv_b_.data(), kv_b_.size(), this->generator_);
    fill_uniform(q_.data(), q_.size(), this->generator_);
  }

  void step(const multihead::KernelOptions& options) override {
    const auto cached = this->cache_.keys();
    multihead::parallel_chunks(this->length_, multihead::resolve_threads(options.threads),
                               [&](int, std::int64_t first, std::int64_t last) {
      for (std::int64_t t = first; t < last; ++t)
        multihead::convert(cached.row(0, t, 0), rows_.row(t).data(), cached.dim());
      const Eigen::Index count = last - first;
      kv_.middleRows(first, count).noalias() =
          rows_.middleRows(first, count).leftCols(kLatent) * kv_b_.transpose();
      for (std::int64_t t = first; t < last; ++t)
        for (std::int64_t h = 0; h < kHeads; ++h) {
          float* k = k_.row(t).data() + h * kQk;
          const float* nope = kv_.row(t).data() + h * (kNope + kValue);
          std::copy(nope, nope + kNope, k);
          std::copy(rows_.row(t).data() + kLatent, rows_.row(t).data() + kRow, k + kNope);
        }
    });
    const std::int64_t per_head = kNope + kValue;
    multihead::KernelOptions scaled = options;
    scaled.scale = 1.0f / std::sqrt(static_cast<float>(kQk));
    multihead::decode_attention(
        multihead::TensorView<const float>(q_.data(), q_.size(), 1, 1, kHeads, kQk),
        multihead::TensorView<const float>(k_.data(), k_.size(), 1, this->length_, kHeads, kQk),
        multihead::TensorView<const float>::strided(kv_.data() + kNope, kv_.size() - kNope, 1,
                                                    this->length_, kHeads, kValue,
                                                    this->length_ * kHeads * per_head,
                                                    kHeads * per_head, per_head),
        multihead::TensorView<float>(o_.data(), o_.size(), 1, 1, kHeads, kValue), scaled);
  }
  Work work() const override {
    const double length = static_cast<double>(this->length_);
    return {2.0 * length * kLatent * kHeads * (kNope + kValue) +
                2.0 * kHeads * length * (kQk + kValue),
            length * kRow * sizeof(Storage) + 4.0 * kv_b_.size()};
  }

 private:
  multihead::RowMatrix kv_b_, rows_, kv_, k_;
  AlignedFloats q_, o_;
};

// MHA of the same model dim and heads: 16 K/V heads of 128 in a KvCache.
template <class Storage>
class DenseProblem final : public Problem {
 public:
  explicit DenseProblem(std::int64_t length)
      : length_(length), cache_(1, length, kHeads, kNope), q_(kHeads * kNope), o_(kHeads * kNope) {
    constexpr std::int64_t kChunk = 256;
    std::vector<float> k(static_cast<std::size_t>(kChunk * kHeads * kNope)), v(k.size());
    for (std::int64_t t = 0; t < length; t += kChunk) {
      const std::int64_t n = std::min(kChunk, length - t), size = n * kHeads * kNope;
      fill_uniform(k.data(), size, generator_);
      fill_uniform(v.data(), size, generator_);
      cache_.append(multihead::TensorView<const float>(k.data(), size, 1, n, kHeads, kNope),
                    multihead::TensorView<const float>(v.data(), size, 1, n, kHeads, kNope));
    }
    fill_uniform(q_.data(), q_.size(), generator_);
  }

  void step(const multihead::KernelOptions& options) override {
    multihead::decode_attention(
        multihead::TensorView<const float>(q_.data(), q_.size(), 1, 1, kHeads, kNope), cache_,
        multihead::TensorView<float>(o_.data(), o_.size(), 1, 1, kHeads, kNope), options);
  }
  Work work() const override {
    const double length = static_cast<double>(length_);
    return {4.0 * kHeads * length * kNope, 2.0 * length * kHeads * kNope * sizeof(Storage)};
  }

 private:
  std::int64_t length_;
  std::mt19937 generator_{20240601};
  multihead::KvCache<Storage> cache_;
  AlignedFloats q_, o_;
};

struct MlaCase {
  std::string name;  // without "/threads:<n>"
  std::function<std::unique_ptr<Problem>()> make;
};

void run(benchmark::State& state, const MlaCase& c, int threads) {
  const MachinePeak& peak = machine_peak(threads);
  Problem& problem = last_problem<Problem>(c.name, c.make);
  multihead::KernelOptions options;
  options.threads = threads;
  const double seconds = timed_loop(state, [&] { problem.step(options); });
  report_roofline(state, problem.work(), peak, seconds);
}

template <template <class> class P, class Storage>
MlaCase mla_case(const std::string& family, std::int64_t length) {
  return {family + "/" + storage_name<Storage>() + "/L:" + std::to_string(length),
          [length] { return std::unique_ptr<Problem>(new P<Storage>(length)); }};
}

}  // namespace

void register_mla_benchmarks() {
  std::vector<MlaCase> cases;
  for (const std::int64_t length : {8192, 32768}) {
    cases.push_back(mla_case<AbsorbedProblem, float>("mla_absorbed", length));
    cases.push_back(mla_case<AbsorbedProblem, multihead::bf16>("mla_absorbed", length));
    cases.push_back(mla_case<AbsorbedProblem, multihead::q8>("mla_absorbed", length));
  }
  cases.push_back(mla_case<NaiveProblem, float>("mla_naive", 8192));
  cases.push_back(mla_case<NaiveProblem, multihead::bf16>("mla_naive", 8192));
  for (const std::int64_t length : {8192, 32768}) {
    cases.push_back(mla_case<DenseProblem, float>("mha_decode", length));
    cases.push_back(mla_case<DenseProblem, multihead::bf16>("mha_decode", length));
  }
  for (const MlaCase& c : cases)
    for (int threads : thread_counts())
      configure(benchmark::RegisterBenchmark(with_threads(c.name, threads).c_str(), run, c,
                                             threads));
}

}  // namespace bench

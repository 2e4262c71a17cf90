// Attention<Variant>: an attention layer with its projections, the module users build models of.
//
// Weights follow PyTorch's nn.Linear: a projection from `in` to `out` features is an
// [out, in] row-major matrix W with y = x·Wᵀ + b, so tensors exported from a PyTorch model load
// as they are:
//   Wq [heads·head_dim, model_dim]      Wk [kv_groups·head_dim, model_dim]
//   Wv [kv_groups·value_dim, model_dim] Wo [model_dim, heads·value_dim]
// The input x is [batch·tokens, model_dim], batch-major (the rows of sequence 0, then 1, ...).
// Q = x·Wqᵀ is then exactly the [batch, tokens, heads, head_dim] layout the kernels read.
// With config.rope set, Q and K are rotated by their tokens' positions (rope.hpp) between the
// projections and the kernel: every query head, and every K/V group's key.
//
// Three ways to run a layer:
//   forward(x, y)         the whole sequences at once (training, scoring, a one-shot prefill);
//   forward(x, cache, y)  incrementally, as a decoder generates: x holds the next tokens of each
//                         sequence, their K/V go into a KvCache and their queries attend over
//                         everything cached. Prefilling N tokens and then stepping M single
//                         tokens gives the outputs of one causal forward over the N + M tokens
//                         (equal up to fp32 summation order with a float cache; a bf16 or fp16
//                         cache rounds K and V once, on the way in).
//   forward(x, cu_seqlens, cache, sequences, y)
//                         a server's step: some of a cache's sequences (KvCache slots, or
//                         PagedKvCache ids), each with its own number of new tokens at its own
//                         positions: a prefill chunk beside decode steps, in one call.
//
// Threads: a layer keeps workspaces between calls, so one layer serves one thread at a time:
// use a layer per thread (tests/threads/test_concurrency.cpp). Each call splits its own work
// over ForwardOptions::threads.
#pragma once

#include "../core/eigen.hpp"
#include <cmath>
#include <cstdint>
#include <string_view>
#include <optional>
#include <random>
#include <type_traits>

#include "../attention/fused.hpp"
#include "../attention/options.hpp"
#include "../attention/reference.hpp"
#include "../cache/decode.hpp"
#include "../cache/kv_cache.hpp"
#include "../cache/paged_kv_cache.hpp"
#include "../core/parallel.hpp"
#include "config.hpp"
#include "precision.hpp"
#include "projection.hpp"
#include "rope.hpp"
#include "sequences.hpp"
#include "variant.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {

enum class Projection { q, k, v, o };

inline const char* projection_name(Projection p) {
  switch (p) {
    case Projection::q: return "Wq";
    case Projection::k: return "Wk";
    case Projection::v: return "Wv";
    case Projection::o: return "Wo";
  }
  return "W?";
}

// Hugging Face's names of the four projections (LlamaAttention's modules), and back.
inline const char* hf_projection_name(Projection p) {
  switch (p) {
    case Projection::q: return "q_proj";
    case Projection::k: return "k_proj";
    case Projection::v: return "v_proj";
    case Projection::o: return "o_proj";
  }
  return "?";
}
inline Projection projection_from_hf_name(std::string_view name) {
  for (Projection p : {Projection::q, Projection::k, Projection::v, Projection::o})
    if (name == hf_projection_name(p)) return p;
  detail::fail("'", name, "' is not a projection's name (q_proj, k_proj, v_proj, o_proj)");
}

struct ForwardOptions {
  // x holds batch sequences of x.rows() / batch tokens each. With a KV cache the batch is the
  // cache's: leave this at 1 or set it to cache.batch().
  std::int64_t batch = 1;
  int threads = 0;         // 0: all of the executor's threads
  KernelChoice kernel = KernelChoice::fused;
  // Attention over fresh tokens in fp32, or on Q, K and V rounded to bf16 (precision.hpp).
  Precision precision = Precision::fp32;
  Executor* executor = nullptr;  // whose threads: null for the default (KernelOptions::executor)
  // Per call, as engines make them. causal: set, it overrides the config's for this call.
  // Masks: over [batch, heads, q_len, kv_len] of the call's attention (kv_len: the tokens
  // attended, the cache's length after the append over a cache), broadcast where an extent is 1,
  // as KernelOptions takes them. lse: where to write each attention row's log-sum-exp,
  // [batch, heads, tokens] (natural log, of the scaled and modified scores). All checked
  // before anything, the cache included, is written.
  std::optional<bool> causal = std::nullopt;
  MaskView<float> additive_mask = {};
  MaskView<bool> boolean_mask = {};
  LseOutput lse = {};
};


template <class Variant>
class Attention {
 public:
  // Validates the config (and that its kv_groups suit the variant); weights start at zero.
  explicit Attention(const LayerConfig& config) : config_(config) {
    config_.validate();
    Variant::check(config_);
    if (config_.rope) rope_.emplace(*config_.rope, config_.head_dim);
    if (config_.alibi) alibi_slopes_ = alibi_slopes(config_.heads);
    for (Projection p : {Projection::q, Projection::k, Projection::v, Projection::o}) {
      weight_ref(p).setZero(out_features(p), in_features(p));
      if (has_bias(p)) bias_ref(p).setZero(out_features(p));
    }
  }

  const LayerConfig& config() const noexcept { return config_; }
  static constexpr const char* variant_name() noexcept { return Variant::name; }

  std::int64_t out_features(Projection p) const {
    switch (p) {
      case Projection::q: return config_.heads * config_.head_dim;
      case Projection::k: return config_.kv_groups * config_.head_dim;
      case Projection::v: return config_.kv_groups * config_.v_dim();
      case Projection::o: return config_.model_dim;
    }
    return 0;
  }
  std::int64_t in_features(Projection p) const {
    return p == Projection::o ? config_.heads * config_.v_dim() : config_.model_dim;
  }

  // Whether projection p carries a bias: config.bias, and for o config.o_bias().
  bool has_bias(Projection p) const { return p == Projection::o ? config_.o_bias() : config_.bias; }

  const RowMatrix& weight(Projection p) const { return const_cast<Attention*>(this)->weight_ref(p); }
  // Empty when the config has no bias.
  const Eigen::VectorXf& bias(Projection p) const { return const_cast<Attention*>(this)->bias_ref(p); }

  // Sets one weight from a matrix of shape [out_features, in_features].
  void set_weight(Projection p, const Eigen::Ref<const RowMatrix>& w) {
    check_weight_shape(p, w.rows(), w.cols());
    weight_ref(p) = w;
  }

  // Sets one weight from a row-major [out_features, in_features] buffer of `size` floats.
  void set_weight(Projection p, const float* data, std::int64_t size) {
    check_buffer(projection_name(p), data, size, out_features(p) * in_features(p));
    weight_ref(p) = Eigen::Map<const RowMatrix>(data, out_features(p), in_features(p));
  }
  // The same from bf16 or fp16 values, widened to fp32 at load (precision.hpp).
  template <class T, class = std::enable_if_t<is_half_type_v<T>>>
  void set_weight(Projection p, const T* data, std::int64_t size) {
    check_buffer(projection_name(p), data, size, out_features(p) * in_features(p));
    detail::widen_into(data, size, out_features(p), in_features(p), weight_ref(p));
  }

  // The same by Hugging Face's name of the projection ("q_proj", "k_proj", "v_proj", "o_proj").
  void set_weight(std::string_view hf_name, const Eigen::Ref<const RowMatrix>& w) {
    set_weight(projection_from_hf_name(hf_name), w);
  }
  template <class T>
  void set_weight(std::string_view hf_name, const T* data, std::int64_t size) {
    set_weight(projection_from_hf_name(hf_name), data, size);
  }
  template <class T>
  void set_bias(std::string_view hf_name, const T* data, std::int64_t size) {
    set_bias(projection_from_hf_name(hf_name), data, size);
  }

  // Sets all four weights, checking every shape before changing any.
  void set_weights(const Eigen::Ref<const RowMatrix>& wq, const Eigen::Ref<const RowMatrix>& wk,
                   const Eigen::Ref<const RowMatrix>& wv, const Eigen::Ref<const RowMatrix>& wo) {
    check_weight_shape(Projection::q, wq.rows(), wq.cols());
    check_weight_shape(Projection::k, wk.rows(), wk.cols());
    check_weight_shape(Projection::v, wv.rows(), wv.cols());
    check_weight_shape(Projection::o, wo.rows(), wo.cols());
    wq_ = wq;
    wk_ = wk;
    wv_ = wv;
    wo_ = wo;
  }

  void set_bias(Projection p, const Eigen::Ref<const Eigen::VectorXf>& b) {
    set_bias(p, b.data(), b.size());
  }
  void set_bias(Projection p, const float* data, std::int64_t size) {
    check_has_bias(p);
    check_buffer(projection_name(p), data, size, out_features(p));
    bias_ref(p) = Eigen::Map<const Eigen::VectorXf>(data, size);
  }
  template <class T, class = std::enable_if_t<is_half_type_v<T>>>
  void set_bias(Projection p, const T* data, std::int64_t size) {
    check_has_bias(p);
    check_buffer(projection_name(p), data, size, out_features(p));
    detail::widen_into(data, size, out_features(p), 1, bias_ref(p));
  }

  // Fills weights and biases as nn.Linear's default initialisation does: uniform in
  // [-1/sqrt(in_features), 1/sqrt(in_features)]; the same seed gives the same layer everywhere.
  void init_random(std::uint64_t seed) {
    std::mt19937_64 generator(seed);
    for (Projection p : {Projection::q, Projection::k, Projection::v, Projection::o}) {
      const float bound = 1.0f / std::sqrt(static_cast<float>(in_features(p)));
      detail::fill_uniform(weight_ref(p).template reshaped<Eigen::RowMajor>(), bound, generator);
      detail::fill_uniform(bias_ref(p), bound, generator);
    }
  }

  // y = Attention(x)·Woᵀ + bo for x of shape [batch·tokens, model_dim]; see ForwardOptions.
  RowMatrix forward(const Eigen::Ref<const RowMatrix>& x, const ForwardOptions& options = {}) {
    RowMatrix y;
    forward(x, y, options);
    return y;
  }

  // As above, writing into y (resized to [x.rows(), model_dim] if needed), so that repeated
  // calls of one shape allocate nothing.
  void forward(const Eigen::Ref<const RowMatrix>& x, RowMatrix& y,
               const ForwardOptions& options = {}) {
    detail::check_layer_input(x, config_.model_dim, options.batch, options.threads);
    const std::int64_t batch = options.batch, tokens = x.rows() / batch;
    check_call(options, batch, tokens, tokens);
    const detail::ExecutorScope scope(options.executor);
    const int threads = resolve_threads(options.threads);
    project_inputs(x, threads);
    rotate(batch, tokens, 0);
    attend_fresh(batch, tokens, options, threads);
    detail::project(attended_, wo_, bo_, y, threads);
  }

  // forward(x) over bf16 or fp16 rows: x and y [rows, model_dim] row-major, `rows` = x.size /
  // model_dim; x is widened into an fp32 workspace, y rounded from one (y may be x itself).
  template <class T, class = std::enable_if_t<is_half_type_v<T>>>
  void forward(Span<const T> x, Span<T> y, const ForwardOptions& options = {}) {
    const std::int64_t rows = detail::check_half_rows(x, y, config_.model_dim);
    detail::widen_into(x.data, x.size, rows, config_.model_dim, x32_);
    forward(x32_, y32_, options);
    convert(y32_.data(), y.data, y.size);
  }

  // Incremental forward: x [cache.batch()·tokens, model_dim] holds the next `tokens` tokens of
  // each of the cache's sequences, batch-major (options.batch: 1, meaning the cache's, or
  // cache.batch()). Appends their K and V to the cache, attends their queries over all
  // cache.length() tokens (causal per config, bottom-right aligned, so the new tokens are the last
  // ones), and writes y [x.rows(), model_dim]. A prefill of N tokens into an empty cache followed
  // by M single-token steps gives what forward(x) gives over the N + M tokens with the causal mask.
  // With a rope, the new tokens are at positions cache.length() onwards; their keys are rotated
  // before they are cached.
  //
  // A call into an empty cache (a prefill) attends over the fresh fp32 K/V with options.kernel,
  // as engines do: that is forward(x)'s work, and it does not read back what a bf16 or fp16 cache
  // has just rounded. Every later call (decode steps, further prefill chunks) runs
  // decode_attention over the cache.
  //
  // x, options and the cache's shape and free capacity are all checked before anything is
  // written: on std::invalid_argument the cache and y are as they were. Workspaces are reused,
  // so steps of one shape allocate nothing here.
  template <class Storage>
  void forward(const Eigen::Ref<const RowMatrix>& x, KvCache<Storage>& cache, RowMatrix& y,
               const ForwardOptions& options = {}) {
    check_cache(cache);
    const std::int64_t batch = cache.batch();
    const std::int64_t tokens =
        detail::check_step_input(x, config_.model_dim, options.batch, options.threads, batch,
                                 cache.length(), cache.capacity());
    check_call(options, batch, tokens, cache.length() + tokens);
    const detail::ExecutorScope scope(options.executor);
    const int threads = resolve_threads(options.threads);

    project_inputs(x, threads);
    rotate(batch, tokens, cache.length());
    const bool prefill = cache.length() == 0;
    cache.append(view(k_, batch, tokens, config_.kv_groups, config_.head_dim),
                 view(v_, batch, tokens, config_.kv_groups, config_.v_dim()));
    if (prefill) {
      attend_fresh(batch, tokens, options, threads);
    } else {
      decode_attention(view(q_, batch, tokens, config_.heads, config_.head_dim), cache,
                       output_view(batch, tokens), kernel_options(options, threads), options.lse);
    }
    detail::project(attended_, wo_, bo_, y, threads);
  }

  // As above, returning y.
  template <class Storage>
  RowMatrix forward(const Eigen::Ref<const RowMatrix>& x, KvCache<Storage>& cache,
                    const ForwardOptions& options = {}) {
    RowMatrix y;
    forward(x, cache, y, options);
    return y;
  }

  // As above over bf16 or fp16 rows, as forward(x, y) takes them.
  template <class T, class Storage, class = std::enable_if_t<is_half_type_v<T>>>
  void forward(Span<const T> x, KvCache<Storage>& cache, Span<T> y,
               const ForwardOptions& options = {}) {
    const std::int64_t rows = detail::check_half_rows(x, y, config_.model_dim);
    detail::widen_into(x.data, x.size, rows, config_.model_dim, x32_);
    forward(x32_, cache, y32_, options);
    convert(y32_.data(), y.data, y.size);
  }

  // A continuous batch's step: x [total, model_dim] packs the new tokens of the cache's
  // sequences ids[i] (KvCache slots, PagedKvCache ids; distinct) as rows [cu_seqlens[i],
  // cu_seqlens[i + 1]) (none: the sequence sits this step out). Each sequence's tokens are at
  // its own positions, from its length on: their K/V are appended there (rotated at those
  // positions with a rope), their queries attend over all the sequence holds (causal per config
  // or call, bottom-right), and y [total, model_dim] gets their outputs; sequences not named are
  // untouched. Its prefill and later chunks all read the cache (batch_attention, cache/batch.hpp).
  // options: batch stays 1, kernel and precision do not apply (the cache is read in its own
  // storage), masks are rejected (no per-sequence meaning), lse is [heads, total]. Everything,
  // the room for every sequence's tokens included, is checked before anything is written.
  template <class Storage>
  void forward(const Eigen::Ref<const RowMatrix>& x, Span<const std::int64_t> cu_seqlens,
               KvCache<Storage>& cache, Span<const std::int64_t> ids, RowMatrix& y,
               const ForwardOptions& options = {}) {
    forward_sequences(x, cu_seqlens, cache, ids, y, options);
  }
  template <class Storage>
  void forward(const Eigen::Ref<const RowMatrix>& x, Span<const std::int64_t> cu_seqlens,
               PagedKvCache<Storage>& cache, Span<const std::int64_t> ids, RowMatrix& y,
               const ForwardOptions& options = {}) {
    forward_sequences(x, cu_seqlens, cache, ids, y, options);
  }

  // Cross-attention, as encoder-decoder models run it: queries from x [batch·tokens, model_dim],
  // keys and values from context [batch·context_tokens, model_dim] (an encoder's output), each
  // sequence's queries over its own context. Not causal unless options.causal says so (the
  // config's causal is about a sequence attending to itself), and no rope: the two sequences'
  // positions do not align. options.batch: the sequences in both.
  void forward_cross(const Eigen::Ref<const RowMatrix>& x, const Eigen::Ref<const RowMatrix>& context,
                     RowMatrix& y, const ForwardOptions& options = {}) {
    detail::check_layer_input(x, config_.model_dim, options.batch, options.threads);
    detail::check_layer_input(context, config_.model_dim, options.batch, options.threads);
    const std::int64_t batch = options.batch, tokens = x.rows() / batch;
    const std::int64_t context_tokens = context.rows() / batch;
    check_call(options, batch, tokens, context_tokens, false);
    const detail::ExecutorScope scope(options.executor);
    const int threads = resolve_threads(options.threads);
    detail::project(x, wq_, bq_, q_, threads);
    detail::project(context, wk_, bk_, k_, threads);
    detail::project(context, wv_, bv_, v_, threads);
    attended_.resize(x.rows(), config_.heads * config_.v_dim());
    const std::int64_t d = config_.head_dim;
    fused_attention(view(q_, batch, tokens, config_.heads, d),
                    view(k_, batch, context_tokens, config_.kv_groups, d),
                    view(v_, batch, context_tokens, config_.kv_groups, config_.v_dim()),
                    output_view(batch, tokens), kernel_options(options, threads, false),
                    options.lse);
    detail::project(attended_, wo_, bo_, y, threads);
  }

  // Appends context's keys and values (this layer's Wk and Wv of it, no rope) to a cache, once,
  // for forward_cross over the cache at every later step: an encoder's output cached as
  // decoders keep it. context [cache.batch()·tokens, model_dim].
  template <class Storage>
  void cache_context(const Eigen::Ref<const RowMatrix>& context, KvCache<Storage>& cache,
                     const ForwardOptions& options = {}) {
    check_cache(cache);
    const std::int64_t batch = cache.batch();
    const std::int64_t tokens =
        detail::check_step_input(context, config_.model_dim, options.batch, options.threads,
                                 batch, cache.length(), cache.capacity());
    const detail::ExecutorScope scope(options.executor);
    const int threads = resolve_threads(options.threads);
    detail::project(context, wk_, bk_, k_, threads);
    detail::project(context, wv_, bv_, v_, threads);
    cache.append(view(k_, batch, tokens, config_.kv_groups, config_.head_dim),
                 view(v_, batch, tokens, config_.kv_groups, config_.v_dim()));
  }

  // Cross-attention over keys and values cached elsewhere (cache_context, or an engine's): x's
  // queries over all cache.length() tokens of each sequence; the cache is only read. Not causal
  // unless options.causal says so; no rope.
  template <class Storage>
  void forward_cross(const Eigen::Ref<const RowMatrix>& x, const KvCache<Storage>& cache,
                     RowMatrix& y, const ForwardOptions& options = {}) {
    check_cache(cache);
    const std::int64_t batch = cache.batch();
    detail::require(options.batch == 1 || options.batch == batch, "batch (", options.batch,
                    ") must be 1 (take the cache's) or the cache's batch (", batch, ")");
    detail::check_layer_input(x, config_.model_dim, batch, options.threads);
    const std::int64_t tokens = x.rows() / batch;
    check_call(options, batch, tokens, cache.length(), false);
    const detail::ExecutorScope scope(options.executor);
    const int threads = resolve_threads(options.threads);
    detail::project(x, wq_, bq_, q_, threads);
    attended_.resize(x.rows(), config_.heads * config_.v_dim());
    decode_attention(view(q_, batch, tokens, config_.heads, config_.head_dim), cache,
                     output_view(batch, tokens), kernel_options(options, threads, false),
                     options.lse);
    detail::project(attended_, wo_, bo_, y, threads);
  }

  // Learned parameters: the four weights and, when configured, their biases.
  std::int64_t parameter_count() const {
    std::int64_t count = 0;
    for (Projection p : {Projection::q, Projection::k, Projection::v, Projection::o})
      count += out_features(p) * in_features(p) + (has_bias(p) ? out_features(p) : 0);
    return count;
  }

  // Bytes of K and V a cache keeps per token of context, for elements of the given size.
  std::int64_t kv_cache_bytes_per_token(std::int64_t bytes_per_element = sizeof(float)) const {
    return config_.kv_groups * (config_.head_dim + config_.v_dim()) * bytes_per_element;
  }

 private:
  RowMatrix& weight_ref(Projection p) {
    switch (p) {
      case Projection::q: return wq_;
      case Projection::k: return wk_;
      case Projection::v: return wv_;
      case Projection::o: break;
    }
    return wo_;
  }
  Eigen::VectorXf& bias_ref(Projection p) {
    switch (p) {
      case Projection::q: return bq_;
      case Projection::k: return bk_;
      case Projection::v: return bv_;
      case Projection::o: break;
    }
    return bo_;
  }

  void check_weight_shape(Projection p, std::int64_t rows, std::int64_t cols) const {
    detail::require(rows == out_features(p) && cols == in_features(p), projection_name(p),
                    " shape [", rows, ", ", cols, "] must be [out_features, in_features] = [",
                    out_features(p), ", ", in_features(p), "]");
  }

  // Q, K and V of x into the workspaces, and room for the attended heads.
  void project_inputs(const Eigen::Ref<const RowMatrix>& x, int threads) {
    detail::project(x, wq_, bq_, q_, threads);
    detail::project(x, wk_, bk_, k_, threads);
    detail::project(x, wv_, bv_, v_, threads);
    attended_.resize(x.rows(), config_.heads * config_.v_dim());
  }

  // A workspace [batch·tokens, heads·dim] seen as the kernels' [batch, tokens, heads, dim].
  static TensorView<const float> view(const RowMatrix& m, std::int64_t batch, std::int64_t tokens,
                                      std::int64_t heads, std::int64_t dim) {
    return TensorView<const float>(m.data(), m.size(), batch, tokens, heads, dim);
  }
  static TensorView<float> mutable_view(RowMatrix& m, std::int64_t batch, std::int64_t tokens,
                                        std::int64_t heads, std::int64_t dim) {
    return TensorView<float>(m.data(), m.size(), batch, tokens, heads, dim);
  }
  TensorView<float> output_view(std::int64_t batch, std::int64_t tokens) {
    return TensorView<float>(attended_.data(), attended_.size(), batch, tokens, config_.heads,
                             config_.v_dim());
  }

  // A call's kernel options: the config's modifiers, then the call's own (self: whether the
  // config's causal applies; cross-attention's does not).
  KernelOptions kernel_options(const ForwardOptions& call, int threads, bool self = true) const {
    return detail::with_call_fields(
        multihead::kernel_options(config_, alibi_slopes_, config_.scale, threads), call, self);
  }

  // The call's masks, lse and causal mode against its attention's shape, before anything runs.
  void check_call(const ForwardOptions& call, std::int64_t batch, std::int64_t tokens,
                  std::int64_t kv_len, bool self = true) const {
    const KernelShape shape{batch, tokens, kv_len, config_.heads, config_.kv_groups,
                            config_.head_dim, config_.v_dim()};
    detail::check_lse_and_options(shape, call.lse, kernel_options(call, 1, self));
  }

  template <class Cache>
  void check_cache(const Cache& cache) const {
    using detail::require;
    require(cache.kv_groups() == config_.kv_groups, "cache kv_groups (", cache.kv_groups(),
            ") must equal the layer's kv_groups (", config_.kv_groups, ")");
    require(cache.head_dim() == config_.head_dim, "cache head_dim (", cache.head_dim(),
            ") must equal the layer's head_dim (", config_.head_dim, ")");
    require(cache.value_dim() == config_.v_dim(), "cache value_dim (", cache.value_dim(),
            ") must equal the layer's value_dim (", config_.v_dim(), ")");
  }

  template <class Cache>
  void forward_sequences(const Eigen::Ref<const RowMatrix>& x, Span<const std::int64_t> cu,
                         Cache& cache, Span<const std::int64_t> ids, RowMatrix& y,
                         const ForwardOptions& options) {
    check_cache(cache);
    thread_local std::vector<std::int64_t> starts;
    const std::int64_t longest = detail::check_sequences_step(
        x, config_.model_dim, options.batch, options.threads, cu, cache, ids, starts);
    const std::int64_t total = x.rows();
    detail::check_no_masks(kernel_options(options, 1));
    check_call(options, 1, total, longest);
    const detail::ExecutorScope scope(options.executor);
    const int threads = resolve_threads(options.threads);

    project_inputs(x, threads);
    const std::int64_t d = config_.head_dim, dv = config_.v_dim();
    const auto q = mutable_view(q_, 1, total, config_.heads, d);
    const auto k = mutable_view(k_, 1, total, config_.kv_groups, d);
    // Every sequence's tokens are rotated in the step's context (dynamic scaling reads it).
    const std::int64_t context = detail::step_context(cu, starts);
    if (rope_) rope_->reserve(context);
    for (std::int64_t i = 0; i < ids.size; ++i) {
      const std::int64_t first = cu.data[i], n = cu.data[i + 1] - first;
      if (n == 0) continue;
      if (rope_) {
        apply_rope(*rope_, detail::token_range(q, 0, first, n), starts[std::size_t(i)], context);
        apply_rope(*rope_, detail::token_range(k, 0, first, n), starts[std::size_t(i)], context);
      }
      cache.append(ids.data[i],
                   detail::token_range(view(k_, 1, total, config_.kv_groups, d), 0, first, n),
                   detail::token_range(view(v_, 1, total, config_.kv_groups, dv), 0, first, n));
    }
    batch_attention(view(q_, 1, total, config_.heads, d), cu, cache, ids,
                    output_view(1, total), kernel_options(options, threads), options.lse);
    detail::project(attended_, wo_, bo_, y, threads);
  }

  // With a rope, rotates the projected q and k of `tokens` tokens per sequence, the first at
  // position `first`, in a call of context first + tokens. The table grows geometrically, so
  // steps of one token rarely allocate (and with dynamic scaling stops at original_context).
  void rotate(std::int64_t batch, std::int64_t tokens, std::int64_t first) {
    if (!rope_) return;
    const std::int64_t context =
        detail::checked_add(first, tokens, "last position (first + tokens)");
    rope_->reserve(context);
    apply_rope(*rope_, mutable_view(q_, batch, tokens, config_.heads, config_.head_dim), first,
               context);
    apply_rope(*rope_, mutable_view(k_, batch, tokens, config_.kv_groups, config_.head_dim), first,
               context);
  }

  // Attention of the projected tokens over themselves, into attended_.
  void attend_fresh(std::int64_t batch, std::int64_t tokens, const ForwardOptions& options,
                    int threads) {
    const std::int64_t d = config_.head_dim, dv = config_.v_dim();
    const auto q = view(q_, batch, tokens, config_.heads, d);
    const auto k = view(k_, batch, tokens, config_.kv_groups, d);
    const auto v = view(v_, batch, tokens, config_.kv_groups, dv);
    const KernelOptions kernel = kernel_options(options, threads);
    if (options.kernel == KernelChoice::reference)
      reference_attention(q, k, v, output_view(batch, tokens), kernel, options.lse);
    else if (options.precision == Precision::bf16)
      bf16_.fused(q, k, v, output_view(batch, tokens), kernel, options.lse);
    else
      fused_attention(q, k, v, output_view(batch, tokens), kernel, options.lse);
  }

  void check_has_bias(Projection p) const {
    detail::require(has_bias(p), projection_name(p), " bias: the layer was configured without biases (",
                    p == Projection::o ? "config.o_bias() = false" : "config.bias = false", ")");
  }

  template <class T>
  static void check_buffer(const char* name, const T* data, std::int64_t size,
                           std::int64_t expected) {
    detail::require(data != nullptr, name, ": data is null");
    detail::require(size == expected, name, ": buffer size (", size, ") must be ", expected);
  }

  LayerConfig config_;
  detail::Bf16Attention bf16_;  // Precision::bf16's operands
  RowMatrix x32_, y32_;         // bf16 / fp16 calls' rows, widened
  RowMatrix wq_, wk_, wv_, wo_;
  Eigen::VectorXf bq_, bk_, bv_, bo_;
  // Workspaces reused across calls: the projections of x and the attended heads.
  RowMatrix q_, k_, v_, attended_;
  std::vector<float> alibi_slopes_;  // when config_.alibi
  std::optional<RopeTable> rope_;  // cos and sin per position, when config_.rope is set
};

using MHA = Attention<variant::MultiHead>;
using GQA = Attention<variant::GroupedQuery>;
using MQA = Attention<variant::MultiQuery>;

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead

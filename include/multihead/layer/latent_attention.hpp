// Attention<variant::Latent> (MLA): multi-head latent attention, DeepSeek-V2/V3's layer, with
// the weights of Hugging Face's DeepseekV2Attention, in nn.Linear layout [out, in], one to one:
//
//   q_proj               [heads·(nope_dim + rope_dim), model_dim]   without query compression
//   q_a_proj             [query_latent_dim, model_dim]              with query compression
//   q_a_layernorm        [query_latent_dim]                         (RMSNorm weight)
//   q_b_proj             [heads·(nope_dim + rope_dim), query_latent_dim]
//   kv_a_proj_with_mqa   [latent_dim + rope_dim, model_dim]         latent, then the RoPE key
//   kv_a_layernorm       [latent_dim]                               when config.kv_norm
//   kv_b_proj            [heads·(nope_dim + value_dim), latent_dim] per head: W_UK rows, W_UV rows
//   o_proj               [model_dim, heads·value_dim]
// A checkpoint's tensors load with set_weight(LatentWeight::kv_b_proj, data, size) and so on.
// (No biases: DeepSeek's attention has none.) The decoupled RoPE takes config.rope_scaling, as
// DeepSeek-V2/V3 checkpoints configure YaRN for long contexts: its frequencies and cos/sin
// factor on q_R and k_R, and its mscale_all_dim term in the softmax scale (resolved_scale).
// config.rope_layout chooses the order k_R is rotated and cached in (latent_config.hpp).
//
// Two computations of the same attention (latent_config.hpp has the formulas):
//  - naive: up-project every token's latent into per-head K = [W_UK·c; k_R] and V = W_UV·c, then
//    dense attention with qk-dim nope_dim + rope_dim and v-dim value_dim. Cheapest when every
//    token is new (a prefill), since K and V are needed once per query anyway.
//  - absorbed: fold W_UK into the query (q_C·W_UK per head, latent_dim values) and W_UV into the
//    output, and attend directly over the latents as MQA with qk-dim latent_dim + rope_dim and
//    v-dim latent_dim: nothing is up-projected, each cached row is read once for all heads.
//    What decoding over a long cache wants.
// forward(x) and a prefill into an empty cache run the naive one; later calls over a cache (decode
// steps, further chunks) the absorbed one; LatentForwardOptions::path picks either explicitly.
// Threads: as a dense layer, one layer per thread (it keeps workspaces between calls).
#pragma once

#include "../core/eigen.hpp"
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <optional>
#include <vector>
#include <random>
#include <utility>

#include "../attention/decode.hpp"
#include "../attention/fused.hpp"
#include "../attention/options.hpp"
#include "../attention/reference.hpp"
#include "../cache/decode.hpp"
#include "../cache/latent_cache.hpp"
#include "../cache/paged_latent_cache.hpp"
#include "../core/compiled.hpp"
#include "../core/parallel.hpp"
#include "attention.hpp"
#include "latent_config.hpp"
#include "precision.hpp"
#include "projection.hpp"
#include "rope.hpp"
#include "sequences.hpp"
#include "variant.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {

// The parameters of an MLA layer, named as in Hugging Face's DeepseekV2Attention.
enum class LatentWeight {
  q_proj,
  q_a_proj,
  q_a_layernorm,
  q_b_proj,
  kv_a_proj_with_mqa,
  kv_a_layernorm,
  kv_b_proj,
  o_proj
};
constexpr int kLatentWeights = 8;

inline const char* latent_weight_name(LatentWeight w) {
  switch (w) {
    case LatentWeight::q_proj: return "q_proj";
    case LatentWeight::q_a_proj: return "q_a_proj";
    case LatentWeight::q_a_layernorm: return "q_a_layernorm";
    case LatentWeight::q_b_proj: return "q_b_proj";
    case LatentWeight::kv_a_proj_with_mqa: return "kv_a_proj_with_mqa";
    case LatentWeight::kv_a_layernorm: return "kv_a_layernorm";
    case LatentWeight::kv_b_proj: return "kv_b_proj";
    case LatentWeight::o_proj: return "o_proj";
  }
  return "?";
}

// Which computation attends (see the top of this header).
enum class LatentPath { automatic, naive, absorbed };

struct LatentForwardOptions {
  // As ForwardOptions::batch: sequences in x; with a cache, 1 or the cache's batch.
  std::int64_t batch = 1;
  int threads = 0;  // 0: all of the executor's threads
  LatentPath path = LatentPath::automatic;
  // The kernel of the naive path over fresh tokens: fused, or the plain reference.
  KernelChoice kernel = KernelChoice::fused;
  // Attention over fresh tokens in fp32, or on operands rounded to bf16 (precision.hpp).
  Precision precision = Precision::fp32;
  Executor* executor = nullptr;  // whose threads: null for the default (KernelOptions::executor)
  // Per call, as ForwardOptions' (attention.hpp): causal overriding the config's, masks over
  // [batch, heads, q_len, kv_len], and where to write the log-sum-exps [batch, heads, tokens]
  // (the same on every path: the absorbed scores are the naive ones). Checked before anything,
  // the cache included, is written.
  std::optional<bool> causal = std::nullopt;
  MaskView<float> additive_mask = {};
  MaskView<bool> boolean_mask = {};
  LseOutput lse = {};
};

namespace variant {

// Multi-head latent attention: Attention<Latent> is configured by a LatentConfig.
struct Latent {
  static constexpr const char* name = "MLA";
};

}  // namespace variant

template <>
class Attention<variant::Latent> {
 public:
  // Validates the config; projections start at zero, the RMSNorm weights at one.
  explicit Attention(const LatentConfig& config) : config_(config) {
    config_.validate();
    for (int i = 0; i < kLatentWeights; ++i) {
      const auto w = static_cast<LatentWeight>(i);
      if (!has_weight(w)) continue;
      const auto shape = weight_shape(w);
      weights_[static_cast<std::size_t>(i)].setZero(shape[0], shape[1]);
      if (is_norm(w)) weights_[static_cast<std::size_t>(i)].setOnes();
    }
    if (config_.rope_dim > 0) rope_.emplace(config_.rope(), config_.rope_dim);
    if (config_.rope_dim > 0 && config_.rope_layout == RopeLayout::rotate_half)
      rope_order_.resize(static_cast<std::size_t>(config_.rope_dim));
    if (config_.alibi) alibi_slopes_ = alibi_slopes(config_.heads);
  }

  const LatentConfig& config() const noexcept { return config_; }
  static constexpr const char* variant_name() noexcept { return variant::Latent::name; }

  // Whether the config has this parameter: q_proj without query compression, q_a_proj,
  // q_a_layernorm and q_b_proj with it, kv_a_layernorm with kv_norm.
  bool has_weight(LatentWeight w) const noexcept {
    const bool compressed = config_.query_latent_dim.has_value();
    switch (w) {
      case LatentWeight::q_proj: return !compressed;
      case LatentWeight::q_a_proj:
      case LatentWeight::q_a_layernorm:
      case LatentWeight::q_b_proj: return compressed;
      case LatentWeight::kv_a_layernorm: return config_.kv_norm;
      default: return true;
    }
  }

  // [out_features, in_features]; an RMSNorm weight is [1, dim].
  std::array<std::int64_t, 2> weight_shape(LatentWeight w) const noexcept {
    const LatentConfig& c = config_;
    const std::int64_t query_latent = c.query_latent_dim.value_or(0);
    switch (w) {
      case LatentWeight::q_proj: return {c.heads * c.qk_dim(), c.model_dim};
      case LatentWeight::q_a_proj: return {query_latent, c.model_dim};
      case LatentWeight::q_a_layernorm: return {1, query_latent};
      case LatentWeight::q_b_proj: return {c.heads * c.qk_dim(), query_latent};
      case LatentWeight::kv_a_proj_with_mqa: return {c.cached_dim(), c.model_dim};
      case LatentWeight::kv_a_layernorm: return {1, c.latent_dim};
      case LatentWeight::kv_b_proj: return {c.heads * (c.nope_dim + c.value_dim), c.latent_dim};
      case LatentWeight::o_proj: return {c.model_dim, c.heads * c.value_dim};
    }
    return {0, 0};
  }

  // Throws std::invalid_argument for a parameter the config does not have.
  const RowMatrix& weight(LatentWeight w) const {
    require_present(w);
    return weights_[index(w)];
  }

  // Sets one parameter from a matrix of weight_shape(w) (an RMSNorm weight: [1, dim]).
  void set_weight(LatentWeight w, const Eigen::Ref<const RowMatrix>& m) {
    require_present(w);
    const auto shape = weight_shape(w);
    detail::require(m.rows() == shape[0] && m.cols() == shape[1], latent_weight_name(w),
                    " shape [", m.rows(), ", ", m.cols(), "] must be [", shape[0], ", ", shape[1],
                    "]");
    weights_[index(w)] = m;
  }

  // Sets one parameter from a row-major buffer of rows·cols floats (a checkpoint's tensor).
  void set_weight(LatentWeight w, const float* data, std::int64_t size) {
    const auto shape = check_weight_buffer(w, data, size);
    weights_[index(w)] = Eigen::Map<const RowMatrix>(data, shape[0], shape[1]);
  }
  // The same from bf16 or fp16 values, widened to fp32 at load (precision.hpp).
  template <class T, class = std::enable_if_t<is_half_type_v<T>>>
  void set_weight(LatentWeight w, const T* data, std::int64_t size) {
    const auto shape = check_weight_buffer(w, data, size);
    detail::widen_into(data, size, shape[0], shape[1], weights_[index(w)]);
  }

  // Projections as nn.Linear initialises them (uniform in ±1/sqrt(in_features)), RMSNorm
  // weights at one; the same seed gives the same layer everywhere.
  void init_random(std::uint64_t seed) {
    std::mt19937_64 generator(seed);
    for (int i = 0; i < kLatentWeights; ++i) {
      const auto w = static_cast<LatentWeight>(i);
      if (!has_weight(w)) continue;
      RowMatrix& m = weights_[static_cast<std::size_t>(i)];
      if (is_norm(w)) {
        m.setOnes();
        continue;
      }
      detail::fill_uniform(m.reshaped<Eigen::RowMajor>(),
                           1.0f / std::sqrt(static_cast<float>(m.cols())), generator);
    }
  }

  std::int64_t parameter_count() const {
    std::int64_t count = 0;
    for (int i = 0; i < kLatentWeights; ++i)
      if (has_weight(static_cast<LatentWeight>(i))) count += weights_[static_cast<std::size_t>(i)].size();
    return count;
  }

  // What a cache keeps per token: the latent and the RoPE key, latent_dim + rope_dim values.
  std::int64_t kv_cache_bytes_per_token(std::int64_t bytes_per_element = sizeof(float)) const {
    return config_.cached_dim() * bytes_per_element;
  }

  // y [x.rows(), model_dim] for x [batch·tokens, model_dim], tokens at positions 0, 1, ...
  RowMatrix forward(const Eigen::Ref<const RowMatrix>& x, const LatentForwardOptions& options = {}) {
    RowMatrix y;
    forward(x, y, options);
    return y;
  }

  void forward(const Eigen::Ref<const RowMatrix>& x, RowMatrix& y,
               const LatentForwardOptions& options = {}) {
    detail::check_layer_input(x, config_.model_dim, options.batch, options.threads);
    const std::int64_t batch = options.batch, tokens = x.rows() / batch;
    check_call(options, batch, tokens, tokens);
    const detail::ExecutorScope scope(options.executor);
    const int threads = resolve_threads(options.threads);
    project_inputs(x, batch, tokens, 0, threads);
    attend_fresh(batch, tokens, options, threads);
    detail::project(attended_, weights_[index(LatentWeight::o_proj)], no_bias_, y, threads);
  }

  // Incremental forward over a latent cache, as Attention<Variant>::forward(x, KvCache&, y):
  // x [cache.batch()·tokens, model_dim] holds the next tokens of every sequence, at positions
  // cache.length() on. Their latents and RoPE keys are appended; a prefill into an empty cache
  // attends over the fresh fp32 latents, later calls over the cache. Everything is checked
  // before the cache or y is touched.
  template <class Storage>
  void forward(const Eigen::Ref<const RowMatrix>& x, LatentCache<Storage>& cache, RowMatrix& y,
               const LatentForwardOptions& options = {}) {
    check_cache(cache);
    const std::int64_t batch = cache.batch();
    const std::int64_t position = cache.length();
    const std::int64_t tokens =
        detail::check_step_input(x, config_.model_dim, options.batch, options.threads, batch,
                                 position, cache.capacity());
    check_call(options, batch, tokens, position + tokens);
    const detail::ExecutorScope scope(options.executor);
    const int threads = resolve_threads(options.threads);

    project_inputs(x, batch, tokens, position, threads);
    append_latents(cache, batch, tokens);
    if (position == 0) {
      attend_fresh(batch, tokens, options, threads);
    } else if (options.path == LatentPath::naive) {
      attend_cache_naive(cache, batch, tokens, options, threads);
    } else {
      absorb_queries(threads);
      decode_attention(latent_query_view(batch, tokens), cache, latent_output_view(batch, tokens),
                       kernel_options(options, threads), options.lse);
      expand_outputs(threads);
    }
    detail::project(attended_, weights_[index(LatentWeight::o_proj)], no_bias_, y, threads);
  }

  template <class Storage>
  RowMatrix forward(const Eigen::Ref<const RowMatrix>& x, LatentCache<Storage>& cache,
                    const LatentForwardOptions& options = {}) {
    RowMatrix y;
    forward(x, cache, y, options);
    return y;
  }

  // A continuous batch's step, as Attention<Variant>::forward over sequences (attention.hpp):
  // the new tokens of the cache's sequences ids[i] (LatentCache slots, PagedLatentCache ids) as
  // rows [cu_seqlens[i], cu_seqlens[i + 1]) of x, each at its own positions. Every sequence's
  // queries attend over its latents on the absorbed path (the naive one would up-project every
  // cached latent of every sequence: options.path naive is rejected); masks are rejected, lse
  // is [heads, total].
  template <class Storage>
  void forward(const Eigen::Ref<const RowMatrix>& x, Span<const std::int64_t> cu_seqlens,
               LatentCache<Storage>& cache, Span<const std::int64_t> ids, RowMatrix& y,
               const LatentForwardOptions& options = {}) {
    forward_sequences(x, cu_seqlens, cache, ids, y, options);
  }
  template <class Storage>
  void forward(const Eigen::Ref<const RowMatrix>& x, Span<const std::int64_t> cu_seqlens,
               PagedLatentCache<Storage>& cache, Span<const std::int64_t> ids, RowMatrix& y,
               const LatentForwardOptions& options = {}) {
    forward_sequences(x, cu_seqlens, cache, ids, y, options);
  }

 private:
  static std::size_t index(LatentWeight w) { return static_cast<std::size_t>(w); }
  static bool is_norm(LatentWeight w) {
    return w == LatentWeight::q_a_layernorm || w == LatentWeight::kv_a_layernorm;
  }
  // A checkpoint tensor for parameter w: present in the config, of weight_shape(w)'s size.
  template <class T>
  std::array<std::int64_t, 2> check_weight_buffer(LatentWeight w, const T* data,
                                                  std::int64_t size) const {
    require_present(w);
    const auto shape = weight_shape(w);
    detail::require(data != nullptr, latent_weight_name(w), ": data is null");
    detail::require(size == shape[0] * shape[1], latent_weight_name(w), ": buffer size (", size,
                    ") must be ", shape[0] * shape[1]);
    return shape;
  }

  void require_present(LatentWeight w) const {
    detail::require(has_weight(w), latent_weight_name(w), ": this layer has no such parameter (",
                    config_.query_latent_dim ? "query compression is on"
                                             : "no query compression",
                    config_.kv_norm ? "" : ", no kv_a_layernorm", ")");
  }

  template <class Cache>
  void forward_sequences(const Eigen::Ref<const RowMatrix>& x, Span<const std::int64_t> cu,
                         Cache& cache, Span<const std::int64_t> ids, RowMatrix& y,
                         const LatentForwardOptions& options) {
    check_cache(cache);
    detail::require(options.path != LatentPath::naive,
                    "path: a step over sequences runs the absorbed path (naive would up-project "
                    "every cached latent of every sequence)");
    thread_local std::vector<std::int64_t> starts;
    const std::int64_t longest = detail::check_sequences_step(
        x, config_.model_dim, options.batch, options.threads, cu, cache, ids, starts);
    const std::int64_t total = x.rows(), dc = config_.latent_dim, row = config_.cached_dim();
    detail::check_no_masks(kernel_options(options, 1));
    check_call(options, 1, total, longest);
    const detail::ExecutorScope scope(options.executor);
    const int threads = resolve_threads(options.threads);

    project_inputs(x, 1, total, -1, threads);
    // Every sequence's tokens are rotated in the step's context (dynamic scaling reads it).
    const std::int64_t context = detail::step_context(cu, starts);
    if (rope_) rope_->reserve(context);
    for (std::int64_t i = 0; i < ids.size; ++i) {
      const std::int64_t first = cu.data[i], n = cu.data[i + 1] - first;
      if (n == 0) continue;
      rotate(first, 1, n, starts[std::size_t(i)], context);
      const float* rows = latents_.data() + first * row;
      const std::int64_t size = n * row;
      const auto c_kv = TensorView<const float>::strided(rows, size, 1, n, 1, dc, size, row, dc);
      if (config_.rope_dim == 0) {
        cache.append(ids.data[i], c_kv);
        continue;
      }
      cache.append(ids.data[i], c_kv,
                   TensorView<const float>::strided(rows + dc, size - dc, 1, n, 1,
                                                    config_.rope_dim, size, row, config_.rope_dim));
    }
    absorb_queries(threads);
    batch_attention(latent_query_view(1, total), cu, cache, ids, latent_output_view(1, total),
                    kernel_options(options, threads), options.lse);
    expand_outputs(threads);
    detail::project(attended_, weights_[index(LatentWeight::o_proj)], no_bias_, y, threads);
  }

  template <class Cache>
  void check_cache(const Cache& cache) const {
    detail::require(cache.latent_dim() == config_.latent_dim, "cache latent_dim (",
                    cache.latent_dim(), ") must equal the layer's latent_dim (",
                    config_.latent_dim, ")");
    detail::require(cache.rope_dim() == config_.rope_dim, "cache rope_dim (", cache.rope_dim(),
                    ") must equal the layer's rope_dim (", config_.rope_dim, ")");
  }

  // A call's kernel options: the config's modifiers, then the call's own.
  KernelOptions kernel_options(const LatentForwardOptions& call, int threads) const {
    return detail::with_call_fields(
        multihead::kernel_options(config_, alibi_slopes_, config_.resolved_scale(), threads),
        call);
  }

  // The call's masks, lse and causal mode against its attention's shape (the naive path's, as
  // MHA over qk_dim), before anything runs.
  void check_call(const LatentForwardOptions& call, std::int64_t batch, std::int64_t tokens,
                  std::int64_t kv_len) const {
    const KernelShape shape{batch, tokens, kv_len, config_.heads, config_.heads,
                            config_.qk_dim(), config_.value_dim};
    detail::check_lse_and_options(shape, call.lse, kernel_options(call, 1));
  }

  // Queries q_ [rows, heads·qk_dim] and latent rows latents_ [rows, latent_dim + rope_dim]
  // (normalised latent, then the RoPE key) of x's tokens, RoPE applied at positions
  // position, position + 1, ... (position -1: not rotated, the caller rotates per sequence)
  void project_inputs(const Eigen::Ref<const RowMatrix>& x, std::int64_t batch, std::int64_t tokens,
                      std::int64_t position, int threads) {
    const LatentConfig& c = config_;
    if (c.query_latent_dim) {
      detail::project(x, weights_[index(LatentWeight::q_a_proj)], no_bias_, query_latent_, threads);
      detail::rms_norm_rows(query_latent_, 0, *c.query_latent_dim,
                            weights_[index(LatentWeight::q_a_layernorm)], c.norm_eps);
      detail::project(query_latent_, weights_[index(LatentWeight::q_b_proj)], no_bias_, q_, threads);
    } else {
      detail::project(x, weights_[index(LatentWeight::q_proj)], no_bias_, q_, threads);
    }
    detail::project(x, weights_[index(LatentWeight::kv_a_proj_with_mqa)], no_bias_, latents_,
                    threads);
    if (c.kv_norm)
      detail::rms_norm_rows(latents_, 0, c.latent_dim,
                            weights_[index(LatentWeight::kv_a_layernorm)], c.norm_eps);
    if (position >= 0) {
      const std::int64_t context = position + tokens;  // checked by check_step_input
      if (rope_) rope_->reserve(context);
      rotate(0, batch, tokens, position, context);
    }
    attended_.resize(x.rows(), c.heads * c.value_dim);
  }

  // With a rope, rotates the RoPE parts (the last rope_dim values of every head's query, and of
  // every latent row) of `tokens` tokens per sequence from row `first_row`, at positions
  // position, position + 1, ... in a call of context length `context` (the table reserved by the
  // caller). In rotate_half order, each part is first permuted to it.
  void rotate(std::int64_t first_row, std::int64_t batch, std::int64_t tokens,
              std::int64_t position, std::int64_t context) {
    const LatentConfig& c = config_;
    if (c.rope_dim == 0) return;
    if (c.rope_layout == RopeLayout::rotate_half)
      for (std::int64_t r = first_row; r < first_row + batch * tokens; ++r) {
        for (std::int64_t h = 0; h < c.heads; ++h)
          deinterleave(q_.row(r).data() + h * c.qk_dim() + c.nope_dim);
        deinterleave(latents_.row(r).data() + c.latent_dim);
      }
    const std::int64_t q_row = c.heads * c.qk_dim(), l_row = c.cached_dim();
    const std::int64_t q_at = first_row * q_row + c.nope_dim;
    const std::int64_t l_at = first_row * l_row + c.latent_dim;
    apply_rope(*rope_,
               TensorView<float>::strided(q_.data() + q_at, q_.size() - q_at, batch, tokens,
                                          c.heads, c.rope_dim, tokens * q_row, q_row, c.qk_dim()),
               position, context);
    apply_rope(*rope_,
               TensorView<float>::strided(latents_.data() + l_at, latents_.size() - l_at, batch,
                                          tokens, 1, c.rope_dim, tokens * l_row, l_row, c.rope_dim),
               position, context);
  }

  // Permutes one RoPE part x[0, rope_dim) from the projection's interleaved pairs to
  // rotate_half's halves: the even dims, then the odd ones, so pair (2i, 2i + 1) lands on
  // (i, i + rope_dim/2) and turns by the same angle.
  void deinterleave(float* x) {
    const std::int64_t half = config_.rope_dim / 2;
    float* order = rope_order_.data();
    for (std::int64_t i = 0; i < half; ++i) {
      order[i] = x[2 * i];
      order[half + i] = x[2 * i + 1];
    }
    std::copy(order, order + config_.rope_dim, x);
  }

  template <class Storage>
  void append_latents(LatentCache<Storage>& cache, std::int64_t batch, std::int64_t tokens) {
    const std::int64_t dc = config_.latent_dim, dr = config_.rope_dim, row = config_.cached_dim();
    const auto latent = TensorView<const float>::strided(latents_.data(), latents_.size(), batch,
                                                         tokens, 1, dc, tokens * row, row, dc);
    if (dr == 0) {
      cache.append(latent);
      return;
    }
    cache.append(latent, TensorView<const float>::strided(latents_.data() + dc,
                                                          latents_.size() - dc, batch, tokens, 1,
                                                          dr, tokens * row, row, dr));
  }

  // Attention of the projected tokens over themselves, into attended_.
  void attend_fresh(std::int64_t batch, std::int64_t tokens, const LatentForwardOptions& options,
                    int threads) {
    if (options.path == LatentPath::absorbed) {
      const std::int64_t row = config_.cached_dim();
      absorb_queries(threads);
      const auto keys = TensorView<const float>(latents_.data(), latents_.size(), batch, tokens, 1,
                                                row);
      const auto values = TensorView<const float>::strided(latents_.data(), latents_.size(), batch,
                                                           tokens, 1, config_.latent_dim,
                                                           tokens * row, row, config_.latent_dim);
      const KernelOptions kernel = kernel_options(options, threads);
      if (options.precision == Precision::bf16)
        bf16_.fused(latent_query_view(batch, tokens), keys, values,
                    latent_output_view(batch, tokens), kernel, options.lse);
      else
        fused_attention(latent_query_view(batch, tokens), keys, values,
                        latent_output_view(batch, tokens), kernel, options.lse);
      expand_outputs(threads);
      return;
    }
    up_project(latents_, threads);
    attend_up_projected(batch, tokens, tokens, options.kernel, options, threads,
                        options.precision);
  }

  // The naive path over a cache: every cached latent widened and up-projected.
  template <class Storage>
  void attend_cache_naive(const LatentCache<Storage>& cache, std::int64_t batch,
                          std::int64_t tokens, const LatentForwardOptions& options, int threads) {
    const std::int64_t length = cache.length(), row = config_.cached_dim();
    const TensorView<const Storage> rows = cache.keys();
    cached_.resize(batch * length, row);
    for (std::int64_t b = 0; b < batch; ++b)
      for (std::int64_t t = 0; t < length; ++t)
        Codec<Storage>::template widen<simd::Ops>(rows.row(b, t, 0), row,
                                                  cached_.row(b * length + t).data());
    up_project(cached_, threads);
    attend_up_projected(batch, tokens, length, KernelChoice::fused, options, threads);
  }

  // Per-head keys k_ [rows, heads·qk_dim] = [W_UK·c; k_R] and values (in kv_) of latent rows.
  void up_project(const RowMatrix& rows, int threads) {
    const LatentConfig& c = config_;
    detail::project(detail::columns(rows, 0, c.latent_dim), weights_[index(LatentWeight::kv_b_proj)],
                    no_bias_, kv_, threads);
    k_.resize(rows.rows(), c.heads * c.qk_dim());
    const std::int64_t per_head = c.nope_dim + c.value_dim;
    for (Eigen::Index r = 0; r < rows.rows(); ++r)
      for (std::int64_t h = 0; h < c.heads; ++h) {
        float* k = k_.row(r).data() + h * c.qk_dim();
        const float* nope = kv_.row(r).data() + h * per_head;
        std::copy(nope, nope + c.nope_dim, k);
        const float* rope = rows.row(r).data() + c.latent_dim;
        std::copy(rope, rope + c.rope_dim, k + c.nope_dim);
      }
  }

  // Dense attention of q_ over k_ and the values in kv_, keys_per_sequence tokens each.
  void attend_up_projected(std::int64_t batch, std::int64_t tokens, std::int64_t keys,
                           KernelChoice choice, const LatentForwardOptions& call, int threads,
                           Precision precision = Precision::fp32) {
    const LatentConfig& c = config_;
    const std::int64_t per_head = c.nope_dim + c.value_dim;
    const auto q = TensorView<const float>(q_.data(), q_.size(), batch, tokens, c.heads, c.qk_dim());
    const auto k = TensorView<const float>(k_.data(), k_.size(), batch, keys, c.heads, c.qk_dim());
    const auto v = TensorView<const float>::strided(kv_.data() + c.nope_dim, kv_.size() - c.nope_dim,
                                                    batch, keys, c.heads, c.value_dim,
                                                    keys * c.heads * per_head, c.heads * per_head,
                                                    per_head);
    const auto o = TensorView<float>(attended_.data(), attended_.size(), batch, tokens, c.heads,
                                     c.value_dim);
    const KernelOptions kernel = kernel_options(call, threads);
    if (choice == KernelChoice::reference)
      reference_attention(q, k, v, o, kernel, call.lse);
    else if (tokens == keys && precision == Precision::bf16)
      bf16_.fused(q, k, v, o, kernel, call.lse);
    else if (tokens == keys)
      fused_attention(q, k, v, o, kernel, call.lse);
    else
      decode_attention(q, k, v, o, kernel, call.lse);
  }

  // Absorbed queries q_latent_ [rows, heads·(latent_dim + rope_dim)]: per head q_C·W_UK (W_UK the
  // head's nope_dim rows of kv_b_proj), then q_R as it is.
  void absorb_queries(int threads) {
    const LatentConfig& c = config_;
    const std::int64_t per_head = c.nope_dim + c.value_dim, row = c.cached_dim();
    const RowMatrix& kv_b = weights_[index(LatentWeight::kv_b_proj)];
    q_latent_.resize(q_.rows(), c.heads * row);
    parallel_chunks(c.heads, threads, [&](int, std::int64_t first, std::int64_t last) {
      for (std::int64_t h = first; h < last; ++h) {
        detail::multiply(detail::columns(q_latent_, h * row, c.latent_dim),
                         detail::columns(std::as_const(q_), h * c.qk_dim(), c.nope_dim),
                         detail::row_range(kv_b, h * per_head, c.nope_dim), false);
        detail::columns(q_latent_, h * row + c.latent_dim, c.rope_dim) =
            detail::columns(q_, h * c.qk_dim() + c.nope_dim, c.rope_dim);
      }
    });
    out_latent_.resize(q_.rows(), c.heads * c.latent_dim);
  }

  // attended_ per head: the attended latent times W_UVᵀ (W_UV the head's value_dim rows of
  // kv_b_proj after its W_UK rows).
  void expand_outputs(int threads) {
    const LatentConfig& c = config_;
    const std::int64_t per_head = c.nope_dim + c.value_dim;
    const RowMatrix& kv_b = weights_[index(LatentWeight::kv_b_proj)];
    parallel_chunks(c.heads, threads, [&](int, std::int64_t first, std::int64_t last) {
      for (std::int64_t h = first; h < last; ++h)
        detail::multiply(detail::columns(attended_, h * c.value_dim, c.value_dim),
                         detail::columns(std::as_const(out_latent_), h * c.latent_dim,
                                         c.latent_dim),
                         detail::row_range(kv_b, h * per_head + c.nope_dim, c.value_dim), true);
    });
  }

  TensorView<const float> latent_query_view(std::int64_t batch, std::int64_t tokens) const {
    return TensorView<const float>(q_latent_.data(), q_latent_.size(), batch, tokens,
                                   config_.heads, config_.cached_dim());
  }
  TensorView<float> latent_output_view(std::int64_t batch, std::int64_t tokens) {
    return TensorView<float>(out_latent_.data(), out_latent_.size(), batch, tokens, config_.heads,
                             config_.latent_dim);
  }

  LatentConfig config_;
  std::array<RowMatrix, kLatentWeights> weights_;  // by LatentWeight; absent ones stay empty
  detail::Bf16Attention bf16_;  // Precision::bf16's operands
  std::optional<RopeTable> rope_;                   // when rope_dim > 0; grows with positions
  std::vector<float> rope_order_;                   // deinterleave's, in rotate_half order
  std::vector<float> alibi_slopes_;                 // when config_.alibi
  Eigen::VectorXf no_bias_;  // empty: no projection of MLA has a bias
  // Workspaces reused across calls.
  RowMatrix query_latent_, q_, latents_, kv_, k_, cached_, q_latent_, out_latent_, attended_;
};

using MLA = Attention<variant::Latent>;

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead

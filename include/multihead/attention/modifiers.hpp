// Score modifiers: what may happen to a score between Q·Kᵀ and the softmax.
//
// For batch entry b, query head h, query i (of q_len) and key j (of kv_len), every kernel
// (reference, fused, decode; every ISA) computes, in this order:
//   s = scale · q_i·k_j
//   s = cap · tanh(s / cap)                        KernelOptions::softcap > 0 (Gemma 2)
//   s = s − slope_h · |i + offset − j|             KernelOptions::alibi_slopes (BLOOM, MPT)
//   s = s + additive_mask[b, h, i, j]              KernelOptions::additive_mask
//   s = modifier.logit(s, {b, h, i, j})            a custom modifier's logit hook
// and hides key j from query i (s = −inf) unless all of these hold:
//   j ≤ i + offset                                 KernelOptions::causal
//   i + offset − left ≤ j ≤ i + offset + right     KernelOptions::window_left / window_right
//   boolean_mask[b, h, i, j]                       KernelOptions::boolean_mask (true: visible)
//   modifier.visible({b, h, i, j})                 a custom modifier's mask hook
// offset aligns the queries with the keys: kv_len − q_len (bottom-right, the default: the
// queries are the last q_len tokens) or 0 (top-left). The softmax of a row then also counts a
// sink logit, when the head has one (KernelOptions::sinks, or modifier.sink(b, h)): exp(sink)
// joins the denominator and adds no value (gpt-oss). A row that sees no key has output 0 and
// log-sum-exp −inf (with a sink: output 0, log-sum-exp = the sink), never NaN.
//
// Non-finite values, the same in every kernel and ISA (tests/attention/test_non_finite.cpp):
//  - a key is hidden from a row exactly when its score is −inf after all of the above (a
//    mask, a window, an additive −inf, or a product that overflows to −inf, whose weight
//    exp(−inf) = 0 is then exact). A hidden key never touches the row, whatever its K or V
//    hold: a NaN in the V of a future token does not reach a causal row;
//  - a NaN or +inf among a row's scores (a NaN in its query, in a key it sees, in an
//    additive mask or a custom logit; q·k overflowing to +inf) makes the row's whole output
//    and its log-sum-exp NaN, as in PyTorch; so does a NaN or infinity in the V of a key the
//    row sees, in the columns it reaches;
//  - one row's non-finite values never reach another row.
// Options that would make every score non-finite (a NaN scale, slope or sink) are rejected at
// the door (options.hpp).
//
// A custom modifier (KernelOptions::modifier = ModifierRef(m)) is any type with some of these
// const members; those it lacks cost nothing:
//   float logit(float score, const ScoreSite& at) const;
//   bool visible(const ScoreSite& at) const;
//   float sink(std::int64_t batch, std::int64_t head) const;
// Its hooks run once per score (examples/custom_modifier.cpp), so they suit what the built-in
// modifiers do not cover; the built-in ones are vectorised, and a kernel whose modifiers are all
// off runs exactly the plain code. Hooks run on the kernel's threads, concurrently: they must
// be safe to call so (const, no shared writes). A hook may throw: the first exception stops
// the call's remaining work and is rethrown to the caller after the parallel region, with the
// call's outputs partly written (every argument check has passed before that).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/error.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {

// Where query i sits among the keys (see above): causal masks, windows and ALiBi use it.
enum class CausalAlignment { bottom_right, top_left };

// A mask over scores [batch, heads, q_len, kv_len], row-major and contiguous, `size` elements
// at `data` (exactly the product of its extents: checked at each call, as a TensorView's).
// batch, heads and q_len may each be 1 to broadcast over that dimension (a key-padding mask is
// [batch, 1, 1, kv_len]); kv_len must be the call's. Empty (data null) means "no mask".
template <class T>
struct MaskView {
  const T* data = nullptr;
  std::int64_t size = 0;
  std::int64_t batch = 1, heads = 1, q_len = 1, kv_len = 0;

  MaskView() = default;
  MaskView(const T* data, std::int64_t size, std::int64_t batch, std::int64_t heads,
           std::int64_t q_len, std::int64_t kv_len)
      : data(data), size(size), batch(batch), heads(heads), q_len(q_len), kv_len(kv_len) {}

  bool empty() const noexcept { return data == nullptr && size == 0; }
  // The element for (b, h, i, j), broadcast where the mask has extent 1.
  T at(std::int64_t b, std::int64_t h, std::int64_t i, std::int64_t j) const noexcept {
    const std::int64_t bb = batch == 1 ? 0 : b, hh = heads == 1 ? 0 : h, ii = q_len == 1 ? 0 : i;
    return data[((bb * heads + hh) * q_len + ii) * kv_len + j];
  }
};

// The coordinates a custom modifier's hooks receive: batch entry, query head, query index (of
// q_len), key index (of the sequence's keys).
struct ScoreSite {
  std::int64_t batch, head, query, key;
};

namespace detail {
// Which hooks a custom modifier has.
template <class M, class = void>
struct logit_hook : std::false_type {};
template <class M>
struct logit_hook<M, std::void_t<decltype(float(std::declval<const M&>().logit(
                        0.0f, std::declval<const ScoreSite&>())))>> : std::true_type {};
template <class M, class = void>
struct visible_hook : std::false_type {};
template <class M>
struct visible_hook<M, std::void_t<decltype(bool(std::declval<const M&>().visible(
                          std::declval<const ScoreSite&>())))>> : std::true_type {};
template <class M, class = void>
struct sink_hook : std::false_type {};
template <class M>
struct sink_hook<M, std::void_t<decltype(float(std::declval<const M&>().sink(
                       std::int64_t{}, std::int64_t{})))>> : std::true_type {};
}  // namespace detail

// A custom modifier, by reference (it must outlive the calls that use it), with its hooks behind
// plain function pointers: each kernel is compiled once whatever the modifier, and a hook runs
// once per score anyway. KernelOptions::modifier = ModifierRef(my_modifier).
class ModifierRef {
 public:
  ModifierRef() = default;
  template <class M>
  explicit ModifierRef(const M& modifier) : self_(&modifier) {
    static_assert(detail::logit_hook<M>::value || detail::visible_hook<M>::value ||
                      detail::sink_hook<M>::value,
                  "a modifier needs at least one hook: logit(float, const ScoreSite&), "
                  "visible(const ScoreSite&) or sink(batch, head), each const");
    if constexpr (detail::logit_hook<M>::value)
      logit_ = [](const void* m, float s, const ScoreSite& at) {
        return static_cast<const M*>(m)->logit(s, at);
      };
    if constexpr (detail::visible_hook<M>::value)
      visible_ = [](const void* m, const ScoreSite& at) {
        return static_cast<const M*>(m)->visible(at);
      };
    if constexpr (detail::sink_hook<M>::value)
      sink_ = [](const void* m, std::int64_t b, std::int64_t h) {
        return static_cast<const M*>(m)->sink(b, h);
      };
  }

  bool has_logit() const noexcept { return logit_ != nullptr; }
  bool has_visible() const noexcept { return visible_ != nullptr; }
  bool has_sink() const noexcept { return sink_ != nullptr; }
  float logit(float score, const ScoreSite& at) const { return logit_(self_, score, at); }
  bool visible(const ScoreSite& at) const { return visible_(self_, at); }
  float sink(std::int64_t batch, std::int64_t head) const { return sink_(self_, batch, head); }

 private:
  const void* self_ = nullptr;
  float (*logit_)(const void*, float, const ScoreSite&) = nullptr;
  bool (*visible_)(const void*, const ScoreSite&) = nullptr;
  float (*sink_)(const void*, std::int64_t, std::int64_t) = nullptr;
};

namespace detail {

// The checks of the modifiers' values, shared by layers' configs and kernel calls.
inline void check_window(std::int64_t left, std::int64_t right) {
  require(left >= -1 && right >= -1, "window (left ", left, ", right ", right,
          ") must be -1 (unbounded) or a number of keys");
}
inline void check_softcap(float cap) {
  // Subnormal caps are refused: 1/cap overflows to inf, and 0 · inf = NaN for a score of 0.
  require(cap == 0.0f || (std::isfinite(cap) && cap >= std::numeric_limits<float>::min()),
          "softcap (", cap, ") must be 0 (off) or positive, at least ",
          std::numeric_limits<float>::min(), " (the smallest normal float)");
}
// One value per query head, each finite (or −inf where `minus_infinity` allows: a sink of −inf
// means none); none at all is off.
inline void check_per_head(const float* values, std::int64_t size, std::int64_t heads,
                           const char* name, bool minus_infinity) {
  if (size == 0) return;
  require(values != nullptr, name, ": data is null but size is ", size);
  require(size == heads, name, ": one value per query head needed: size ", size, ", heads ",
          heads);
  for (std::int64_t h = 0; h < size; ++h)
    require(std::isfinite(values[h]) ||
                (minus_infinity && std::isinf(values[h]) && values[h] < 0.0f),
            name, "[", h, "] (", values[h], ") must be finite", minus_infinity ? " or -inf" : "");
}

}  // namespace detail

// The score modifiers of a layer: one configuration that every layer's config embeds
// (LayerConfig and LatentConfig derive from it) and that kernel_options() (attention/options.hpp)
// maps to a kernel call. Their meaning is the kernels' (above, KernelOptions).
struct ScoreModifiers {
  bool causal = true;  // decoder self-attention, bottom-right aligned (KernelOptions::causal)
  // A sliding window: Mistral's window W is window_left = W − 1; −1 leaves a side unbounded.
  std::int64_t window_left = -1, window_right = -1;
  float softcap = 0.0f;      // logit soft-cap (Gemma 2: 50); 0 is off
  bool alibi = false;        // ALiBi with the standard slopes for the layer's heads (BLOOM, MPT)
  std::vector<float> sinks;  // one attention-sink logit per head (gpt-oss); empty is off

  // Throws std::invalid_argument naming the field unless every value suits a layer of `heads`
  // query heads.
  void validate_modifiers(std::int64_t heads) const {
    detail::check_window(window_left, window_right);
    detail::check_softcap(softcap);
    detail::check_per_head(sinks.data(), std::int64_t(sinks.size()), heads, "sinks", true);
  }
};

// The ALiBi slopes of Press et al. for `heads` heads (BLOOM's and MPT's): for a power of two n,
// 2^(−8/n), 2^(−16/n), …, 2^(−8); other counts take the slopes of the power of two below and
// every other slope of the power of two above.
inline std::vector<float> alibi_slopes(std::int64_t heads) {
  detail::require_positive(heads, "heads");
  const auto power_of_two_slopes = [](std::int64_t n) {
    std::vector<float> slopes(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i)
      slopes[static_cast<std::size_t>(i)] =
          static_cast<float>(std::exp2(-8.0 * double(i + 1) / double(n)));
    return slopes;
  };
  std::int64_t below = 1;
  while (below * 2 <= heads) below *= 2;
  std::vector<float> slopes = power_of_two_slopes(below);
  const std::vector<float> above = power_of_two_slopes(2 * below);
  for (std::int64_t i = 0; std::int64_t(slopes.size()) < heads; i += 2)
    slopes.push_back(above[static_cast<std::size_t>(i)]);
  return slopes;
}

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead

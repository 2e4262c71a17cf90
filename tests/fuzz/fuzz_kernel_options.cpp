// Fuzzes the kernels' door: views (offsets and strides into one shared buffer, so that outputs
// may overlap inputs), shapes, every KernelOptions field, masks and LSE spans, through
// fused_attention, reference_attention, decode_attention and fused_attention_varlen. Each call
// either throws std::invalid_argument having written nothing (the buffer is compared byte for
// byte), or runs without a sanitizer report; over finite inputs with a moderate scale and no
// additive mask, its output is finite.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <memory>
#include <stdexcept>
#include <vector>

#include <multihead/attention/decode.hpp>
#include <multihead/attention/fused.hpp>
#include <multihead/attention/reference.hpp>
#include <multihead/attention/varlen.hpp>

#include "fuzz_input.hpp"

namespace {

using multihead::KernelOptions;
using multihead::TensorView;

constexpr std::int64_t kArena = std::int64_t{1} << 16;  // floats every view points into

// a·b wrapping around as unsigned arithmetic does: the harness passes on what a user could
// compute, and validate() decides.
std::int64_t wrap(std::int64_t a, std::int64_t b) {
  return std::int64_t(std::uint64_t(a) * std::uint64_t(b));
}

// A view into the arena: an offset, then contiguous (size: the rest of the arena, or exact) or
// with strides of the input's choosing.
template <class T>
TensorView<T> view(fuzz::Input& in, T* arena, std::int64_t batch, std::int64_t tokens,
                   std::int64_t heads, std::int64_t dim) {
  const std::int64_t offset = in.size(0, kArena - 1);
  T* data = offset >= 0 && offset < kArena ? arena + offset : arena;
  const std::int64_t room = kArena - (data - arena);
  switch (in.raw<std::uint8_t>() % 3) {
    case 0: {
      const std::int64_t exact = wrap(wrap(batch, tokens), wrap(heads, dim));
      // A size is the caller's word for its buffer: never more than the arena holds.
      return TensorView<T>(data, in.flag() && exact >= 0 && exact <= room ? exact : room, batch,
                           tokens, heads, dim);
    }
    case 1:  // head-major
      return TensorView<T>::strided(data, room, batch, tokens, heads, dim,
                                    wrap(heads, wrap(tokens, dim)), dim, wrap(tokens, dim));
    default:
      return TensorView<T>::strided(data, room, batch, tokens, heads, dim, in.size(0, 4096),
                                    in.size(0, 1024), in.size(0, 256));
  }
}

template <class T>
multihead::MaskView<T> mask(fuzz::Input& in, const T* arena, std::int64_t batch,
                            std::int64_t heads, std::int64_t q_len, std::int64_t kv_len) {
  if (!in.flag()) return {};
  const std::int64_t offset = in.size(0, kArena - 1);
  const T* data = offset >= 0 && offset < kArena ? arena + offset : arena;
  const std::int64_t room = kArena - (data - arena), size = in.size(0, room);
  return {data, size >= 0 && size <= room ? size : room, in.flag() ? batch : 1,
          in.flag() ? heads : 1, in.flag() ? q_len : 1, kv_len};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::Input in(data, size);
  // The shared buffer, finite values in [-1, 1], then a few poisoned by the input.
  static std::vector<float> arena(kArena), before(kArena);
  static const std::unique_ptr<bool[]> keep(new bool[kArena]);
  for (std::int64_t i = 0; i < kArena; ++i) {
    arena[std::size_t(i)] = float(std::int64_t((std::uint64_t(i) * 2654435761u) % 2001) - 1000) / 1000.0f;
    keep[i] = (i * 7) % 5 != 0;
  }
  for (int poisons = in.raw<std::uint8_t>() % 4; poisons > 0; --poisons)
    arena[std::size_t(in.raw<std::uint16_t>())] = in.raw<float>();

  const std::int64_t batch = in.size(1, 3), q_len = in.size(1, 24), kv_len = in.size(1, 48);
  const std::int64_t heads = in.size(1, 8), groups = in.size(1, 8);
  const std::int64_t d = in.size(1, 72), dv = in.flag() ? d : in.size(1, 72);
  float* a = arena.data();
  const TensorView<const float> q = view<float>(in, a, batch, q_len, heads, d);
  const TensorView<const float> k = view<float>(in, a, batch, kv_len, groups, d);
  const TensorView<const float> v = view<float>(in, a, batch, kv_len, groups, dv);
  const TensorView<float> o = view<float>(in, a, batch, q_len, heads, dv);

  KernelOptions options;
  if (in.flag()) options.scale = in.number(0.0f, 0.5f);
  options.causal = in.flag();
  if (in.flag()) options.alignment = multihead::CausalAlignment::top_left;
  options.window_left = in.size(-2, 40);
  options.window_right = in.size(-2, 40);
  if (in.flag()) options.softcap = in.number(0.0f, 50.0f);
  // Spans at an offset of the input's choosing, of any true size.
  const auto span = [&](std::int64_t most) -> multihead::Span<float> {
    const std::int64_t offset = in.raw<std::uint16_t>() % kArena;
    return {a + offset, std::min(in.size(0, most), kArena - offset)};
  };
  if (in.flag()) {
    const multihead::Span<float> x = span(8);
    options.alibi_slopes = {x.data, x.size};
  }
  if (in.flag()) {
    const multihead::Span<float> x = span(8);
    options.sinks = {x.data, x.size};
  }
  options.additive_mask = mask<float>(in, a, batch, heads, q_len, kv_len);
  options.boolean_mask = mask<bool>(in, keep.get(), batch, heads, q_len, kv_len);
  options.threads = int(in.size(0, 4));
  multihead::LseOutput lse;
  if (in.flag()) lse = span(kArena);

  bool finite = true;  // and moderate: a poisoned 3e38 is finite, yet overflows a score
  for (const float x : arena) finite = finite && std::abs(x) <= 1e3f;
  if (std::getenv("FUZZ_VERBOSE")) {
    const auto show = [&](const char* name, const auto& x) {
      std::fprintf(stderr, "%s: offset %ld size %ld [%ld %ld %ld %ld] strides [%ld %ld %ld]\n", name,
                   long((const float*)x.data() - a), long(x.size()), long(x.batch()), long(x.tokens()),
                   long(x.heads()), long(x.dim()), long(x.batch_stride()), long(x.token_stride()),
                   long(x.head_stride()));
    };
    show("q", q), show("k", k), show("v", v), show("o", o);
    std::fprintf(stderr, "scale %g causal %d align %d window %ld %ld softcap %g slopes %ld sinks %ld add %ld keep %ld lse %ld\n",
                 options.scale ? *options.scale : -1.0f, options.causal, int(options.alignment),
                 long(options.window_left), long(options.window_right), options.softcap,
                 long(options.alibi_slopes.size), long(options.sinks.size), long(options.additive_mask.size),
                 long(options.boolean_mask.size), long(lse.size));
  }
  before = arena;
  const int kernel = in.raw<std::uint8_t>() % 4;
  try {
    if (kernel == 0) multihead::fused_attention(q, k, v, o, options, lse);
    if (kernel == 1) multihead::reference_attention(q, k, v, o, options, lse);
    if (kernel == 2) multihead::decode_attention<float>(q, k, v, o, options, lse);
    if (kernel == 3) {
      // Two packed sequences splitting the tokens where the input says.
      const std::int64_t offsets_q[3] = {0, in.size(0, q_len), q_len};
      const std::int64_t offsets_k[3] = {0, in.size(0, kv_len), kv_len};
      multihead::fused_attention_varlen(q, k, v, o, {offsets_q, 3}, {offsets_k, 3}, options, lse);
    }
  } catch (const std::invalid_argument&) {
    fuzz::check(std::memcmp(arena.data(), before.data(), arena.size() * sizeof(float)) == 0,
                "a call that throws writes nothing");
    return 0;
  }
  // Moderate inputs (the arena's, or poisons within ±1000), the default or a moderate scale (a huge one overflows the
  // scores: NaN, by the semantics), no additive mask: attention is a weighted mean of V.
  if (finite && options.additive_mask.empty() && (!options.scale || std::abs(*options.scale) <= 16)) {
    for (std::int64_t b = 0; b < batch; ++b)
      for (std::int64_t t = 0; t < q_len; ++t)
        for (std::int64_t h = 0; h < heads; ++h)
          for (std::int64_t c = 0; c < dv; ++c)
            if (!std::isfinite(o.row(b, t, h)[c])) {
              std::fprintf(stderr, "kernel %d: o[%ld, %ld, %ld, %ld] = %g\n", kernel, long(b), long(t), long(h), long(c), o.row(b, t, h)[c]);
              fuzz::check(false, "finite inputs give finite outputs");
            }
  }
  return 0;
}

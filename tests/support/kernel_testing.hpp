// What the kernel tests share: the table of attention kernels under test, random inputs, running
// a kernel on contiguous or strided views, and checking a result against the naive oracle of
// naive_reference.hpp under the accuracy standard
//   max|lib - double| <= 2 * max|naive fp32 - double| + 1e-6   (outputs and log-sum-exps).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include <multihead/multihead.hpp>

#include "naive_reference.hpp"

namespace kernel_testing {

using multihead::KernelOptions;
using multihead::LseOutput;
using multihead::TensorView;
using naive::AttentionShape;

// ---- The kernels under test: one contract (kernel_args.hpp), several implementations ----------

using KernelFunction = void (*)(const TensorView<const float>& q, const TensorView<const float>& k,
                                const TensorView<const float>& v, const TensorView<float>& o,
                                const KernelOptions& options, LseOutput lse);

struct Kernel {
  const char* name;
  KernelFunction run;
};

// The decode kernel over float K/V views (its cache overloads are tested in test_decode.cpp).
inline void decode_over_views(const TensorView<const float>& q, const TensorView<const float>& k,
                              const TensorView<const float>& v, const TensorView<float>& o,
                              const KernelOptions& options, LseOutput lse) {
  multihead::decode_attention<float>(q, k, v, o, options, lse);
}

inline constexpr Kernel kFused{"fused", &multihead::fused_attention};
inline constexpr Kernel kReference{"reference", &multihead::reference_attention};
inline constexpr Kernel kDecode{"decode", &decode_over_views};
inline constexpr Kernel kKernels[] = {kFused, kReference, kDecode};

// gtest prints a parameter of this type in failure messages and --gtest_list_tests by its name.
inline void PrintTo(const Kernel& kernel, std::ostream* out) { *out << kernel.name; }

inline std::string kernel_param_name(const ::testing::TestParamInfo<Kernel>& info) {
  return info.param.name;
}

// ---- Inputs and results ------------------------------------------------------------------------

struct Inputs {
  AttentionShape shape;
  std::vector<float> q, k, v;
};

// Q and K uniform in [-magnitude, magnitude), V in [-1, 1); the same for the same seed.
inline Inputs make_inputs(const AttentionShape& shape, std::uint64_t seed,
                          float magnitude = 1.0f) {
  Inputs in;
  in.shape = shape;
  in.q = naive::random_vector(shape.q_size(), seed * 3 + 1, -magnitude, magnitude);
  in.k = naive::random_vector(shape.k_size(), seed * 3 + 2, -magnitude, magnitude);
  in.v = naive::random_vector(shape.v_size(), seed * 3 + 3);
  return in;
}

inline AttentionShape make_shape(std::int64_t batch, std::int64_t q_len, std::int64_t kv_len,
                                 std::int64_t heads, std::int64_t kv_groups,
                                 std::int64_t head_dim, std::int64_t value_dim) {
  AttentionShape s;
  s.batch = batch;
  s.q_len = q_len;
  s.kv_len = kv_len;
  s.heads = heads;
  s.kv_groups = kv_groups;
  s.head_dim = head_dim;
  s.value_dim = value_dim;
  return s;
}

inline std::string describe(const AttentionShape& s) {
  std::ostringstream out;
  out << "batch " << s.batch << ", q_len " << s.q_len << ", kv_len " << s.kv_len << ", heads "
      << s.heads << ", kv_groups " << s.kv_groups << ", head_dim " << s.head_dim
      << ", value_dim " << s.value_dim;
  return out.str();
}

struct LibResult {
  std::vector<float> o, lse;
};

// `kernel` on contiguous views of `in`; o and lse start as NaN, so anything left unwritten shows.
inline LibResult run_kernel(const Kernel& kernel, const Inputs& in, const KernelOptions& options) {
  const AttentionShape& s = in.shape;
  LibResult r;
  r.o.assign(static_cast<std::size_t>(s.o_size()), std::numeric_limits<float>::quiet_NaN());
  r.lse.assign(static_cast<std::size_t>(s.lse_size()), std::numeric_limits<float>::quiet_NaN());
  const TensorView<const float> q(in.q.data(), s.q_size(), s.batch, s.q_len, s.heads, s.head_dim);
  const TensorView<const float> k(in.k.data(), s.k_size(), s.batch, s.kv_len, s.kv_groups,
                                  s.head_dim);
  const TensorView<const float> v(in.v.data(), s.v_size(), s.batch, s.kv_len, s.kv_groups,
                                  s.value_dim);
  const TensorView<float> o(r.o.data(), s.o_size(), s.batch, s.q_len, s.heads, s.value_dim);
  kernel.run(q, k, v, o, options, LseOutput{r.lse.data(), s.lse_size()});
  return r;
}

struct Oracle {
  naive::AttentionResult<double> exact;
  naive::AttentionResult<float> fp32;
};

inline Oracle run_oracle(const Inputs& in, const KernelOptions& options) {
  std::optional<double> scale;
  if (options.scale) scale = static_cast<double>(*options.scale);
  Oracle oracle;
  oracle.exact = naive::attention<double>(in.shape, in.q.data(), in.k.data(), in.v.data(),
                                          options.causal, scale);
  oracle.fp32 = naive::attention<float>(in.shape, in.q.data(), in.k.data(), in.v.data(),
                                        options.causal, scale);
  return oracle;
}

inline void expect_meets_standard(const LibResult& lib, const Oracle& oracle) {
  EXPECT_FALSE(naive::any_nan(lib.o)) << "NaN in the output";
  EXPECT_FALSE(naive::any_nan(lib.lse)) << "NaN in the log-sum-exp";
  EXPECT_TRUE(naive::within_standard("o", lib.o, oracle.exact.o, oracle.fp32.o));
  EXPECT_TRUE(naive::within_standard("lse", lib.lse, oracle.exact.lse, oracle.fp32.lse));
}

// Runs `kernel` on `in` and checks it against the oracle; returns the kernel's result.
inline LibResult check(const Kernel& kernel, const Inputs& in, const KernelOptions& options) {
  const LibResult lib = run_kernel(kernel, in, options);
  expect_meets_standard(lib, run_oracle(in, options));
  return lib;
}

// ---- Strided views -----------------------------------------------------------------------------

// A buffer holding one tensor at an arbitrary layout: element (b, t, h, x) lives at
// offset + b·bs + t·ts + h·hs + x. Everything else holds kSentinel.
constexpr float kSentinel = 12345.0f;

struct Strided {
  std::vector<float> buffer;
  std::int64_t offset = 0, batch = 0, tokens = 0, heads = 0, dim = 0, bs = 0, ts = 0, hs = 0;

  std::int64_t at(std::int64_t b, std::int64_t t, std::int64_t h, std::int64_t x) const {
    return offset + b * bs + t * ts + h * hs + x;
  }
  template <class T>
  TensorView<T> view() {
    return TensorView<T>::strided(buffer.data() + offset,
                                  static_cast<std::int64_t>(buffer.size()) - offset, batch,
                                  tokens, heads, dim, bs, ts, hs);
  }
  // Copies the contiguous [batch, tokens, heads, dim] `values` in.
  void scatter(const std::vector<float>& values) {
    for (std::int64_t b = 0; b < batch; ++b)
      for (std::int64_t t = 0; t < tokens; ++t)
        for (std::int64_t h = 0; h < heads; ++h)
          for (std::int64_t x = 0; x < dim; ++x)
            buffer[static_cast<std::size_t>(at(b, t, h, x))] =
                values[static_cast<std::size_t>(((b * tokens + t) * heads + h) * dim + x)];
  }
  std::vector<float> gather() const {
    std::vector<float> values(static_cast<std::size_t>(batch * tokens * heads * dim));
    for (std::int64_t b = 0; b < batch; ++b)
      for (std::int64_t t = 0; t < tokens; ++t)
        for (std::int64_t h = 0; h < heads; ++h)
          for (std::int64_t x = 0; x < dim; ++x)
            values[static_cast<std::size_t>(((b * tokens + t) * heads + h) * dim + x)] =
                buffer[static_cast<std::size_t>(at(b, t, h, x))];
    return values;
  }
};

// Head-major [batch, heads, tokens, dim], contiguous otherwise.
inline Strided head_major(std::int64_t batch, std::int64_t tokens, std::int64_t heads,
                          std::int64_t dim) {
  Strided s;
  s.batch = batch, s.tokens = tokens, s.heads = heads, s.dim = dim;
  s.hs = tokens * dim;
  s.ts = dim;
  s.bs = heads * tokens * dim;
  s.buffer.assign(static_cast<std::size_t>(batch * tokens * heads * dim), kSentinel);
  return s;
}

// Token-major with padding after every head row, every token and every batch, at an offset
// into a larger buffer that also has a tail.
inline Strided padded(std::int64_t batch, std::int64_t tokens, std::int64_t heads,
                      std::int64_t dim) {
  Strided s;
  s.batch = batch, s.tokens = tokens, s.heads = heads, s.dim = dim;
  s.offset = 5;
  s.hs = dim + 3;
  s.ts = heads * s.hs + 2;
  s.bs = tokens * s.ts + 7;
  s.buffer.assign(static_cast<std::size_t>(s.offset + batch * s.bs + 11), kSentinel);
  return s;
}

// Counts elements of the buffer outside the tensor that no longer hold the sentinel.
inline std::int64_t touched_padding(const Strided& s) {
  std::vector<char> inside(s.buffer.size(), 0);
  for (std::int64_t b = 0; b < s.batch; ++b)
    for (std::int64_t t = 0; t < s.tokens; ++t)
      for (std::int64_t h = 0; h < s.heads; ++h)
        for (std::int64_t x = 0; x < s.dim; ++x)
          inside[static_cast<std::size_t>(s.at(b, t, h, x))] = 1;
  std::int64_t touched = 0;
  for (std::size_t i = 0; i < s.buffer.size(); ++i)
    touched += !inside[i] && s.buffer[i] != kSentinel;
  return touched;
}

using Layout = Strided (*)(std::int64_t, std::int64_t, std::int64_t, std::int64_t);

// `kernel` on the inputs laid out by `layout` (output too) must meet the standard, agree with
// the contiguous call within the same bound, and write nothing outside the output view.
inline void check_strided(const Kernel& kernel, Layout layout, const AttentionShape& shape,
                          bool causal) {
  SCOPED_TRACE(describe(shape) + (causal ? ", causal" : ""));
  const Inputs in = make_inputs(shape, static_cast<std::uint64_t>(shape.q_len * 7 + shape.kv_len));
  KernelOptions options;
  options.causal = causal;
  const Oracle oracle = run_oracle(in, options);
  const LibResult contiguous = run_kernel(kernel, in, options);

  Strided q = layout(shape.batch, shape.q_len, shape.heads, shape.head_dim);
  Strided k = layout(shape.batch, shape.kv_len, shape.kv_groups, shape.head_dim);
  Strided v = layout(shape.batch, shape.kv_len, shape.kv_groups, shape.value_dim);
  Strided o = layout(shape.batch, shape.q_len, shape.heads, shape.value_dim);
  q.scatter(in.q);
  k.scatter(in.k);
  v.scatter(in.v);
  std::vector<float> lse(static_cast<std::size_t>(shape.lse_size()), kSentinel);
  kernel.run(q.view<const float>(), k.view<const float>(), v.view<const float>(),
             o.view<float>(), options, LseOutput{lse.data(), shape.lse_size()});
  const LibResult strided{o.gather(), lse};
  expect_meets_standard(strided, oracle);
  // The same result as the contiguous call, within the same standard.
  EXPECT_LE(naive::max_abs_error(strided.o, contiguous.o),
            2.0 * naive::max_abs_error(oracle.fp32.o, oracle.exact.o) + 1e-6);
  EXPECT_LE(naive::max_abs_error(strided.lse, contiguous.lse),
            2.0 * naive::max_abs_error(oracle.fp32.lse, oracle.exact.lse) + 1e-6);
  EXPECT_EQ(touched_padding(o), 0) << "the kernel wrote outside the output view";
}

// Rows that see no key (causal with q_len > kv_len: the first q_len - kv_len queries) must be
// exactly 0 with a log-sum-exp of -inf; every other row finite.
inline void expect_masked_rows_empty(const AttentionShape& shape, bool causal,
                                     const LibResult& lib) {
  std::int64_t failures = 0;
  for (std::int64_t b = 0; b < shape.batch; ++b)
    for (std::int64_t h = 0; h < shape.heads; ++h)
      for (std::int64_t i = 0; i < shape.q_len && failures < 10; ++i) {
        const bool masked = causal && i < shape.q_len - shape.kv_len;
        const float lse =
            lib.lse[static_cast<std::size_t>((b * shape.heads + h) * shape.q_len + i)];
        if (masked) {
          failures += lse != -std::numeric_limits<float>::infinity();
          EXPECT_EQ(lse, -std::numeric_limits<float>::infinity())
              << "b " << b << " h " << h << " i " << i;
        } else {
          failures += !std::isfinite(lse);
          EXPECT_TRUE(std::isfinite(lse)) << "lse " << lse << ", b " << b << " h " << h << " i " << i;
        }
        for (std::int64_t d = 0; d < shape.value_dim; ++d) {
          const float o = lib.o[static_cast<std::size_t>(
              ((b * shape.q_len + i) * shape.heads + h) * shape.value_dim + d)];
          if (masked ? o != 0.0f : !std::isfinite(o)) {
            ++failures;
            ADD_FAILURE() << "o " << o << (masked ? " in a fully masked row" : "") << ", b " << b
                          << " h " << h << " i " << i << " d " << d;
            break;
          }
        }
      }
}

}  // namespace kernel_testing

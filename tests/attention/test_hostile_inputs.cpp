// Hostile inputs through the kernels' public entry points: windows of any width, outputs that
// overlap inputs, masks shorter than their shape, absurd thread counts, hooks that throw and
// degenerate parameters. Each either gets a clear std::invalid_argument, thrown before anything
// is written, or a defined result.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "support/kernel_testing.hpp"

namespace {

using namespace kernel_testing;
using multihead::MaskView;
using multihead::ScoreSite;
using multihead::Span;

constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();

class HostileInputs : public ::testing::TestWithParam<Kernel> {};

// Expects `call` to throw std::invalid_argument whose message holds `text`.
template <class Call>
void expect_invalid(Call&& call, const std::string& text) {
  try {
    call();
    ADD_FAILURE() << "no exception; expected one naming \"" << text << "\"";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
  }
}

// A window of INT64_MAX keys, on either side, means the same as an unbounded one (−1): no
// overflow in the range arithmetic (UB, and every row "saw nothing" without sanitizers), also
// where q_len > kv_len puts the diagonal before the first key.
TEST_P(HostileInputs, HugeWindowsMeanUnbounded) {
  for (const AttentionShape& s : {make_shape(2, 9, 40, 4, 2, 16, 16), make_shape(1, 30, 7, 2, 1, 8, 8)})
    for (const bool causal : {false, true}) {
      SCOPED_TRACE(describe(s) + (causal ? ", causal" : ""));
      const Inputs in = make_inputs(s, 3);
      KernelOptions unbounded;
      unbounded.causal = causal;
      const LibResult want = run_kernel(GetParam(), in, unbounded);
      for (const auto& [left, right] : {std::pair<std::int64_t, std::int64_t>{kMax, -1},
                                        {-1, kMax}, {kMax, kMax}, {kMax - 1, kMax - 2}}) {
        KernelOptions huge = unbounded;
        huge.window_left = left;
        huge.window_right = right;
        const LibResult got = run_kernel(GetParam(), in, huge);
        EXPECT_EQ(got.o, want.o) << "window " << left << ", " << right;
        EXPECT_EQ(got.lse, want.lse) << "window " << left << ", " << right;
      }
    }
}

// Buffers for one call, o and lse in one allocation so that they can be made to overlap.
struct Call {
  AttentionShape s = make_shape(1, 4, 6, 2, 1, 8, 8);
  Inputs in = make_inputs(s, 8);
  std::vector<float> out = std::vector<float>(std::size_t(s.o_size() + s.lse_size()), kSentinel);

  TensorView<const float> q() const { return {in.q.data(), s.q_size(), 1, s.q_len, s.heads, s.head_dim}; }
  TensorView<const float> k() const { return {in.k.data(), s.k_size(), 1, s.kv_len, s.kv_groups, s.head_dim}; }
  TensorView<const float> v() const { return {in.v.data(), s.v_size(), 1, s.kv_len, s.kv_groups, s.value_dim}; }
  TensorView<float> o(float* at) const { return {at, s.o_size(), 1, s.q_len, s.heads, s.value_dim}; }
};

TEST_P(HostileInputs, OutputsOverlappingInputsOrEachOtherAreRejected) {
  const Kernel kernel = GetParam();
  Call c;
  const std::vector<float> before = c.out;
  float* o = c.out.data();
  const LseOutput lse{o + c.s.o_size(), c.s.lse_size()};
  // The LSE span inside o.
  expect_invalid([&] { kernel.run(c.q(), c.k(), c.v(), c.o(o), {}, LseOutput{o + 3, c.s.lse_size()}); },
                 "lse overlaps o");
  // o over the end of v: writable memory that is also an input.
  std::vector<float> buffer(120);
  std::copy(c.in.v.begin(), c.in.v.end(), buffer.begin());
  expect_invalid(
      [&] {
        kernel.run(c.q(), c.k(),
                   TensorView<const float>(buffer.data(), c.s.v_size(), 1, c.s.kv_len, 1, 8),
                   c.o(buffer.data() + 40), {}, lse);
      },
      "o overlaps v");
  // o shifted one row against q: partly the same memory.
  std::vector<float> q = c.in.q;
  q.resize(q.size() + 16);
  expect_invalid(
      [&] {
        kernel.run(TensorView<const float>(q.data(), c.s.q_size(), 1, 4, 2, 8), c.k(), c.v(),
                   TensorView<float>(q.data() + 8, c.s.o_size(), 1, 4, 2, 8), {}, lse);
      },
      "o overlaps q");
  // An LSE span over the slope table: the slopes, then room for the rest of the LSE.
  std::vector<float> slopes = {0.5f, 0.25f, 0, 0, 0, 0, 0, 0};
  KernelOptions options;
  options.alibi_slopes = {slopes.data(), 2};
  expect_invalid(
      [&] { kernel.run(c.q(), c.k(), c.v(), c.o(o), options, LseOutput{slopes.data(), 8}); },
      "lse overlaps alibi_slopes");
  EXPECT_EQ(c.out, before) << "a rejected call wrote";
}

// o may be q itself, the same view (in place, when head_dim = value_dim): the same values as
// into a separate buffer.
TEST_P(HostileInputs, OutputInPlaceOfTheQueriesMatchesASeparateOutput) {
  const AttentionShape s = make_shape(2, 70, 90, 8, 2, 64, 64);
  const Inputs in = make_inputs(s, 12);
  KernelOptions options;
  options.causal = true;
  const LibResult want = run_kernel(GetParam(), in, options);
  std::vector<float> q = in.q;
  GetParam().run(TensorView<const float>(q.data(), s.q_size(), 2, 70, 8, 64),
                 TensorView<const float>(in.k.data(), s.k_size(), 2, 90, 2, 64),
                 TensorView<const float>(in.v.data(), s.v_size(), 2, 90, 2, 64),
                 TensorView<float>(q.data(), s.o_size(), 2, 70, 8, 64), options, {});
  EXPECT_EQ(q, want.o);
}

TEST_P(HostileInputs, MasksCarryTheirSizeAndAShortOneIsRejected) {
  Call c;
  const std::vector<float> before = c.out;
  std::vector<float> additive(std::size_t(c.s.q_len * c.s.kv_len) - 1, 0.0f);  // one short
  KernelOptions options;
  options.additive_mask = MaskView<float>(additive.data(), std::int64_t(additive.size()), 1, 1,
                                          c.s.q_len, c.s.kv_len);
  expect_invalid([&] { GetParam().run(c.q(), c.k(), c.v(), c.o(c.out.data()), options, {}); },
                 "additive_mask: size (23) does not match its shape [1, 1, 4, 6] (24 elements)");
  options.additive_mask = {};
  options.boolean_mask = MaskView<bool>(nullptr, 24, 1, 1, 4, 6);
  expect_invalid([&] { GetParam().run(c.q(), c.k(), c.v(), c.o(c.out.data()), options, {}); },
                 "boolean_mask: data is null but size is 24");
  EXPECT_EQ(c.out, before) << "a rejected call wrote";
}

// A million threads asked for: as many as the work and the processors can use, the same
// result as two.
TEST_P(HostileInputs, AbsurdThreadCountsAreCapped) {
  const AttentionShape s = make_shape(2, 33, 300, 4, 2, 32, 32);
  const Inputs in = make_inputs(s, 4);
  KernelOptions two;
  two.threads = 2;
  KernelOptions million = two;
  million.threads = 1000000;
  const LibResult want = run_kernel(GetParam(), in, two), got = run_kernel(GetParam(), in, million);
  for (std::size_t i = 0; i < want.o.size(); ++i) ASSERT_NEAR(got.o[i], want.o[i], 1e-6f) << i;
}

// A custom hook that throws: the exception reaches the caller (at any thread count), the
// process goes on.
struct ThrowingModifier {
  std::int64_t key;
  float logit(float s, const ScoreSite& at) const {
    if (at.key == key) throw std::runtime_error("hook refused key " + std::to_string(key));
    return s;
  }
};

TEST_P(HostileInputs, AThrowingModifierHookThrowsToTheCaller) {
  const AttentionShape s = make_shape(2, 20, 50, 4, 2, 16, 16);
  const Inputs in = make_inputs(s, 6);
  const ThrowingModifier modifier{37};
  for (const int threads : {1, 2}) {
    KernelOptions options;
    options.threads = threads;
    options.modifier = multihead::ModifierRef(modifier);
    try {
      run_kernel(GetParam(), in, options);
      ADD_FAILURE() << "no exception at " << threads << " threads";
    } catch (const std::runtime_error& e) {
      EXPECT_STREQ(e.what(), "hook refused key 37");
    }
  }
}

TEST_P(HostileInputs, DegenerateParametersAreRejected) {
  Call c;
  KernelOptions options;
  options.softcap = 1e-40f;  // subnormal: 1/cap is inf, and 0·inf NaN
  expect_invalid([&] { GetParam().run(c.q(), c.k(), c.v(), c.o(c.out.data()), options, {}); },
                 "(the smallest normal float)");
}

// A view of one token (or one batch entry, or one head) may carry any stride on that axis: it is
// never used. The kernels once multiplied such a stride (the prefetch) and stepped a pointer by it
// past the last row (P·V): undefined behaviour for a stride of 2^62, found by the fuzzer.
TEST_P(HostileInputs, OneTokenViewsMayCarryAnyStride) {
  const AttentionShape s = make_shape(1, 3, 1, 2, 1, 16, 16);
  const Inputs in = make_inputs(s, 2);
  const LibResult want = run_kernel(GetParam(), in, {});
  const std::int64_t huge = std::int64_t{1} << 62;
  std::vector<float> o(std::size_t(s.o_size()));
  GetParam().run(TensorView<const float>(in.q.data(), s.q_size(), 1, 3, 2, 16),
                 TensorView<const float>::strided(in.k.data(), s.k_size(), 1, 1, 1, 16, huge, huge, huge),
                 TensorView<const float>::strided(in.v.data(), s.v_size(), 1, 1, 1, 16, huge, huge, huge),
                 TensorView<float>(o.data(), s.o_size(), 1, 3, 2, 16), {}, {});
  EXPECT_EQ(o, want.o);
}

INSTANTIATE_TEST_SUITE_P(Kernels, HostileInputs, ::testing::ValuesIn(kKernels), kernel_param_name);

// The messages name what is wrong: a null offsets array is null, not "got 3".
TEST(HostileInputsVarlen, NullOffsetsAreReportedAsNull) {
  const AttentionShape s = make_shape(1, 6, 6, 2, 1, 8, 8);
  const Inputs in = make_inputs(s, 1);
  std::vector<float> o(std::size_t(s.o_size()));
  const std::int64_t cu[] = {0, 2, 6};
  expect_invalid(
      [&] {
        multihead::fused_attention_varlen(
            TensorView<const float>(in.q.data(), s.q_size(), 1, 6, 2, 8),
            TensorView<const float>(in.k.data(), s.k_size(), 1, 6, 1, 8),
            TensorView<const float>(in.v.data(), s.v_size(), 1, 6, 1, 8),
            TensorView<float>(o.data(), s.o_size(), 1, 6, 2, 8), Span<const std::int64_t>{nullptr, 3},
            Span<const std::int64_t>{cu, 3});
      },
      "cu_seqlens_q: data is null (size 3)");
}

TEST(HostileInputsState, NegativeExtentsAreInvalidArguments) {
  expect_invalid([] { multihead::SoftmaxState(-1, 5); }, "SoftmaxState: rows (-1) must not be negative");
  expect_invalid([] { multihead::SoftmaxState(2, -5); }, "SoftmaxState: dim (-5) must not be negative");
}

}  // namespace

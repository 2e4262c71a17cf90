// The validation layer: every error it raises, with its message, and that nothing is written
// before it throws.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include <multihead/multihead.hpp>

#include "support/naive_reference.hpp"
#include "support/testing.hpp"

namespace {

using multihead::KernelOptions;
using multihead::KernelShape;
using multihead::LayerConfig;
using multihead::LseOutput;
using multihead::Projection;
using multihead::RowMatrix;
using multihead::TensorView;


constexpr std::int64_t kHuge = std::int64_t{1} << 40;

// ---- LayerConfig -------------------------------------------------------------------------------

LayerConfig good_layer() {
  LayerConfig c;
  c.model_dim = 64;
  c.heads = 8;
  c.kv_groups = 2;
  c.head_dim = 16;
  return c;
}

TEST(LayerConfigValidation, AcceptsAGoodConfig) {
  EXPECT_NO_THROW(good_layer().validate());
  LayerConfig c = good_layer();
  c.value_dim = 24;
  c.scale = 0.5f;
  c.bias = true;
  EXPECT_NO_THROW(c.validate());
  EXPECT_EQ(c.v_dim(), 24);
  EXPECT_EQ(c.group_size(), 4);
  EXPECT_EQ(good_layer().v_dim(), 16);  // value_dim defaults to head_dim
}

TEST(LayerConfigValidation, RejectsNonPositiveSizes) {
  for (std::int64_t bad : {std::int64_t{0}, std::int64_t{-1}, std::int64_t{-7}}) {
    const std::string v = "(" + std::to_string(bad) + ") must be positive";
    LayerConfig c = good_layer();
    c.model_dim = bad;
    EXPECT_INVALID("model_dim " + v, c.validate());
    c = good_layer();
    c.heads = bad;
    EXPECT_INVALID("heads " + v, c.validate());
    c = good_layer();
    c.kv_groups = bad;
    EXPECT_INVALID("kv_groups " + v, c.validate());
    c = good_layer();
    c.head_dim = bad;
    EXPECT_INVALID("head_dim " + v, c.validate());
    c = good_layer();
    c.value_dim = bad;
    EXPECT_INVALID("value_dim " + v, c.validate());
  }
}

TEST(LayerConfigValidation, RejectsBadGroups) {
  LayerConfig c = good_layer();
  c.heads = 4;
  c.kv_groups = 8;
  EXPECT_INVALID("kv_groups (8) must not exceed heads (4)", c.validate());
  c.heads = 12;
  c.kv_groups = 5;
  EXPECT_INVALID("heads (12) must be divisible by kv_groups (5)", c.validate());
  c.kv_groups = 8;
  EXPECT_INVALID("heads (12) must be divisible by kv_groups (8)", c.validate());
}

TEST(LayerConfigValidation, RejectsBadScale) {
  LayerConfig c = good_layer();
  c.scale = 0.0f;
  EXPECT_INVALID("scale (0) must be positive and finite", c.validate());
  c.scale = -0.5f;
  EXPECT_INVALID("scale (-0.5) must be positive and finite", c.validate());
  c.scale = std::numeric_limits<float>::infinity();
  EXPECT_INVALID("must be positive and finite", c.validate());
  c.scale = std::numeric_limits<float>::quiet_NaN();
  EXPECT_INVALID("must be positive and finite", c.validate());
}

TEST(LayerConfigValidation, RejectsSizesThatOverflow) {
  LayerConfig c = good_layer();
  c.model_dim = kHuge;
  c.heads = std::int64_t{1} << 20;
  c.kv_groups = 1;
  c.head_dim = 1 << 10;
  EXPECT_INVALID("weight size (floats of Wq, Wk, Wv, Wo and their biases) overflows", c.validate());
  // Wq fits, Wo does not: a huge value_dim.
  c = good_layer();
  c.model_dim = kHuge;
  c.head_dim = 1;
  c.value_dim = kHuge;
  EXPECT_INVALID("weight size (floats of Wq, Wk, Wv, Wo and their biases) overflows", c.validate());
}

// Weights whose floats fit in 64 bits but whose bytes do not: refused by validate(), not by a
// std::bad_alloc from the constructor.
TEST(LayerConfigValidation, RejectsWeightsWhoseBytesOverflow) {
  LayerConfig c = good_layer();
  c.model_dim = std::int64_t{1} << 60;
  c.heads = c.kv_groups = c.head_dim = 1;
  EXPECT_EQ(c.weight_floats(), std::int64_t{1} << 62);
  EXPECT_INVALID("weight bytes overflows", c.validate());
  EXPECT_INVALID("weight bytes overflows", multihead::MHA{c});
}

// Sums of user sizes in the MLA config are checked too: they overflowed (undefined behaviour)
// and the config was accepted.
TEST(LatentConfigValidation, RejectsSizesWhoseSumsOverflow) {
  const std::int64_t max = std::numeric_limits<std::int64_t>::max();
  multihead::LatentConfig c = multihead::LatentConfig::deepseek_v2_lite();
  c.nope_dim = max - 1;
  EXPECT_INVALID("qk_dim (nope_dim + rope_dim) overflows", c.validate());
  c = multihead::LatentConfig::deepseek_v2_lite();
  c.latent_dim = max - 10;
  EXPECT_INVALID("cached_dim (latent_dim + rope_dim) overflows", c.validate());
  c = multihead::LatentConfig::deepseek_v2_lite();
  c.model_dim = c.heads = c.latent_dim = 1;
  c.rope_dim = 0;
  c.nope_dim = max / 2 + 1;
  c.value_dim = max / 2 + 1;
  EXPECT_INVALID("nope_dim + value_dim overflows", c.validate());
  c = multihead::LatentConfig::deepseek_v3();
  c.model_dim = std::int64_t{1} << 50;
  EXPECT_INVALID("overflows", c.validate());
}

// A RoPE base so small that its angles are infinite (the table was NaN, the layer's output 0).
TEST(RopeConfigValidation, RejectsABaseWhoseAnglesAreNotFinite) {
  multihead::RopeConfig rope;
  rope.base = 5e-324;
  EXPECT_INVALID("rope.base (4.94066e-324) is too small", rope.validate(64));
  LayerConfig c = good_layer();
  c.head_dim = 64;
  c.rope = rope;
  EXPECT_INVALID("rope.base", c.validate());
  c.head_dim = 16;  // base^(−14/16) ≈ 1e283 rad per position: finite angles, accepted
  EXPECT_NO_THROW(c.validate());
  rope.base = 0.5;  // below 1 but finite angles: accepted
  EXPECT_NO_THROW(rope.validate(64));
}

// ---- KernelShape -------------------------------------------------------------------------------

KernelShape good_shape() {
  KernelShape s;
  s.batch = 2;
  s.q_len = 3;
  s.kv_len = 5;
  s.heads = 4;
  s.kv_groups = 2;
  s.head_dim = 8;
  s.value_dim = 6;
  return s;
}

TEST(KernelShapeValidation, AcceptsAGoodShape) {
  EXPECT_NO_THROW(good_shape().validate());
  EXPECT_EQ(good_shape().group_size(), 2);
}

TEST(KernelShapeValidation, RejectsNonPositiveExtents) {
  std::int64_t KernelShape::*fields[] = {&KernelShape::batch,     &KernelShape::q_len,
                                         &KernelShape::kv_len,    &KernelShape::heads,
                                         &KernelShape::kv_groups, &KernelShape::head_dim,
                                         &KernelShape::value_dim};
  const char* names[] = {"batch", "q_len", "kv_len", "heads", "kv_groups", "head_dim",
                         "value_dim"};
  for (int i = 0; i < 7; ++i)
    for (std::int64_t bad : {std::int64_t{0}, std::int64_t{-3}}) {
      KernelShape s = good_shape();
      s.*fields[i] = bad;
      EXPECT_INVALID(std::string(names[i]) + " (" + std::to_string(bad) + ") must be positive",
                     s.validate());
    }
}

TEST(KernelShapeValidation, RejectsBadGroups) {
  KernelShape s = good_shape();
  s.kv_groups = 8;
  EXPECT_INVALID("kv_groups (8) must not exceed heads (4)", s.validate());
  s.heads = 12;
  s.kv_groups = 5;
  EXPECT_INVALID("heads (12) must be divisible by kv_groups (5)", s.validate());
}

TEST(KernelShapeValidation, RejectsSizesThatOverflow) {
  KernelShape s = good_shape();
  s.batch = s.q_len = s.heads = kHuge;
  s.kv_groups = 1;
  EXPECT_INVALID("q size (batch * q_len * heads * head_dim) overflows", s.validate());

  s = good_shape();  // q fits; o does not
  s.head_dim = 1;
  s.value_dim = kHuge;
  s.batch = s.q_len = std::int64_t{1} << 12;
  EXPECT_INVALID("o size (batch * q_len * heads * value_dim) overflows", s.validate());

  s = KernelShape{1, 1, std::int64_t{1} << 32, 1, 1, std::int64_t{1} << 32, 1};
  EXPECT_INVALID("k size (batch * kv_len * kv_groups * head_dim) overflows", s.validate());

  s = KernelShape{1, 1, std::int64_t{1} << 32, 1, 1, 1, std::int64_t{1} << 32};
  EXPECT_INVALID("v size (batch * kv_len * kv_groups * value_dim) overflows", s.validate());

  s = KernelShape{1, std::int64_t{1} << 32, std::int64_t{1} << 32, 1, 1, 1, 1};
  EXPECT_INVALID("scores per head (q_len * kv_len) overflows", s.validate());
}

// ---- Kernel arguments --------------------------------------------------------------------------

constexpr float kSentinel = -777.0f;

// One good call of reference_attention (batch 2, q_len 3, kv_len 5, heads 4, kv_groups 2,
// head_dim 8, value_dim 6); each test breaks one argument and checks the error and that o and
// lse still hold their sentinel.
class KernelArgs : public ::testing::Test {
 protected:
  static constexpr std::int64_t B = 2, Q = 3, KV = 5, H = 4, G = 2, D = 8, DV = 6;

  KernelArgs()
      : q_(naive::random_vector(B * Q * H * D, 1)),
        k_(naive::random_vector(B * KV * G * D, 2)),
        v_(naive::random_vector(B * KV * G * DV, 3)),
        o_(static_cast<std::size_t>(B * Q * H * DV + 64), kSentinel),
        lse_(static_cast<std::size_t>(B * H * Q + 8), kSentinel) {
    reset();
  }

  void reset() {
    q = TensorView<const float>(q_.data(), B * Q * H * D, B, Q, H, D);
    k = TensorView<const float>(k_.data(), B * KV * G * D, B, KV, G, D);
    v = TensorView<const float>(v_.data(), B * KV * G * DV, B, KV, G, DV);
    o = TensorView<float>(o_.data(), B * Q * H * DV, B, Q, H, DV);
    lse = LseOutput{lse_.data(), B * H * Q};
    options = KernelOptions{};
    std::fill(o_.begin(), o_.end(), kSentinel);
    std::fill(lse_.begin(), lse_.end(), kSentinel);
  }

  void run() { multihead::reference_attention(q, k, v, o, options, lse); }

  bool untouched() const {
    for (float x : o_)
      if (x != kSentinel) return false;
    for (float x : lse_)
      if (x != kSentinel) return false;
    return true;
  }

  // The call as it stands must throw with `expected` in the message and leave o and lse alone;
  // then the arguments are reset to the good call.
  void expect_rejected(const std::string& expected, const char* file, int line) {
    test_support::expect_invalid([this] { run(); }, {expected}, file, line);
    const ::testing::ScopedTrace trace(file, line, expected);
    EXPECT_TRUE(untouched()) << "the kernel wrote its output before throwing";
    reset();
  }

  std::vector<float> q_, k_, v_, o_, lse_;
  TensorView<const float> q, k, v;
  TensorView<float> o;
  LseOutput lse;
  KernelOptions options;
};

#define EXPECT_REJECTED(expected) expect_rejected(expected, __FILE__, __LINE__)

TEST_F(KernelArgs, TheGoodCallWritesOutputAndLse) {
  for (bool causal : {false, true}) {
    options.causal = causal;
    ASSERT_NO_THROW(run());
    EXPECT_NE(o_[0], kSentinel);
    EXPECT_NE(o_[static_cast<std::size_t>(B * Q * H * DV - 1)], kSentinel);
    EXPECT_EQ(o_[static_cast<std::size_t>(B * Q * H * DV)], kSentinel);  // past the view
    EXPECT_NE(lse_[static_cast<std::size_t>(B * H * Q - 1)], kSentinel);
    EXPECT_EQ(lse_[static_cast<std::size_t>(B * H * Q)], kSentinel);
    reset();
  }
}

TEST_F(KernelArgs, ContiguousBufferSizeMustMatch) {
  q = TensorView<const float>(q_.data(), 191, B, Q, H, D);
  EXPECT_REJECTED("q: buffer size (191) does not match its shape [2, 3, 4, 8] (192 elements)");
  k = TensorView<const float>(k_.data(), 161, B, KV, G, D);
  EXPECT_REJECTED("k: buffer size (161) does not match its shape [2, 5, 2, 8] (160 elements)");
  v = TensorView<const float>(v_.data(), 119, B, KV, G, DV);
  EXPECT_REJECTED("v: buffer size (119) does not match its shape [2, 5, 2, 6] (120 elements)");
  o = TensorView<float>(o_.data(), 143, B, Q, H, DV);
  EXPECT_REJECTED("o: buffer size (143) does not match its shape [2, 3, 4, 6] (144 elements)");
  o = TensorView<float>(o_.data(), 145, B, Q, H, DV);  // too large is as wrong as too small
  EXPECT_REJECTED("o: buffer size (145) does not match its shape [2, 3, 4, 6] (144 elements)");
}

TEST_F(KernelArgs, StridedBufferMustBeLargeEnough) {
  // Contiguous strides: the last element is at 159, so 160 elements are needed.
  k = TensorView<const float>::strided(k_.data(), 159, B, KV, G, D, 80, 16, 8);
  EXPECT_REJECTED(
      "k: buffer size (159) is too small for shape [2, 5, 2, 8] with strides [80, 16, 8, 1] "
      "(needs 160 elements)");
  // The same view with a large enough buffer is fine (and may be larger than needed).
  k = TensorView<const float>::strided(k_.data(), 160, B, KV, G, D, 80, 16, 8);
  EXPECT_NO_THROW(run());
  reset();
  // Padded rows: head rows 10 apart, tokens 25, batches 130; the end is 6 + 130 + 4*25 + 10.
  std::vector<float> padded(400, 0.5f);
  v = TensorView<const float>::strided(padded.data(), 245, B, KV, G, DV, 130, 25, 10);
  EXPECT_REJECTED(
      "v: buffer size (245) is too small for shape [2, 5, 2, 6] with strides [130, 25, 10, 1] "
      "(needs 246 elements)");
  v = TensorView<const float>::strided(padded.data(), 246, B, KV, G, DV, 130, 25, 10);
  EXPECT_NO_THROW(run());
  reset();
  v = TensorView<const float>::strided(padded.data(), 400, B, KV, G, DV, 130, 25, 10);
  EXPECT_NO_THROW(run());
  reset();
  // Strides whose reach overflows.
  k = TensorView<const float>::strided(k_.data(), 160, B, KV, G, D, 80,
                                       std::int64_t{1} << 62, 8);
  EXPECT_REJECTED("k overflows");
  // Extents whose product overflows.
  q = TensorView<const float>(q_.data(), 192, kHuge, kHuge, 1, 1);
  EXPECT_REJECTED("q overflows");
}

TEST_F(KernelArgs, DataMustNotBeNull) {
  v = TensorView<const float>(nullptr, 120, B, KV, G, DV);
  EXPECT_REJECTED("v: data is null but size is 120");
  o = TensorView<float>::strided(nullptr, 144, B, Q, H, DV, 72, 24, 6);
  EXPECT_REJECTED("o: data is null but size is 144");
  q = TensorView<const float>(nullptr, 0, B, Q, H, D);  // a null, empty buffer: too small
  EXPECT_REJECTED("q: buffer size (0) does not match its shape");
  k = TensorView<const float>::strided(nullptr, 0, B, KV, G, D, 80, 16, 8);
  EXPECT_REJECTED("k: buffer size (0) is too small");
  q = TensorView<const float>();  // a default view has no extents
  EXPECT_REJECTED("q.batch (0) must be positive");
}

TEST_F(KernelArgs, ViewExtentsMustBePositive) {
  q = TensorView<const float>::strided(q_.data(), 192, B, 0, H, D, 96, 32, 8);
  EXPECT_REJECTED("q.tokens (0) must be positive");
  k = TensorView<const float>::strided(k_.data(), 160, -1, KV, G, D, 80, 16, 8);
  EXPECT_REJECTED("k.batch (-1) must be positive");
  v = TensorView<const float>::strided(v_.data(), 120, B, KV, 0, DV, 60, 12, 6);
  EXPECT_REJECTED("v.heads (0) must be positive");
  o = TensorView<float>::strided(o_.data(), 144, B, Q, H, 0, 72, 24, 6);
  EXPECT_REJECTED("o.dim (0) must be positive");
}

TEST_F(KernelArgs, StridesMustNotBeNegative) {
  q = TensorView<const float>::strided(q_.data() + 96, 96, B, Q, H, D, -96, 32, 8);
  EXPECT_REJECTED("q: strides (-96, 32, 8) must not be negative");
  k = TensorView<const float>::strided(k_.data() + 64, 96, B, KV, G, D, 80, -16, 8);
  EXPECT_REJECTED("k: strides (80, -16, 8) must not be negative");
  o = TensorView<float>::strided(o_.data() + 6, 138, B, Q, H, DV, 72, 24, -6);
  EXPECT_REJECTED("o: strides (72, 24, -6) must not be negative");
}

TEST_F(KernelArgs, OutputStridesMustNotOverlap) {
  o = TensorView<float>::strided(o_.data(), 144, B, Q, H, DV, 72, 24, 0);  // heads share a row
  EXPECT_REJECTED("o: strides [72, 24, 0, 1] make elements overlap");
  o = TensorView<float>::strided(o_.data(), 144, B, Q, H, DV, 72, 24, 3);  // rows overlap
  EXPECT_REJECTED("o: strides [72, 24, 3, 1] make elements overlap");
  o = TensorView<float>::strided(o_.data(), 144, B, Q, H, DV, 72, 12, 6);  // tokens overlap
  EXPECT_REJECTED("o: strides [72, 12, 6, 1] make elements overlap");
  o = TensorView<float>::strided(o_.data(), 144, B, Q, H, DV, 24, 24, 6);  // batch = token
  EXPECT_REJECTED("o: strides [24, 24, 6, 1] make elements overlap");
  // Head-major [batch, heads, tokens, dim] is a permutation, not an overlap.
  o = TensorView<float>::strided(o_.data(), 144, B, Q, H, DV, 72, 6, 18);
  EXPECT_NO_THROW(run());
  reset();
  // Inputs may overlap: K and V broadcast one token row to every token.
  k = TensorView<const float>::strided(k_.data(), 160, B, KV, G, D, 80, 0, 8);
  v = TensorView<const float>::strided(v_.data(), 120, B, KV, G, DV, 60, 0, 6);
  EXPECT_NO_THROW(run());
}

TEST_F(KernelArgs, ExtentsMustAgree) {
  k = TensorView<const float>(k_.data(), 80, 1, KV, G, D);
  EXPECT_REJECTED("batch sizes differ: q (2), k (1), v (2), o (2)");
  v = TensorView<const float>(v_.data(), 60, 1, KV, G, DV);
  EXPECT_REJECTED("batch sizes differ: q (2), k (2), v (1), o (2)");
  o = TensorView<float>(o_.data(), 72, 1, Q, H, DV);
  EXPECT_REJECTED("batch sizes differ: q (2), k (2), v (2), o (1)");

  v = TensorView<const float>(v_.data(), 96, B, 4, G, DV);
  EXPECT_REJECTED("k.tokens (5) must equal v.tokens (4)");
  o = TensorView<float>(o_.data(), 96, B, 2, H, DV);
  EXPECT_REJECTED("o.tokens (2) must equal q.tokens (3)");

  v = TensorView<const float>(v_.data(), 60, B, KV, 1, DV);
  EXPECT_REJECTED("k.heads (2) must equal v.heads (1)");
  o = TensorView<float>(o_.data(), 72, B, Q, 2, DV);
  EXPECT_REJECTED("o.heads (2) must equal q.heads (4)");

  k = TensorView<const float>(k_.data(), 140, B, KV, G, 7);
  EXPECT_REJECTED("k.dim (7) must equal q.dim (8)");
  o = TensorView<float>(o_.data(), 120, B, Q, H, 5);
  EXPECT_REJECTED("o.dim (5) must equal v.dim (6)");
}

TEST_F(KernelArgs, KvHeadsMustDivideQueryHeads) {
  std::vector<float> k3(static_cast<std::size_t>(B * KV * 3 * D)), v3(static_cast<std::size_t>(B * KV * 3 * DV));
  k = TensorView<const float>(k3.data(), B * KV * 3 * D, B, KV, 3, D);
  v = TensorView<const float>(v3.data(), B * KV * 3 * DV, B, KV, 3, DV);
  EXPECT_REJECTED("heads (4) must be divisible by kv_groups (3)");
  std::vector<float> k8(static_cast<std::size_t>(B * KV * 8 * D)), v8(static_cast<std::size_t>(B * KV * 8 * DV));
  k = TensorView<const float>(k8.data(), B * KV * 8 * D, B, KV, 8, D);
  v = TensorView<const float>(v8.data(), B * KV * 8 * DV, B, KV, 8, DV);
  EXPECT_REJECTED("kv_groups (8) must not exceed heads (4)");
}

TEST_F(KernelArgs, LseMustMatchBatchHeadsQueries) {
  lse = LseOutput{lse_.data(), 23};
  EXPECT_REJECTED("lse: buffer size (23) does not match [batch, heads, q_len] = [2, 4, 3] (24 elements)");
  lse = LseOutput{lse_.data(), 25};
  EXPECT_REJECTED("lse: buffer size (25) does not match [batch, heads, q_len] = [2, 4, 3] (24 elements)");
  lse = LseOutput{lse_.data(), 0};
  EXPECT_REJECTED("lse: buffer size (0) does not match");
  lse = LseOutput{nullptr, 24};
  EXPECT_REJECTED("lse: data is null but size is 24");
  // No lse at all is fine, and leaves the lse buffer alone.
  lse = LseOutput{};
  EXPECT_NO_THROW(run());
  for (float x : lse_) EXPECT_EQ(x, kSentinel);
}

TEST_F(KernelArgs, ScaleMustBeFinite) {
  options.scale = std::numeric_limits<float>::quiet_NaN();
  EXPECT_REJECTED("must be finite");
  options.scale = std::numeric_limits<float>::infinity();
  EXPECT_REJECTED("scale (inf) must be finite");
  options.scale = -std::numeric_limits<float>::infinity();
  EXPECT_REJECTED("scale (-inf) must be finite");
}

TEST_F(KernelArgs, ThreadsMustNotBeNegative) {
  options.threads = -1;
  EXPECT_REJECTED("threads (-1) must not be negative");
  options.threads = -8;
  EXPECT_REJECTED("threads (-8) must not be negative");
}

// ---- The module --------------------------------------------------------------------------------

LayerConfig small_layer(std::int64_t kv_groups, bool bias = false) {
  LayerConfig c;
  c.model_dim = 16;
  c.heads = 4;
  c.kv_groups = kv_groups;
  c.head_dim = 8;
  c.bias = bias;
  return c;
}

TEST(ModuleValidation, VariantsCheckTheirGroups) {
  EXPECT_INVALID("MHA: kv_groups (2) must equal heads (4)", multihead::MHA{small_layer(2)});
  EXPECT_INVALID("MHA: kv_groups (1) must equal heads (4)", multihead::MHA{small_layer(1)});
  EXPECT_INVALID("MQA: kv_groups (2) must be 1", multihead::MQA{small_layer(2)});
  EXPECT_INVALID("MQA: kv_groups (4) must be 1", multihead::MQA{small_layer(4)});
  EXPECT_NO_THROW(multihead::MHA{small_layer(4)});
  EXPECT_NO_THROW(multihead::MQA{small_layer(1)});
  for (std::int64_t groups : {1, 2, 4}) EXPECT_NO_THROW(multihead::GQA{small_layer(groups)});
  // The config itself is validated first.
  EXPECT_INVALID("heads (4) must be divisible by kv_groups (3)", multihead::GQA{small_layer(3)});
  EXPECT_INVALID("kv_groups (0) must be positive", multihead::MQA{small_layer(0)});
  LayerConfig c = small_layer(4);
  c.scale = -1.0f;
  EXPECT_INVALID("scale (-1) must be positive and finite", multihead::MHA{c});
}

TEST(ModuleValidation, SetWeightChecksTheShapeAndKeepsTheOldWeight) {
  multihead::GQA layer(small_layer(2));
  layer.init_random(1);
  const RowMatrix before = layer.weight(Projection::k);
  EXPECT_INVALID("Wk shape [3, 16] must be [out_features, in_features] = [16, 16]",
                 layer.set_weight(Projection::k, RowMatrix::Ones(3, 16)));
  EXPECT_INVALID("Wk shape [16, 15] must be [out_features, in_features] = [16, 16]",
                 layer.set_weight(Projection::k, RowMatrix::Ones(16, 15)));
  EXPECT_INVALID("Wo shape [32, 16] must be [out_features, in_features] = [16, 32]",
                 layer.set_weight(Projection::o, RowMatrix::Ones(32, 16)));  // transposed
  EXPECT_TRUE(layer.weight(Projection::k) == before);

  const std::vector<float> buffer(600, 1.0f);
  const RowMatrix wq = layer.weight(Projection::q);
  EXPECT_INVALID("Wq: buffer size (511) must be 512",
                 layer.set_weight(Projection::q, buffer.data(), 511));
  EXPECT_INVALID("Wq: buffer size (513) must be 512",
                 layer.set_weight(Projection::q, buffer.data(), 513));
  EXPECT_INVALID("Wv: buffer size (0) must be 256",
                 layer.set_weight(Projection::v, buffer.data(), 0));
  EXPECT_INVALID("Wq: data is null", layer.set_weight(Projection::q, nullptr, 512));
  EXPECT_TRUE(layer.weight(Projection::q) == wq);
  EXPECT_TRUE(layer.weight(Projection::k) == before);
}

TEST(ModuleValidation, SetWeightsChecksAllFourBeforeAssigningAny) {
  multihead::GQA layer(small_layer(2));
  layer.init_random(2);
  const RowMatrix wq = layer.weight(Projection::q), wk = layer.weight(Projection::k),
                  wv = layer.weight(Projection::v), wo = layer.weight(Projection::o);
  const RowMatrix good_q = RowMatrix::Ones(32, 16), good_k = RowMatrix::Ones(16, 16),
                  good_v = RowMatrix::Ones(16, 16), good_o = RowMatrix::Ones(16, 32);
  EXPECT_INVALID("Wo shape [16, 16]",
                 layer.set_weights(good_q, good_k, good_v, RowMatrix::Ones(16, 16)));
  EXPECT_INVALID("Wv shape [8, 16]",
                 layer.set_weights(good_q, good_k, RowMatrix::Ones(8, 16), good_o));
  EXPECT_INVALID("Wq shape [16, 32]",
                 layer.set_weights(RowMatrix::Ones(16, 32), good_k, good_v, good_o));
  EXPECT_TRUE(layer.weight(Projection::q) == wq);
  EXPECT_TRUE(layer.weight(Projection::k) == wk);
  EXPECT_TRUE(layer.weight(Projection::v) == wv);
  EXPECT_TRUE(layer.weight(Projection::o) == wo);
  // And the good set is taken whole.
  layer.set_weights(good_q, good_k, 2 * good_v, good_o);
  EXPECT_TRUE(layer.weight(Projection::v) == 2 * good_v);
  EXPECT_TRUE(layer.weight(Projection::o) == good_o);
}

TEST(ModuleValidation, SetBiasNeedsAConfiguredBias) {
  multihead::GQA plain(small_layer(2, false));
  const Eigen::VectorXf b = Eigen::VectorXf::Ones(32);
  EXPECT_INVALID("Wq bias: the layer was configured without biases (config.bias = false)",
                 plain.set_bias(Projection::q, b));
  EXPECT_INVALID("Wo bias: the layer was configured without biases",
                 plain.set_bias(Projection::o, b.data(), 16));
  EXPECT_EQ(plain.bias(Projection::q).size(), 0);

  // Qwen2's layers: q, k and v biased, o not (output_bias = false).
  LayerConfig qwen = small_layer(2, true);
  qwen.output_bias = false;
  multihead::GQA q_k_v(qwen);
  EXPECT_INVALID("Wo bias: the layer was configured without biases (config.o_bias() = false)",
                 q_k_v.set_bias(Projection::o, b.data(), 16));
  q_k_v.set_bias(Projection::q, b);
  EXPECT_EQ(q_k_v.bias(Projection::o).size(), 0);
  EXPECT_EQ(q_k_v.parameter_count(), multihead::GQA(small_layer(2, true)).parameter_count() - 16);

  multihead::GQA biased(small_layer(2, true));
  biased.init_random(3);
  const Eigen::VectorXf bv = biased.bias(Projection::v);
  EXPECT_INVALID("Wv: buffer size (5) must be 16", biased.set_bias(Projection::v, b.data(), 5));
  EXPECT_INVALID("Wv: buffer size (32) must be 16", biased.set_bias(Projection::v, b));
  EXPECT_INVALID("Wk: data is null", biased.set_bias(Projection::k, nullptr, 16));
  EXPECT_TRUE(biased.bias(Projection::v) == bv);
  biased.set_bias(Projection::v, b.head(16));
  EXPECT_TRUE(biased.bias(Projection::v) == b.head(16));
}

TEST(ModuleValidation, ForwardChecksItsInput) {
  multihead::GQA layer(small_layer(2));
  layer.init_random(4);
  RowMatrix y = RowMatrix::Constant(3, 3, kSentinel);
  const RowMatrix sentinel = y;
  EXPECT_INVALID("x.cols (15) must equal model_dim (16)",
                 layer.forward(RowMatrix::Ones(4, 15), y));
  EXPECT_INVALID("x.rows (5) must be a positive multiple of batch (2)",
                 layer.forward(RowMatrix::Ones(5, 16), y, multihead::ForwardOptions{2, 0}));
  EXPECT_INVALID("x.rows (0) must be a positive multiple of batch (1)",
                 layer.forward(RowMatrix(0, 16), y));
  EXPECT_INVALID("batch (0) must be positive",
                 layer.forward(RowMatrix::Ones(4, 16), y, multihead::ForwardOptions{0, 0}));
  EXPECT_INVALID("batch (-2) must be positive",
                 layer.forward(RowMatrix::Ones(4, 16), y, multihead::ForwardOptions{-2, 0}));
  EXPECT_INVALID("threads (-1) must not be negative",
                 layer.forward(RowMatrix::Ones(4, 16), y, multihead::ForwardOptions{1, -1}));
  EXPECT_TRUE(y == sentinel) << "forward wrote its output before throwing";
  EXPECT_NO_THROW(layer.forward(RowMatrix::Ones(6, 16), y, multihead::ForwardOptions{3, 1}));
  EXPECT_EQ(y.rows(), 6);
  EXPECT_EQ(y.cols(), 16);
}

}  // namespace

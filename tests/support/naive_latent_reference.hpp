// The naive multi-head latent attention (MLA) layer, as DeepSeek-V2's report (§2.1) and Hugging
// Face's DeepseekV2Attention define it, written from the formulas with plain loops and
// independent of the library: every token's K and V are up-projected from its latent, then
// attention is dense (one K/V head per query head). Every step in Acc (double: the oracle;
// float: the naive fp32 loop that sets the accuracy bound).
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "naive_reference.hpp"

namespace naive {

struct LatentShape {
  std::int64_t model_dim = 0, heads = 0;
  std::int64_t latent_dim = 0;        // d_c
  std::int64_t query_latent_dim = 0;  // d_c'; 0: no query compression
  std::int64_t nope_dim = 0, rope_dim = 0, value_dim = 0;
  bool kv_norm = true;
  double norm_eps = 1e-6;
  double rope_base = 10000.0;
  bool causal = true;
  std::optional<double> scale;  // defaults to 1/sqrt(nope_dim + rope_dim)

  std::int64_t qk_dim() const { return nope_dim + rope_dim; }
};

// Row-major float parameters in nn.Linear layout [out, in]; absent ones empty.
struct LatentWeights {
  std::vector<float> q_proj, q_a_proj, q_a_layernorm, q_b_proj;
  std::vector<float> kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj, o_proj;
};

// x / sqrt(mean(x²) + eps) · w over each row of `dim` values, in Acc.
template <class Acc>
void rms_norm(std::vector<Acc>& x, std::int64_t row_stride, std::int64_t dim,
              const std::vector<float>& w, double eps) {
  for (std::size_t r = 0; r * static_cast<std::size_t>(row_stride) < x.size(); ++r) {
    Acc* row = x.data() + r * static_cast<std::size_t>(row_stride);
    Acc squares = 0;
    for (std::int64_t i = 0; i < dim; ++i) squares += row[i] * row[i];
    const Acc inverse = Acc(1) / std::sqrt(squares / static_cast<Acc>(dim) + static_cast<Acc>(eps));
    for (std::int64_t i = 0; i < dim; ++i)
      row[i] = row[i] * inverse * static_cast<Acc>(w[static_cast<std::size_t>(i)]);
  }
}

// Copies `dim` values at `offset` of every row of `stride` values out of (or back into) x.
template <class Acc>
std::vector<Acc> gather(const std::vector<Acc>& x, std::int64_t stride, std::int64_t offset,
                        std::int64_t dim) {
  std::vector<Acc> out;
  for (std::size_t r = 0; r * static_cast<std::size_t>(stride) < x.size(); ++r)
    for (std::int64_t i = 0; i < dim; ++i)
      out.push_back(x[r * static_cast<std::size_t>(stride) + static_cast<std::size_t>(offset + i)]);
  return out;
}
template <class Acc>
void scatter(std::vector<Acc>& x, std::int64_t stride, std::int64_t offset, std::int64_t dim,
             const std::vector<Acc>& values) {
  for (std::size_t r = 0; r * static_cast<std::size_t>(stride) < x.size(); ++r)
    for (std::int64_t i = 0; i < dim; ++i)
      x[r * static_cast<std::size_t>(stride) + static_cast<std::size_t>(offset + i)] =
          values[r * static_cast<std::size_t>(dim) + static_cast<std::size_t>(i)];
}

// The layer on x [batch·tokens, model_dim] (batch-major), token t of a sequence at position t.
// The tokens of each sequence are fed in `chunks` (sizes summing to tokens; default one chunk),
// each attending over itself and all earlier tokens, as an incremental forward over a cache
// does. `stored` maps a cached value (latent or RoPE key) to what a cache reads back: chunks after
// the first read every key from the cache, their own included (they are appended first); the
// first chunk, a prefill, attends over the fresh values.
template <class Acc>
std::vector<Acc> latent_forward(const LatentShape& m, const LatentWeights& w,
                                const std::vector<float>& x, std::int64_t batch,
                                std::vector<std::int64_t> chunks = {},
                                const std::function<double(double)>& stored = nullptr) {
  const std::int64_t rows = static_cast<std::int64_t>(x.size()) / m.model_dim;
  const std::int64_t tokens = rows / batch, H = m.heads, qk = m.qk_dim();
  const std::int64_t dc = m.latent_dim, dr = m.rope_dim, dn = m.nope_dim, dv = m.value_dim;
  if (chunks.empty()) chunks = {tokens};

  // Queries [rows, H, qk].
  std::vector<Acc> q;
  if (m.query_latent_dim > 0) {
    std::vector<Acc> cq = linear<Acc>(x, rows, m.model_dim, w.q_a_proj, m.query_latent_dim, {});
    rms_norm(cq, m.query_latent_dim, m.query_latent_dim, w.q_a_layernorm, m.norm_eps);
    q = linear<Acc>(cq, rows, m.query_latent_dim, w.q_b_proj, H * qk, {});
  } else {
    q = linear<Acc>(x, rows, m.model_dim, w.q_proj, H * qk, {});
  }
  // Latent rows [rows, dc + dr]: the (normalised) latent, then the RoPE key.
  std::vector<Acc> latent = linear<Acc>(x, rows, m.model_dim, w.kv_a_proj_with_mqa, dc + dr, {});
  if (m.kv_norm) rms_norm(latent, dc + dr, dc, w.kv_a_layernorm, m.norm_eps);
  if (dr > 0) {  // DeepSeek rotates interleaved pairs (2i, 2i + 1)
    Rope rope;
    rope.rotary_dim = dr;
    rope.base = m.rope_base;
    rope.interleaved = true;
    const std::vector<std::int64_t> positions = sequence_positions(batch, tokens);
    std::vector<Acc> q_rope = gather(q, qk, dn, dr);
    rotate(q_rope, H, dr, rope, positions);
    // q_rope is [rows·H, dr]: scatter it back head by head.
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t h = 0; h < H; ++h)
        for (std::int64_t i = 0; i < dr; ++i)
          q[static_cast<std::size_t>((r * H + h) * qk + dn + i)] =
              q_rope[static_cast<std::size_t>((r * H + h) * dr + i)];
    std::vector<Acc> k_rope = gather(latent, dc + dr, dc, dr);
    rotate(k_rope, 1, dr, rope, positions);
    scatter(latent, dc + dr, dc, dr, k_rope);
  }
  std::vector<Acc> cached = latent;
  if (stored)
    for (Acc& value : cached) value = static_cast<Acc>(stored(static_cast<double>(value)));

  // Per-head K [rows, H, qk] and V [rows, H, dv] from a set of latent rows.
  const auto up_project = [&](const std::vector<Acc>& lat, std::vector<Acc>& k,
                              std::vector<Acc>& v) {
    const std::vector<Acc> c = gather(lat, dc + dr, 0, dc);
    const std::vector<Acc> kv = linear<Acc>(c, rows, dc, w.kv_b_proj, H * (dn + dv), {});
    k.assign(static_cast<std::size_t>(rows * H * qk), Acc(0));
    v.assign(static_cast<std::size_t>(rows * H * dv), Acc(0));
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t h = 0; h < H; ++h) {
        for (std::int64_t i = 0; i < dn; ++i)
          k[static_cast<std::size_t>((r * H + h) * qk + i)] =
              kv[static_cast<std::size_t>(r * H * (dn + dv) + h * (dn + dv) + i)];
        for (std::int64_t i = 0; i < dr; ++i)
          k[static_cast<std::size_t>((r * H + h) * qk + dn + i)] =
              lat[static_cast<std::size_t>(r * (dc + dr) + dc + i)];
        for (std::int64_t i = 0; i < dv; ++i)
          v[static_cast<std::size_t>((r * H + h) * dv + i)] =
              kv[static_cast<std::size_t>(r * H * (dn + dv) + h * (dn + dv) + dn + i)];
      }
  };
  std::vector<Acc> k_fresh, v_fresh, k_cached, v_cached;
  up_project(latent, k_fresh, v_fresh);
  up_project(cached, k_cached, v_cached);

  // Attention, sequence by sequence and chunk by chunk.
  std::vector<Acc> attended(static_cast<std::size_t>(rows * H * dv), Acc(0));
  const double scale = m.scale.value_or(1.0 / std::sqrt(static_cast<double>(qk)));
  for (std::int64_t b = 0; b < batch; ++b) {
    std::int64_t start = 0;
    for (std::size_t c = 0; c < chunks.size(); ++c) {
      const std::int64_t n = chunks[c], keys = start + n;
      AttentionShape s;
      s.batch = 1;
      s.q_len = n;
      s.kv_len = keys;
      s.heads = s.kv_groups = H;
      s.head_dim = qk;
      s.value_dim = dv;
      std::vector<Acc> kk, vv;
      for (std::int64_t t = 0; t < keys; ++t) {
        const std::vector<Acc>& k = c > 0 ? k_cached : k_fresh;
        const std::vector<Acc>& v = c > 0 ? v_cached : v_fresh;
        const std::int64_t r = b * tokens + t;
        kk.insert(kk.end(), k.begin() + r * H * qk, k.begin() + (r + 1) * H * qk);
        vv.insert(vv.end(), v.begin() + r * H * dv, v.begin() + (r + 1) * H * dv);
      }
      const std::int64_t first = b * tokens + start;
      const AttentionResult<Acc> a = attention<Acc>(s, q.data() + first * H * qk, kk.data(),
                                                    vv.data(), m.causal, scale);
      std::copy(a.o.begin(), a.o.end(), attended.begin() + first * H * dv);
      start += n;
    }
  }
  return linear<Acc>(attended, rows, H * dv, w.o_proj, m.model_dim, {});
}

}  // namespace naive

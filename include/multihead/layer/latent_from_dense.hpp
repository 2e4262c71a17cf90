// latent_from_dense: turns a trained dense MHA/GQA/MQA layer into an MLA layer
// (latent_attention.hpp) by a truncated SVD of its stacked K/V projection,
//
//   W = [Wk; Wv]   [kv_groups·(head_dim + value_dim), model_dim]   ≈   U_r·S_r·V_rᵀ
//
// The MLA layer down-projects each token to the latent c = S_r·V_rᵀ·x (kv_a_proj_with_mqa), and
// each head reads its group's K and V rows of U_r back out of it (kv_b_proj); Wq and Wo carry
// over as q_proj and o_proj. A cache then holds r values per token, not
// kv_groups·(head_dim + value_dim).
// For r below the rank of W, keys and values are W_r·x rather than W·x, so outputs change: by
// Eckart–Young, W_r is the rank-r matrix closest to W in the Frobenius norm, and relative_error
// says how far. At r = rank(W) the layers agree up to fp32 rounding; since rank(W) ≤ model_dim,
// that is already a smaller cache whenever kv_groups·(head_dim + value_dim) > model_dim.
//
// The score modifiers (causal, window, soft-cap, ALiBi, sinks) carry over: MLA applies them to
// the same scores. Rejected, with std::invalid_argument:
//  - RoPE (config.rope): rotated keys depend on the position, which a fixed latent cannot carry
//    (MLA keeps a separate RoPE key for that; a dense layer has none to move into it).
//  - biases (config.bias): MLA has none. A K bias would drop out of the softmax and a V bias could
//    fold into an output bias, but q_proj and o_proj have no bias to take bq and bo.
//
// Cost: one double-precision SVD of W (Eigen's BDCSVD), O(rows·model_dim·min(rows, model_dim)).
#pragma once

#include "../core/eigen.hpp"
#include <Eigen/SVD>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <type_traits>

#include "../core/error.hpp"
#include "attention.hpp"
#include "latent_attention.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {

// How many singular directions of W to keep: set exactly one of the two.
struct LatentRank {
  std::optional<std::int64_t> rank;  // exactly r, 1 ≤ r ≤ min(rows of W, model_dim)
  std::optional<double> energy;      // the smallest r with Σ_{i≤r} σ_i² ≥ energy·Σ σ_i², in (0, 1]

  static LatentRank fixed(std::int64_t r) { return {r, std::nullopt}; }
  static LatentRank keep_energy(double fraction) { return {std::nullopt, fraction}; }
};

struct LatentConversion {
  MLA layer;
  std::int64_t rank = 0;        // the latent_dim chosen
  double relative_error = 0.0;  // ‖W − W_r‖_F / ‖W‖_F = sqrt(Σ_{i>r} σ_i² / Σ σ_i²)
  double kept_energy = 1.0;     // Σ_{i≤r} σ_i² / Σ σ_i² (1 − relative_error², summed apart)
  // All min(rows, model_dim) singular values of W, descending: the error of any other rank
  // follows from them without another SVD. (W = 0 counts as error 0, energy 1.)
  Eigen::VectorXd singular_values;
};

template <class Variant>
LatentConversion latent_from_dense(const Attention<Variant>& dense, const LatentRank& choice) {
  static_assert(!std::is_same_v<Variant, variant::Latent>,
                "latent_from_dense takes a dense MHA, GQA or MQA layer; this one is MLA already");
  using detail::fail;
  using detail::require;
  const LayerConfig& c = dense.config();
  require(!c.rope, "latent_from_dense: config.rope is set: a latent cache cannot hold keys "
          "rotated by position, so a layer with RoPE cannot be converted");
  require(!c.bias, "latent_from_dense: config.bias is set: MLA's projections have no biases");
  require(choice.rank.has_value() != choice.energy.has_value(),
          "latent_from_dense: set exactly one of rank and energy (rank ",
          choice.rank ? "set" : "unset", ", energy ", choice.energy ? "set" : "unset", ")");

  const std::int64_t groups = c.kv_groups, d = c.head_dim, dv = c.v_dim();
  const std::int64_t k_rows = groups * d, rows = k_rows + groups * dv;
  const std::int64_t max_rank = std::min(rows, c.model_dim);
  if (choice.rank)
    require(*choice.rank >= 1 && *choice.rank <= max_rank, "latent_from_dense: rank (",
            *choice.rank, ") must be in [1, min(rows of [Wk; Wv], model_dim)] = [1, min(", rows,
            ", ", c.model_dim, ")] = [1, ", max_rank, "]");
  else
    require(*choice.energy > 0.0 && *choice.energy <= 1.0, "latent_from_dense: energy (",
            *choice.energy, ") must be in (0, 1]");

  // The SVD of a matrix with a NaN or an infinity returns garbage (negative singular values).
  for (const Projection p : {Projection::k, Projection::q, Projection::v, Projection::o}) {
    const auto& weight = dense.weight(p);
    if (weight.allFinite()) continue;
    std::int64_t at = 0;
    while (std::isfinite(weight.data()[at])) ++at;
    fail("latent_from_dense: the layer's ", projection_name(p), " weight holds a non-finite value (",
         weight.data()[at], " at row ", at / weight.cols(), ", column ", at % weight.cols(), ")");
  }

  // In double: a rank choice weighs W's small singular values, which fp32 would blur.
  Eigen::MatrixXd w(rows, c.model_dim);
  w.topRows(k_rows) = dense.weight(Projection::k).template cast<double>();
  w.bottomRows(rows - k_rows) = dense.weight(Projection::v).template cast<double>();
  const Eigen::BDCSVD<Eigen::MatrixXd> svd(w, Eigen::ComputeThinU | Eigen::ComputeThinV);
  const Eigen::VectorXd& sigma = svd.singularValues();

  const Eigen::ArrayXd squares = sigma.array().square();
  const double total = squares.sum();
  std::int64_t r = choice.rank.value_or(max_rank);
  if (choice.energy) {
    double kept = 0.0;
    for (r = 1; r < max_rank; ++r) {
      kept += squares(r - 1);
      if (kept >= *choice.energy * total) break;
    }
  }
  // The tail summed by itself, so that a small error is not the difference of two large sums.
  const double tail = squares.tail(max_rank - r).sum();

  LatentConfig lc;
  lc.model_dim = c.model_dim;
  lc.heads = c.heads;
  lc.latent_dim = r;
  lc.nope_dim = d;
  lc.rope_dim = 0;
  lc.value_dim = dv;
  lc.kv_norm = false;
  static_cast<ScoreModifiers&>(lc) = c;  // every modifier carries over (MLA applies them all)
  lc.scale = c.scale;  // when unset, both default to 1/sqrt(head_dim)
  LatentConversion out{MLA(lc), r, total > 0.0 ? std::sqrt(tail / total) : 0.0,
                       total > 0.0 ? squares.head(r).sum() / total : 1.0, sigma};

  // kv_b_proj: per head, its group's K rows of U_r, then its V rows.
  const Eigen::MatrixXd u = svd.matrixU().leftCols(r);
  RowMatrix kv_b(c.heads * (d + dv), r);
  for (std::int64_t h = 0; h < c.heads; ++h) {
    const std::int64_t g = h / c.group_size();
    kv_b.middleRows(h * (d + dv), d) = u.middleRows(g * d, d).cast<float>();
    kv_b.middleRows(h * (d + dv) + d, dv) = u.middleRows(k_rows + g * dv, dv).cast<float>();
  }
  const RowMatrix kv_a =
      (sigma.head(r).asDiagonal() * svd.matrixV().leftCols(r).transpose()).cast<float>();
  out.layer.set_weight(LatentWeight::q_proj, dense.weight(Projection::q));
  out.layer.set_weight(LatentWeight::kv_a_proj_with_mqa, kv_a);
  out.layer.set_weight(LatentWeight::kv_b_proj, kv_b);
  out.layer.set_weight(LatentWeight::o_proj, dense.weight(Projection::o));
  return out;
}

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead

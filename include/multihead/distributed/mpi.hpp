// Context parallelism over MPI: attention over a sequence whose keys and values are spread over
// the ranks of a communicator, combined through the log-sum-exp (attention/merge.hpp).
//
//  - Sharded decode: each rank holds a slice of every sequence's cache (contiguous, paged, dense
//    or latent: anything decode_attention reads) and attends its new queries over its slice;
//    merge_shards then combines the ranks' (o, lse) in one collective whose message is sized by
//    the queries, batch·q_len·heads·(value_dim + 1) floats per rank, never by the cache.
//  - Ring-attention prefill: each rank holds a chunk of the prompt's queries, keys and values,
//    and the K/V chunks travel once around the ring while each rank merges what it attended
//    into its running state, sending the next chunk while it computes on this one. Causal
//    masking is by global positions; the zig-zag split (zigzag_shard) gives rank r the chunks r
//    and 2N − 1 − r of 2N, so that every rank has as many keys to skip under the mask as to
//    attend and none idles on the masked half.
//
// Every collective is preceded by an agreement: each rank's local work runs, then all ranks
// exchange whether it threw and the shapes they hold. A rank whose work threw, or whose shapes
// differ from the others', makes every rank throw the same std::invalid_argument naming the rank
// and the fault, so that no rank is left waiting in a collective the others never reach.
//
// An optional header: it needs an MPI implementation (CMake target multihead::mpi, with
// FindMPI; Debian's OpenMPI), and multihead.hpp does not include it. Each call is collective:
// every rank of the communicator makes it, with the same sequence lengths and options.
#pragma once

// The MPI C API alone: OpenMPI's and MPICH's deprecated C++ bindings warn under -Wextra.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "../attention/activations.hpp"
#include "../attention/fused.hpp"
#include "../attention/merge.hpp"
#include "../core/error.hpp"
#include "../core/tensor_view.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {

namespace detail {

inline int mpi_rank(MPI_Comm comm) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  return rank;
}
inline int mpi_size(MPI_Comm comm) {
  int size = 0;
  MPI_Comm_size(comm, &size);
  return size;
}

// What each rank tells the others before a collective: whether its local work threw (and how
// long its message is), and the extents it holds.
struct Agreement {
  std::int64_t failed = 0, message_bytes = 0;
  std::int64_t extents[4] = {0, 0, 0, 0};
};

// Runs `local` on this rank, then agrees with every rank of comm: if any rank's local work threw
// std::invalid_argument, or the ranks' `extents` differ, every rank throws the same
// std::invalid_argument, naming the first such rank. Collective.
inline void agree(MPI_Comm comm, const char* what, const std::function<void()>& local,
                  const std::function<std::vector<std::int64_t>()>& extents) {
  std::string message;
  Agreement mine;
  try {
    local();
    const std::vector<std::int64_t> e = extents();
    for (std::size_t i = 0; i < e.size() && i < 4; ++i) mine.extents[i] = e[i];
  } catch (const std::invalid_argument& error) {
    message = error.what();
    mine.failed = 1;
    mine.message_bytes = static_cast<std::int64_t>(message.size());
  }
  const int ranks = mpi_size(comm);
  std::vector<Agreement> all(static_cast<std::size_t>(ranks));
  MPI_Allgather(&mine, sizeof(Agreement), MPI_BYTE, all.data(), sizeof(Agreement), MPI_BYTE, comm);
  for (int r = 0; r < ranks; ++r) {
    const Agreement& a = all[std::size_t(r)];
    if (!a.failed) continue;
    // The first rank that failed sends its message to all; every rank throws it.
    std::string text(static_cast<std::size_t>(a.message_bytes), ' ');
    if (mpi_rank(comm) == r) text = message;
    MPI_Bcast(text.data(), static_cast<int>(text.size()), MPI_CHAR, r, comm);
    fail(what, ": rank ", r, " of ", ranks, " failed: ", text);
  }
  for (int r = 1; r < ranks; ++r)
    for (int i = 0; i < 4; ++i)
      if (all[std::size_t(r)].extents[i] != all[0].extents[i])
        fail(what, ": rank ", r, " holds [", all[std::size_t(r)].extents[0], ", ",
             all[std::size_t(r)].extents[1], ", ", all[std::size_t(r)].extents[2], ", ",
             all[std::size_t(r)].extents[3], "] but rank 0 [", all[0].extents[0], ", ",
             all[0].extents[1], ", ", all[0].extents[2], ", ", all[0].extents[3],
             "]: every rank must hold the same shape");
}

// o's rows and lse packed into one buffer: rows·dim values, then the rows' lse.
inline void pack_state(const TensorView<float>& o, Span<const float> lse, float* out) {
  for (std::int64_t b = 0; b < o.batch(); ++b)
    for (std::int64_t h = 0; h < o.heads(); ++h)
      for (std::int64_t t = 0; t < o.tokens(); ++t, out += o.dim()) {
        const float* row = o.row(b, t, h);
        std::copy(row, row + o.dim(), out);
      }
  std::copy(lse.data, lse.data + lse.size, out);
}

}  // namespace detail

// Combines the ranks' attention of the same queries over their disjoint slices of the keys:
// each rank passes its o [batch, q_len, heads, value_dim] and lse [batch, heads, q_len] (written
// by its own decode_attention or fused_attention over its slice; a rank whose slice is empty
// passes lse −inf, any o), and receives attention over all the slices in place, on every rank
// (root = −1) or on root only. One collective of batch·q_len·heads·(value_dim + 1) floats per
// rank; the merge runs in rank order, so every rank computes the same bits. Collective; shapes
// that differ between ranks make every rank throw (see the top).
inline void merge_shards(MPI_Comm comm, const TensorView<float>& o, Span<float> lse,
                         int root = -1) {
  const int ranks = detail::mpi_size(comm), rank = detail::mpi_rank(comm);
  std::int64_t rows = 0;
  detail::agree(
      comm, "merge_shards",
      [&] {
        o.validate("o");
        o.validate_no_overlap("o");
        rows = detail::checked_product("lse size (batch * heads * q_len)", o.batch(), o.heads(),
                                       o.tokens());
        detail::check_lse_span(lse.data, lse.size, rows, "lse");
        detail::require(root >= -1 && root < ranks, "root (", root, ") must be -1 (every rank) ",
                        "or a rank below ", ranks);
      },
      [&] {
        return std::vector<std::int64_t>{o.batch(), o.tokens(), o.heads(), o.dim()};
      });
  const std::int64_t count = rows * (o.dim() + 1);
  detail::require(count <= std::int64_t(INT32_MAX), "merge_shards: ", count,
                  " floats per rank exceed one MPI message");
  std::vector<float> mine(static_cast<std::size_t>(count));
  detail::pack_state(o, {lse.data, lse.size}, mine.data());
  const bool receives = root < 0 || rank == root;
  std::vector<float> all(receives ? static_cast<std::size_t>(count * ranks) : 0);
  if (root < 0)
    MPI_Allgather(mine.data(), int(count), MPI_FLOAT, all.data(), int(count), MPI_FLOAT, comm);
  else
    MPI_Gather(mine.data(), int(count), MPI_FLOAT, all.data(), int(count), MPI_FLOAT, root, comm);
  if (!receives) return;
  // Rank 0's state first, then each next rank's merged into it: the same order on every rank.
  std::vector<float> acc_o(all.begin(), all.begin() + rows * o.dim());
  std::vector<float> acc_lse(all.begin() + rows * o.dim(), all.begin() + count);
  // Packed rows are [batch, heads, q_len, dim]: viewed as [batch, q_len, heads, dim] with strides.
  const auto packed = [&](float* data) {
    return TensorView<float>::strided(data, rows * o.dim(), o.batch(), o.tokens(), o.heads(),
                                      o.dim(), o.heads() * o.tokens() * o.dim(), o.dim(),
                                      o.tokens() * o.dim());
  };
  for (int r = 1; r < ranks; ++r) {
    float* base = all.data() + std::size_t(r) * std::size_t(count);
    merge_states(packed(acc_o.data()), {acc_lse.data(), rows}, packed(base),
                 {base + rows * o.dim(), rows}, packed(acc_o.data()), {acc_lse.data(), rows});
  }
  for (std::int64_t b = 0; b < o.batch(); ++b)
    for (std::int64_t h = 0; h < o.heads(); ++h)
      for (std::int64_t t = 0; t < o.tokens(); ++t) {
        const float* row = acc_o.data() + ((b * o.heads() + h) * o.tokens() + t) * o.dim();
        std::copy(row, row + o.dim(), o.row(b, t, h));
      }
  std::copy(acc_lse.begin(), acc_lse.end(), lse.data);
}

// The zig-zag split of a sequence of `length` tokens over `ranks` ranks: 2·ranks chunks of
// length / (2·ranks) tokens (the first length mod 2·ranks chunks one longer), rank r holding
// chunks r and 2·ranks − 1 − r, in that order. Under a causal mask, chunk r attends to few keys
// and chunk 2·ranks − 1 − r to many: every rank gets the same work.
struct ZigzagShard {
  std::int64_t first_begin = 0, first_end = 0;    // chunk r's positions
  std::int64_t second_begin = 0, second_end = 0;  // chunk 2·ranks − 1 − r's
  std::int64_t tokens() const { return (first_end - first_begin) + (second_end - second_begin); }
};

inline ZigzagShard zigzag_shard(std::int64_t length, int ranks, int rank) {
  detail::require(length >= 0, "length (", length, ") must not be negative");
  detail::require(ranks > 0 && rank >= 0 && rank < ranks, "rank (", rank, ") must be below ranks (",
                  ranks, ")");
  const std::int64_t chunks = 2 * std::int64_t(ranks);
  const auto begin = [&](std::int64_t c) {
    return c * (length / chunks) + std::min(c, length % chunks);
  };
  const std::int64_t a = rank, b = chunks - 1 - rank;
  return {begin(a), begin(a + 1), begin(b), begin(b + 1)};
}

namespace detail {

// Attention of one query chunk over one key chunk, merged into the chunk's running state
// (o_acc, lse_acc). Chunks of a partition are either the same chunk (causal within it), wholly
// before the queries (every key seen) or wholly after (nothing seen, skipped).
inline void attend_chunk(const TensorView<const float>& q, std::int64_t q_begin,
                         const TensorView<const float>& k, const TensorView<const float>& v,
                         std::int64_t k_begin, KernelOptions options, const TensorView<float>& o,
                         std::vector<float>& o_part, std::vector<float>& lse_part,
                         const TensorView<float>& o_acc, float* lse_acc) {
  if (q.tokens() == 0 || k.tokens() == 0) return;
  if (options.causal && k_begin > q_begin) return;                  // keys after every query
  if (options.causal && k_begin < q_begin) options.causal = false;  // keys before every query
  const std::int64_t rows = q.batch() * q.heads() * q.tokens();
  o_part.resize(static_cast<std::size_t>(rows * o.dim()));
  lse_part.resize(static_cast<std::size_t>(rows));
  const TensorView<float> part(o_part.data(), rows * o.dim(), q.batch(), q.tokens(), q.heads(),
                               o.dim());
  fused_attention(q, k, v, part, options, {lse_part.data(), rows});
  merge_states(o_acc, {lse_acc, rows}, part, {lse_part.data(), rows}, o_acc, {lse_acc, rows});
}

}  // namespace detail

// Causal (options.causal) or full attention of a sequence of `length` tokens split over the
// ranks of comm by zigzag_shard: each rank passes its q [1, tokens, heads, head_dim], k and v
// [1, tokens, kv_groups, ·] (chunk r, then chunk 2N − 1 − r, as zigzag_shard gives them) and
// receives its queries' o [1, tokens, heads, value_dim] (and lse [1, heads, tokens]). K/V travel
// around the ring in N − 1 steps of one message each (the sender's two chunks of K and V), the
// next received while this one is attended. options: scale, causal (by global positions) and
// softcap; masks, windows, ALiBi, sinks and custom modifiers are refused, as their positions
// would be chunk-local. Collective; a rank whose shapes are wrong makes every rank throw.
inline void ring_attention(MPI_Comm comm, std::int64_t length, const TensorView<const float>& q,
                           const TensorView<const float>& k, const TensorView<const float>& v,
                           const TensorView<float>& o, const KernelOptions& options = {},
                           LseOutput lse = {}) {
  const int ranks = detail::mpi_size(comm), rank = detail::mpi_rank(comm);
  std::vector<ZigzagShard> shards;
  detail::agree(
      comm, "ring_attention",
      [&] {
        for (int r = 0; r < ranks; ++r) shards.push_back(zigzag_shard(length, ranks, r));
        const std::int64_t tokens = shards[std::size_t(rank)].tokens();
        for (const auto* view : {&q, &k, &v})
          detail::require(view->batch() == 1 && view->tokens() == tokens, "ring_attention: rank ",
                          rank, " must hold batch 1 and its zig-zag shard's ", tokens,
                          " tokens, not [", view->batch(), ", ", view->tokens(), "]");
        detail::require(
            o.batch() == 1 && o.tokens() == tokens && o.heads() == q.heads() && o.dim() == v.dim(),
            "ring_attention: o [", o.batch(), ", ", o.tokens(), ", ", o.heads(), ", ", o.dim(),
            "] must be [1, ", tokens, ", ", q.heads(), ", ", v.dim(), "]");
        detail::require(k.heads() == v.heads() && q.dim() == k.dim() && k.heads() > 0 &&
                            q.heads() % k.heads() == 0,
                        "ring_attention: q, k and v's heads and dims do not fit");
        detail::require(!options.additive_mask.data && !options.boolean_mask.data &&
                            options.window_left < 0 && options.window_right < 0 &&
                            options.alibi_slopes.size == 0 && options.sinks.size == 0 &&
                            !options.modifier.has_logit() && !options.modifier.has_visible() &&
                            !options.modifier.has_sink(),
                        "ring_attention: masks, windows, ALiBi, sinks and custom modifiers are not "
                        "supported across ranks (scale, causal and softcap are)");
        if (lse.data || lse.size)
          detail::check_lse_span(lse.data, lse.size, q.heads() * tokens, "lse");
      },
      [&] {
        return std::vector<std::int64_t>{q.heads(), q.dim(), k.heads(), v.dim()};
      });

  const ZigzagShard& own = shards[std::size_t(rank)];
  const std::int64_t heads = q.heads(), groups = k.heads(), d = q.dim(), dv = v.dim();
  // The running state, per query chunk: o (zeros: nothing seen yet) and lse (−inf).
  for (std::int64_t t = 0; t < o.tokens(); ++t)
    for (std::int64_t h = 0; h < heads; ++h) std::fill(o.row(0, t, h), o.row(0, t, h) + dv, 0.0f);
  std::vector<float> o_part, lse_part;

  // Contiguous copies of this rank's K and V (the message format: K rows, then V rows).
  const auto message_floats = [&](int r) {
    return shards[std::size_t(r)].tokens() * groups * (d + dv);
  };
  std::int64_t largest = 0;
  for (int r = 0; r < ranks; ++r) largest = std::max(largest, message_floats(r));
  detail::require(largest <= std::int64_t(INT32_MAX), "ring_attention: a K/V message of ", largest,
                  " floats exceeds one MPI message");
  std::vector<float> current(static_cast<std::size_t>(largest)), next(current.size());
  {
    float* out = current.data();
    for (std::int64_t t = 0; t < own.tokens(); ++t)
      for (std::int64_t g = 0; g < groups; ++g, out += d)
        std::copy(k.row(0, t, g), k.row(0, t, g) + d, out);
    for (std::int64_t t = 0; t < own.tokens(); ++t)
      for (std::int64_t g = 0; g < groups; ++g, out += dv)
        std::copy(v.row(0, t, g), v.row(0, t, g) + dv, out);
  }

  // The two query chunks of this rank, as views, with their running states.
  const std::int64_t first = own.first_end - own.first_begin;
  const auto q_chunk = [&](int c) {
    return c == 0 ? detail::token_range(q, 0, 0, first)
                  : detail::token_range(q, 0, first, own.tokens() - first);
  };
  const auto o_chunk = [&](int c) {
    return c == 0 ? detail::token_range(o, 0, 0, first)
                  : detail::token_range(o, 0, first, own.tokens() - first);
  };
  const std::int64_t q_begins[2] = {own.first_begin, own.second_begin};
  // lse_acc is [heads, tokens]; a chunk's rows are [heads, chunk tokens]: kept apart per chunk.
  std::vector<float> chunk_lse[2] = {
      std::vector<float>(std::size_t(heads * first), -std::numeric_limits<float>::infinity()),
      std::vector<float>(std::size_t(heads * (own.tokens() - first)),
                         -std::numeric_limits<float>::infinity())};

  const int to = (rank + 1) % ranks, from = (rank + ranks - 1) % ranks;
  for (int step = 0; step < ranks; ++step) {
    const int source = (rank + ranks - step) % ranks;  // whose K/V `current` holds
    MPI_Request requests[2];
    const bool pass = step + 1 < ranks;
    if (pass) {  // send this chunk on while attending to it
      const int incoming = (source + ranks - 1) % ranks;
      MPI_Irecv(next.data(), int(message_floats(incoming)), MPI_FLOAT, from, step, comm,
                &requests[0]);
      MPI_Isend(current.data(), int(message_floats(source)), MPI_FLOAT, to, step, comm,
                &requests[1]);
    }
    const ZigzagShard& theirs = shards[std::size_t(source)];
    const std::int64_t their_first = theirs.first_end - theirs.first_begin;
    const std::int64_t their_tokens = theirs.tokens();
    const TensorView<const float> k_all(current.data(), their_tokens * groups * d, 1, their_tokens,
                                        groups, d);
    const TensorView<const float> v_all(current.data() + their_tokens * groups * d,
                                        their_tokens * groups * dv, 1, their_tokens, groups, dv);
    for (int qc = 0; qc < 2; ++qc)
      for (int kc = 0; kc < 2; ++kc) {
        const std::int64_t k_off = kc == 0 ? 0 : their_first;
        const std::int64_t k_len = kc == 0 ? their_first : their_tokens - their_first;
        const TensorView<float> oc = o_chunk(qc);
        detail::attend_chunk(q_chunk(qc), q_begins[qc], detail::token_range(k_all, 0, k_off, k_len),
                             detail::token_range(v_all, 0, k_off, k_len),
                             kc == 0 ? theirs.first_begin : theirs.second_begin, options, oc,
                             o_part, lse_part, oc, chunk_lse[qc].data());
      }
    if (pass) {
      MPI_Waitall(2, requests, MPI_STATUSES_IGNORE);
      std::swap(current, next);
    }
  }
  if (lse.data)
    for (std::int64_t h = 0; h < heads; ++h) {
      std::copy(chunk_lse[0].begin() + h * first, chunk_lse[0].begin() + (h + 1) * first,
                lse.data + h * own.tokens());
      const std::int64_t second = own.tokens() - first;
      std::copy(chunk_lse[1].begin() + h * second, chunk_lse[1].begin() + (h + 1) * second,
                lse.data + h * own.tokens() + first);
    }
}

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead

// Fuzzes the caches' operations: a program of add_sequence, append (of any shape, to any id,
// past any capacity), release, decode over any list of ids, and clear, run against a paged cache
// of a small pool and a contiguous cache, of plain (bf16, float) or quantized (q8, q4) storage,
// as the first byte picks. After every operation: a throw (std::invalid_argument
// only) left the cache as it was (lengths, tables, free blocks); held + free blocks = the pool;
// every live sequence's length is what its appends made it; a decode over finite values gives
// finite outputs.
#include <cmath>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <vector>

#include <multihead/cache/decode.hpp>
#include <multihead/cache/kv_cache.hpp>
#include <multihead/cache/paged_kv_cache.hpp>

#include "fuzz_input.hpp"

namespace {

using multihead::TensorView;

constexpr std::int64_t kGroups = 2, kDim = 16, kBlocks = 12, kBlockSize = 4, kCapacity = 40;

// Rows of K/V for `tokens` tokens: finite values, or whatever the input wants in a few.
std::vector<float> rows(fuzz::Input& in, std::int64_t count) {
  std::vector<float> x(std::size_t(std::max<std::int64_t>(count, 0)));
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = float(int(i * 37 % 19) - 9) / 9.0f;
  return x;
}

template <class PagedStorage, class ContiguousStorage>
void run(fuzz::Input& in, std::size_t size) {
  multihead::PagedKvCache<PagedStorage> paged(kBlocks, kBlockSize, kGroups, kDim);
  multihead::KvCache<ContiguousStorage> contiguous(2, kCapacity, kGroups, kDim);
  std::map<std::int64_t, std::int64_t> lengths;  // live id → tokens appended
  std::vector<std::int64_t> ids;                 // every id handed out, live or not
  for (int step = 0; step < 64 && size > 0; ++step) {
    const std::uint8_t op = in.raw<std::uint8_t>() % 6;
    const std::int64_t free_before = paged.free_blocks();
    try {
      if (op == 0) {
        const std::int64_t id = paged.add_sequence();
        lengths[id] = 0;
        ids.push_back(id);
      } else if (op == 1 || op == 2) {  // append to the paged (1) or contiguous (2) cache
        const std::int64_t tokens = in.size(0, 9), groups = in.flag() ? kGroups : in.size(1, 3);
        const std::int64_t dim = in.flag() ? kDim : in.size(1, 20);
        const std::int64_t count = tokens > 0 && tokens < 64 && groups > 0 && groups < 8 &&
                                           dim > 0 && dim < 64
                                       ? (op == 2 ? 2 : 1) * tokens * groups * dim
                                       : 0;
        const std::vector<float> k = rows(in, count), v = rows(in, count);
        const std::int64_t batch = op == 2 ? 2 : 1;
        const TensorView<const float> kv(k.data(), std::int64_t(k.size()), batch, tokens, groups, dim);
        const TensorView<const float> vv(v.data(), std::int64_t(v.size()), batch, tokens, groups, dim);
        if (op == 1) {
          const std::int64_t id = ids.empty() || in.flag() ? in.size(-1, 5)
                                                           : ids[std::size_t(in.raw<std::uint8_t>()) % ids.size()];
          const std::int64_t length = paged.length(id);  // throws for a bad id: nothing changed
          paged.append(id, kv, vv);
          fuzz::check(paged.length(id) == length + tokens, "an append adds its tokens");
          lengths[id] += tokens;
        } else {
          const std::int64_t length = contiguous.length();
          contiguous.append(kv, vv);
          fuzz::check(contiguous.length() == length + tokens, "an append adds its tokens");
        }
      } else if (op == 3) {
        const std::int64_t id = ids.empty() || in.flag() ? in.size(-1, 5)
                                                         : ids[std::size_t(in.raw<std::uint8_t>()) % ids.size()];
        paged.release(id);
        lengths.erase(id);
      } else if (op == 4) {  // decode over some live (or not) ids
        std::vector<std::int64_t> batch;
        for (int n = 1 + in.raw<std::uint8_t>() % 3; n > 0; --n)
          batch.push_back(ids.empty() || in.flag() ? in.size(-1, 5)
                                                   : ids[std::size_t(in.raw<std::uint8_t>()) % ids.size()]);
        const std::int64_t heads = 2 * kGroups, q_size = std::int64_t(batch.size()) * heads * kDim;
        const std::vector<float> q = rows(in, q_size);
        std::vector<float> o(std::size_t(q_size), 7.0f);
        multihead::KernelOptions options;
        options.causal = in.flag();
        multihead::decode_attention(
            TensorView<const float>(q.data(), q_size, std::int64_t(batch.size()), 1, heads, kDim),
            paged, {batch.data(), std::int64_t(batch.size())},
            TensorView<float>(o.data(), q_size, std::int64_t(batch.size()), 1, heads, kDim), options);
        for (const float x : o) fuzz::check(std::isfinite(x), "a decode over finite values is finite");
      } else {
        contiguous.clear();
      }
    } catch (const std::invalid_argument&) {
      fuzz::check(paged.free_blocks() == free_before, "a throw takes no block");
    }
    // The pool's bookkeeping against ours.
    std::int64_t held = 0;
    for (const auto& [id, length] : lengths) {
      fuzz::check(paged.length(id) == length, "a live sequence keeps its length");
      fuzz::check(std::int64_t(paged.block_table(id).size()) == (length + kBlockSize - 1) / kBlockSize,
                  "a sequence holds the blocks its length needs");
      held += std::int64_t(paged.block_table(id).size());
    }
    fuzz::check(held + paged.free_blocks() == kBlocks, "held + free blocks = the pool");
    fuzz::check(paged.sequences() == std::int64_t(lengths.size()), "live sequences are counted");
    fuzz::check(contiguous.length() >= 0 && contiguous.length() <= kCapacity,
                "the contiguous cache stays within its capacity");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::Input in(data, size);
  if (size > 0 && in.flag())
    run<multihead::q8, multihead::q4>(in, size);
  else
    run<multihead::bf16, float>(in, size);
  return 0;
}

// The lengths of a contiguous cache's slots (KvCache, LatentCache): each sequence at its own
// length, grown by appends to all slots at once or to one, with the shortest and longest kept
// for the checks and the kernels' extents.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor_view.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {
namespace detail {

class SlotLengths {
 public:
  explicit SlotLengths(std::int64_t slots = 0) : lengths_(static_cast<std::size_t>(slots), 0) {}

  // The length every slot has; throws if they differ.
  std::int64_t common() const {
    require(shortest_ == longest_, "the cache's sequences have different lengths (", shortest_,
            " to ", longest_, "): ask length(b), or step them with a call over sequences");
    return longest_;
  }
  std::int64_t longest() const noexcept { return longest_; }
  // Slot b's length; throws unless b is a slot.
  std::int64_t of(std::int64_t b) const {
    check(b);
    return lengths_[static_cast<std::size_t>(b)];
  }
  Span<const std::int64_t> all() const noexcept {
    return {lengths_.data(), static_cast<std::int64_t>(lengths_.size())};
  }
  const std::int64_t* data() const noexcept { return lengths_.data(); }

  void check(std::int64_t b) const {
    const auto slots = static_cast<std::int64_t>(lengths_.size());
    require(b >= 0 && b < slots, "sequence ", b, " is not in the cache's [0, ", slots, ")");
  }
  // Slot b grows by n (checked by the caller).
  void grow(std::int64_t b, std::int64_t n) {
    lengths_[static_cast<std::size_t>(b)] += n;
    recount();
  }
  void grow_all(std::int64_t n) {
    for (std::int64_t& length : lengths_) length += n;
    recount();
  }
  void clear() noexcept {
    std::fill(lengths_.begin(), lengths_.end(), 0);
    shortest_ = longest_ = 0;
  }
  void clear(std::int64_t b) {
    check(b);
    lengths_[static_cast<std::size_t>(b)] = 0;
    recount();
  }

 private:
  void recount() noexcept {
    const auto [low, high] = std::minmax_element(lengths_.begin(), lengths_.end());
    shortest_ = *low;
    longest_ = *high;
  }

  std::vector<std::int64_t> lengths_;
  std::int64_t shortest_ = 0, longest_ = 0;
};

}  // namespace detail
}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead

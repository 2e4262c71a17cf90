// Error reporting for multihead: runtime checks that name the offending field and values.
//
// Three tiers, as in the rest of the library:
//  - static_assert for what is wrong at compile time;
//  - require(...) / checked arithmetic below for runtime shapes and configs, throwing
//    std::invalid_argument before any output or cache is touched;
//  - MULTIHEAD_ASSERT for internal invariants (users may define it before including us).
#pragma once

#include <cassert>
#include <cstdint>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>

#include "isa.hpp"

// Exceptions are how every bad argument is reported, before anything is written; there is no
// error-code mode. A build without them would turn each of those checks into an abort at best,
// so it is refused here rather than failing deep inside the library.
#if !defined(__cpp_exceptions) && !defined(__EXCEPTIONS) && !defined(_CPPUNWIND)
#error "multihead reports bad arguments by throwing std::invalid_argument and needs C++ exceptions: remove -fno-exceptions from the translation units that include it"
#endif

#ifndef MULTIHEAD_ASSERT
#define MULTIHEAD_ASSERT(condition) assert(condition)
#endif

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {
namespace detail {

// Joins its arguments with operator<< into one message.
template <class... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}

template <class... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  throw std::invalid_argument(concat("multihead: ", parts...));
}

// Throws std::invalid_argument with the joined message when `condition` is false.
template <class... Parts>
void require(bool condition, const Parts&... parts) {
  if (!condition) fail(parts...);
}

// A size must be at least one: "heads (0) must be positive".
inline void require_positive(std::int64_t value, const char* field) {
  require(value > 0, field, " (", value, ") must be positive");
}

// a·b, throwing instead of overflowing: sizes come from users and products index buffers.
inline std::int64_t checked_mul(std::int64_t a, std::int64_t b, const char* what) {
  std::int64_t product = 0;
  if (__builtin_mul_overflow(a, b, &product))
    fail(what, " overflows: ", a, " * ", b, " does not fit in 64 bits");
  return product;
}

inline std::int64_t checked_add(std::int64_t a, std::int64_t b, const char* what) {
  std::int64_t sum = 0;
  if (__builtin_add_overflow(a, b, &sum))
    fail(what, " overflows: ", a, " + ", b, " does not fit in 64 bits");
  return sum;
}

// a + b clamped to the int64 range: for bounds that may be "unbounded" (a window of INT64_MAX
// keys), where the clamped value means the same as the exact one would.
inline std::int64_t saturating_add(std::int64_t a, std::int64_t b) {
  std::int64_t sum = 0;
  if (!__builtin_add_overflow(a, b, &sum)) return sum;
  return b > 0 ? std::numeric_limits<std::int64_t>::max() : std::numeric_limits<std::int64_t>::min();
}

// The product of all `extents`, checked for overflow.
template <class... Extents>
std::int64_t checked_product(const char* what, std::int64_t first, Extents... rest) {
  std::int64_t product = first;
  ((product = checked_mul(product, rest, what)), ...);
  return product;
}

}  // namespace detail
}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead

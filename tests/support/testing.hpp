// What many test files need and each used to write for itself: the storage types, bit-exact
// reads of stored values, random cache contents, and catching the library's errors (the
// throwing checks of error.hpp, whose messages start with "multihead: " and name the values).
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <multihead/multihead.hpp>

namespace test_support {

constexpr float kInf = std::numeric_limits<float>::infinity();

// ---- Storage types ------------------------------------------------------------------------------

// The element types a cache or decode kernel stores K/V in; typed suites run once per type.
using StorageTypes = ::testing::Types<float, multihead::bf16, multihead::fp16>;

// The float a value reads back as once stored as Storage (half.hpp's scalar conversion, which
// storage/test_half.cpp checks against its own reference).
template <class Storage>
float stored(float x) {
  return multihead::to_float(multihead::from_float<Storage>(x));
}
template <class Storage>
std::vector<float> stored(std::vector<float> x) {
  for (float& e : x) e = stored<Storage>(e);
  return x;
}

// A stored element as float.
inline float read(float x) { return x; }
inline float read(multihead::bf16 x) { return multihead::to_float(x); }
inline float read(multihead::fp16 x) { return multihead::to_float(x); }

// Bitwise, so that NaNs, infinities and signed zeros compare as what they are.
inline bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

inline std::uint32_t bits_of(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}
inline float float_of(std::uint32_t u) {
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

inline std::vector<unsigned char> bytes_of(const void* p, std::int64_t n) {
  const auto* c = static_cast<const unsigned char*>(p);
  return std::vector<unsigned char>(c, c + n);
}

// Caches align their buffers to cache lines (aligned_buffer.hpp).
inline bool aligned64(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 64 == 0; }

// Cache contents: normal values and, one in ten, a special one that every storage type must
// handle: beyond fp16's range (inf in fp16), minus infinity, a bf16 tie, an fp16 subnormal.
inline std::vector<float> random_cache_values(std::int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::uniform_int_distribution<int> pick(0, 39);
  const float special[] = {1e5f, -kInf, 1.0f + 1.0f / 256.0f, 3e-6f};
  std::vector<float> values(static_cast<std::size_t>(n));
  for (float& x : values) {
    const int kind = pick(rng);
    x = kind < 4 ? special[kind] : normal(rng);
  }
  return values;
}

// ---- Errors -------------------------------------------------------------------------------------

// The message of the std::invalid_argument that `call` throws, or "(no exception)".
template <class Call>
std::string error_of(Call&& call) {
  try {
    call();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "(no exception)";
}

// Runs `body` and expects std::invalid_argument whose message starts with "multihead: " and
// contains each of `parts`; any other outcome is a failure at the caller's line.
inline void expect_invalid(const std::function<void()>& body,
                           const std::vector<std::string>& parts, const char* file, int line) {
  const ::testing::ScopedTrace trace(file, line, "expected an error containing: " + parts[0]);
  try {
    body();
  } catch (const std::invalid_argument& error) {
    const std::string message = error.what();
    for (const std::string& part : parts)
      EXPECT_NE(message.find(part), std::string::npos)
          << "'" << part << "' missing from: " << message;
    EXPECT_EQ(message.rfind("multihead: ", 0), 0u) << "the message was: " << message;
    return;
  } catch (const std::exception& error) {
    ADD_FAILURE() << "threw another exception type: " << error.what();
    return;
  }
  ADD_FAILURE() << "did not throw";
}

}  // namespace test_support

// EXPECT_INVALID("text", statements...): the statements throw std::invalid_argument naming text.
#define EXPECT_INVALID(expected, ...) \
  ::test_support::expect_invalid([&] { __VA_ARGS__; }, {expected}, __FILE__, __LINE__)

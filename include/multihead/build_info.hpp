// What a program got: multihead's version, the instruction-set path and the thread backend its
// translation unit was compiled with. The ISA and OpenMP are the consumer's choice (compiler
// flags, or multihead_link in CMake), so a program should print this once rather than assume.
#pragma once

#include <string>

#include "core/compiled.hpp"
#include "core/isa.hpp"
#include "core/parallel.hpp"
#include "version.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {

struct BuildInfo {
  int version_major, version_minor, version_patch;
  const char* isa;           // isa_name(): "avx512", "avx2" or "generic"
  const char* threads;       // "openmp", or "std::thread" (core/executor.hpp's ThreadPool)
  bool openmp;               // compiled with OpenMP: threads = 0 means all of them
  int max_threads;           // what threads = 0 resolves to now
  bool compiled_kernels;     // kernels taken from the compiled library (compiled.hpp)

  // "multihead 0.2.0: avx512 path, openmp (2 threads), kernels compiled once"
  std::string describe() const {
    return "multihead " + std::to_string(version_major) + "." + std::to_string(version_minor) +
           "." + std::to_string(version_patch) + ": " + isa + " path, " + threads + " (" +
           std::to_string(max_threads) + (max_threads == 1 ? " thread), " : " threads), ") +
           (compiled_kernels ? "kernels compiled once" : "kernels compiled in place (header-only)");
  }
};

// The build of the calling translation unit.
inline BuildInfo build_info() {
#ifdef _OPENMP
  constexpr bool openmp = true;
#else
  constexpr bool openmp = false;
#endif
#ifdef MULTIHEAD_COMPILED
  constexpr bool compiled = true;
#else
  constexpr bool compiled = false;
#endif
  return {MULTIHEAD_VERSION_MAJOR, MULTIHEAD_VERSION_MINOR, MULTIHEAD_VERSION_PATCH, isa_name(),
          openmp ? "openmp" : "std::thread", openmp, resolve_threads(0), compiled};
}

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead

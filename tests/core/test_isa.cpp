// The instruction set compiled in is the one the build asked for (MULTIHEAD_EXPECTED_ISA), or,
// for -march=native, the best one this CPU has.
#include <gtest/gtest.h>

#include <string>
#include <type_traits>

#include <multihead/multihead.hpp>

#ifndef MULTIHEAD_EXPECTED_ISA
#error "the test build defines MULTIHEAD_EXPECTED_ISA to generic, avx2, avx512 or native"
#endif

namespace {

// What -march=native gives on this CPU, by the rules of isa.hpp: AVX-512 needs AVX-512F on top
// of AVX2 and FMA; AVX2 needs FMA too.
std::string best_isa_of_this_cpu() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (avx2 && __builtin_cpu_supports("avx512f")) return "avx512";
  if (avx2) return "avx2";
#endif
  return "generic";
}

TEST(Isa, NameMatchesTheBuild) {
  const std::string expected = MULTIHEAD_EXPECTED_ISA;
  const std::string name = multihead::isa_name();
  if (expected == "native") {
    EXPECT_EQ(name, best_isa_of_this_cpu());
  } else {
    EXPECT_EQ(name, expected);
  }
}

TEST(Isa, NameIsOneOfTheThreePaths) {
  const std::string name = multihead::isa_name();
  EXPECT_TRUE(name == "generic" || name == "avx2" || name == "avx512") << name;
  static_assert(multihead::isa_name()[0] != '\0', "isa_name() is usable at compile time");
}

TEST(Isa, MacrosAgreeWithTheName) {
  const std::string name = multihead::isa_name();
#if defined(MULTIHEAD_HAS_AVX512)
  EXPECT_EQ(name, "avx512");
#if !defined(MULTIHEAD_HAS_AVX2)
  ADD_FAILURE() << "MULTIHEAD_HAS_AVX512 without MULTIHEAD_HAS_AVX2";
#endif
#elif defined(MULTIHEAD_HAS_AVX2)
  EXPECT_EQ(name, "avx2");
#else
  EXPECT_EQ(name, "generic");
#endif
  // Each path needs the compiler flags it names.
#if defined(MULTIHEAD_HAS_AVX2)
#if !defined(__AVX2__) || !defined(__FMA__)
  ADD_FAILURE() << "MULTIHEAD_HAS_AVX2 without __AVX2__ and __FMA__";
#endif
#endif
#if defined(MULTIHEAD_HAS_AVX512) && !defined(__AVX512F__)
  ADD_FAILURE() << "MULTIHEAD_HAS_AVX512 without __AVX512F__";
#endif
}

// The code compiled here can run on this machine (ctest only builds the ISAs it can run).
TEST(Isa, ThisCpuRunsTheCompiledPath) {
  const std::string name = multihead::isa_name();
  const std::string best = best_isa_of_this_cpu();
  if (name == "avx512") {
    EXPECT_EQ(best, "avx512");
  }
  if (name == "avx2") {
    EXPECT_TRUE(best == "avx2" || best == "avx512") << best;
  }
}

// Everything lives in the inline namespace named after the ISA, so translation units built for
// different ISAs link into one program.
TEST(Isa, InlineNamespaceIsNamedAfterTheIsa) {
  static_assert(std::is_same_v<multihead::TensorView<float>,
                               multihead::MULTIHEAD_ISA_NAMESPACE::TensorView<float>>);
  static_assert(std::is_same_v<multihead::MHA, multihead::MULTIHEAD_ISA_NAMESPACE::MHA>);
#define MULTIHEAD_TEST_STRINGIFY2(x) #x
#define MULTIHEAD_TEST_STRINGIFY(x) MULTIHEAD_TEST_STRINGIFY2(x)
  EXPECT_EQ(std::string(MULTIHEAD_TEST_STRINGIFY(MULTIHEAD_ISA_NAMESPACE)),
            std::string(multihead::isa_name()));
#undef MULTIHEAD_TEST_STRINGIFY
#undef MULTIHEAD_TEST_STRINGIFY2
}

}  // namespace

// build_info() reports what the test build asked for: this ISA, OpenMP when the build found it,
// and the kernels from the compiled library (multihead_link without HEADER_ONLY).
TEST(BuildInfo, ReportsTheBuild) {
  const multihead::BuildInfo info = multihead::build_info();
  EXPECT_STREQ(info.isa, multihead::isa_name());
  EXPECT_TRUE(info.compiled_kernels);
#ifdef _OPENMP
  EXPECT_TRUE(info.openmp);
  EXPECT_STREQ(info.threads, "openmp");
#else
  EXPECT_FALSE(info.openmp);
  EXPECT_EQ(info.max_threads, 1);
#endif
  EXPECT_GE(info.max_threads, 1);
  const std::string text = info.describe();
  EXPECT_NE(text.find(std::string(info.isa) + " path"), std::string::npos) << text;
  EXPECT_NE(text.find("compiled once"), std::string::npos) << text;
}

// The version macros are the package's version (CMake reads them from version.hpp and passes
// its project version back here).
TEST(BuildInfo, VersionIsTheProjectVersion) {
  const std::string macros = std::to_string(MULTIHEAD_VERSION_MAJOR) + "." +
                             std::to_string(MULTIHEAD_VERSION_MINOR) + "." +
                             std::to_string(MULTIHEAD_VERSION_PATCH);
  EXPECT_EQ(macros, MULTIHEAD_PROJECT_VERSION);
  const multihead::BuildInfo info = multihead::build_info();
  EXPECT_EQ(info.version_major * 10000 + info.version_minor * 100 + info.version_patch,
            MULTIHEAD_VERSION);
}

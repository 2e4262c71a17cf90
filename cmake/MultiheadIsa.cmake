# The instruction sets multihead's own tests, benchmarks and examples can be compiled for.
# The library target itself never carries -march: that is each consumer's choice.
#
#   multihead_isa_flags(<isa> <out-var>)    compiler flags for native | avx512 | avx2 | generic
#   multihead_isa_runs(<isa> <out-var>)     TRUE when this machine can execute code built for it
#   multihead_project_target(<target> <isa>) flags, warnings and sanitizers of the project's targets

set(MULTIHEAD_ISAS native avx512 avx2 generic)

function(multihead_isa_flags isa out)
  if(NOT CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
    set(${out} "" PARENT_SCOPE)  # non-x86: the compiler's default is the generic path
    return()
  endif()
  if(isa STREQUAL "native")
    set(flags -march=native)
  elseif(isa STREQUAL "avx512")
    set(flags -march=x86-64-v4 -mtune=generic)   # AVX-512 F/BW/CD/DQ/VL, AVX2, FMA, F16C
  elseif(isa STREQUAL "avx2")
    set(flags -march=x86-64-v3 -mtune=generic)   # AVX2, FMA, F16C
  elseif(isa STREQUAL "generic")
    set(flags -march=x86-64 -mtune=generic)      # SSE2 baseline
  else()
    message(FATAL_ERROR "multihead: unknown ISA '${isa}'; expected one of: ${MULTIHEAD_ISAS}")
  endif()
  set(${out} ${flags} PARENT_SCOPE)
endfunction()

# Asks the CPU (through the compiler's cpu-supports builtin) whether it has the features of each
# -march level, so that a test executable is only built where it can run.
function(multihead_isa_runs isa out)
  if(isa STREQUAL "generic" OR isa STREQUAL "native")
    set(${out} TRUE PARENT_SCOPE)
    return()
  endif()
  if(DEFINED MULTIHEAD_ISA_RUNS_${isa})
    set(${out} ${MULTIHEAD_ISA_RUNS_${isa}} PARENT_SCOPE)
    return()
  endif()
  if(isa STREQUAL "avx512")
    set(features avx2 fma avx512f avx512bw avx512cd avx512dq avx512vl)
  else()
    set(features avx2 fma f16c)
  endif()
  set(checks "")
  foreach(feature IN LISTS features)
    string(APPEND checks "  ok = ok && __builtin_cpu_supports(\"${feature}\");\n")
  endforeach()
  set(source "${CMAKE_BINARY_DIR}/multihead_isa_${isa}.cpp")
  file(WRITE "${source}" "int main() {\n  __builtin_cpu_init();\n  bool ok = true;\n${checks}  return ok ? 0 : 1;\n}\n")
  try_run(run_result compile_result "${CMAKE_BINARY_DIR}/multihead_isa_${isa}" "${source}")
  if(compile_result AND run_result EQUAL 0)
    set(runs TRUE)
  else()
    set(runs FALSE)
  endif()
  set(MULTIHEAD_ISA_RUNS_${isa} ${runs} CACHE INTERNAL "this CPU runs ${isa} code")
  message(STATUS "multihead: this machine runs ${isa} code: ${runs}")
  set(${out} ${runs} PARENT_SCOPE)
endfunction()

function(multihead_project_target target isa)
  multihead_isa_flags(${isa} flags)
  target_compile_options(${target} PRIVATE ${flags})
  target_link_libraries(${target} PRIVATE multihead::multihead)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} PRIVATE -Wall -Wextra -Werror)
    if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
      # GCC 12's own AVX-512 intrinsic headers trip -Wuninitialized on their
      # `__m512 __Y = __Y;` idiom when Eigen's kernels inline them (GCC bug 105593).
      target_compile_options(${target} PRIVATE -Wno-uninitialized -Wno-maybe-uninitialized)
    endif()
  endif()
  if(MULTIHEAD_SANITIZE)
    set(sanitize -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
    target_compile_options(${target} PRIVATE ${sanitize})
    target_link_options(${target} PRIVATE ${sanitize})
  endif()
  if(TARGET OpenMP::OpenMP_CXX)
    target_link_libraries(${target} PRIVATE OpenMP::OpenMP_CXX)
  endif()
endfunction()

# The instruction sets multihead's own tests, benchmarks and examples are built for, on top of
# multihead_link (MultiheadLink.cmake, the same call consumers make). The library target itself
# never carries -march: that is each consumer's choice.
#
#   multihead_isa_runs(<isa> <out-var>)     TRUE when this machine can execute code built for it
#   multihead_project_target(<target> <isa>) multihead_link, and the project's warnings and
#                                            sanitizers on the target and its kernels library

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
  multihead_link(${target} ISA ${isa})
  set(targets ${target})
  get_target_property(libraries ${target} LINK_LIBRARIES)
  foreach(library IN LISTS libraries)
    if(library MATCHES "^multihead_kernels_")
      list(APPEND targets ${library})  # the kernels are the project's code too
    endif()
  endforeach()
  foreach(t IN LISTS targets)
    if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
      target_compile_options(${t} PRIVATE -Wall -Wextra -Werror)
      if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
        # GCC 12's own AVX-512 intrinsic headers trip -Wuninitialized on their
        # `__m512 __Y = __Y;` idiom when Eigen's kernels inline them (GCC bug 105593).
        target_compile_options(${t} PRIVATE -Wno-uninitialized -Wno-maybe-uninitialized)
      endif()
    endif()
    if(MULTIHEAD_SANITIZE)
      set(sanitize -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
      target_compile_options(${t} PRIVATE ${sanitize})
      target_link_options(${t} PRIVATE ${sanitize})
    endif()
  endforeach()
endfunction()

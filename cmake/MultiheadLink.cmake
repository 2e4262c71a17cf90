# How a program takes multihead: one call that gives it the instruction set and threads it asks
# for, and the kernels compiled once instead of in every translation unit. Installed with the
# package (multiheadConfig.cmake includes it) and used by multihead's own targets.
#
#   multihead_link(<target> [ISA native|avx512|avx2|generic] [NO_OPENMP] [HEADER_ONLY])
#
#   ISA          the -march level of <target> and of its kernels (default: native, this CPU's
#                best). multihead never picks one behind your back: without multihead_link,
#                or with ISA generic, you get the portable path (multihead::build_info() says
#                which path a program got).
#   NO_OPENMP    run the kernels on a pool of std::threads (core/executor.hpp's ThreadPool)
#                instead of OpenMP's. By default OpenMP is found and linked; if it cannot be
#                found, a warning says the program will use that pool.
#   HEADER_ONLY  compile the kernels in <target>'s own translation units, as plain
#                target_link_libraries(<target> PRIVATE multihead::multihead) does. By default
#                they come from a static library, multihead_kernels_<isa>[_serial], built once per
#                ISA with the same flags and shared by every target that asks for that ISA
#                (include/multihead/core/compiled.hpp says what it holds).
#
#   multihead_isa_flags(<isa> <out-var>)  the compiler flags of an ISA, for targets of your own

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

# The kernels library of one ISA and thread backend, created on first request.
function(multihead_kernels_library isa openmp out)
  set(name multihead_kernels_${isa})
  if(NOT openmp)
    string(APPEND name _serial)
  endif()
  if(NOT TARGET ${name})
    multihead_isa_flags(${isa} flags)
    # The source lies beside this file, in the source tree and in the installed package.
    add_library(${name} STATIC "${CMAKE_CURRENT_FUNCTION_LIST_DIR}/multihead_kernels.cpp")
    target_compile_options(${name} PRIVATE ${flags})
    target_link_libraries(${name} PUBLIC multihead::multihead)
    if(openmp)
      target_link_libraries(${name} PUBLIC OpenMP::OpenMP_CXX)
    endif()
    # Programs that link it take the instantiations from it instead of compiling their own.
    target_compile_definitions(${name} INTERFACE MULTIHEAD_COMPILED)
  endif()
  set(${out} ${name} PARENT_SCOPE)
endfunction()

function(multihead_link target)
  cmake_parse_arguments(PARSE_ARGV 1 arg "NO_OPENMP;HEADER_ONLY" "ISA" "")
  if(arg_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "multihead_link: unknown arguments: ${arg_UNPARSED_ARGUMENTS}")
  endif()
  if(NOT arg_ISA)
    set(arg_ISA native)
  endif()
  multihead_isa_flags(${arg_ISA} flags)
  target_compile_options(${target} PRIVATE ${flags})
  target_link_libraries(${target} PRIVATE multihead::multihead)

  set(openmp FALSE)
  if(NOT arg_NO_OPENMP)
    if(NOT TARGET OpenMP::OpenMP_CXX)
      find_package(OpenMP QUIET COMPONENTS CXX)
    endif()
    if(TARGET OpenMP::OpenMP_CXX)
      set(openmp TRUE)
      target_link_libraries(${target} PRIVATE OpenMP::OpenMP_CXX)
    else()
      message(WARNING "multihead_link(${target}): OpenMP was not found, so ${target} runs the "
                      "kernels on multihead's pool of std::threads (install your compiler's "
                      "OpenMP, e.g. libomp-dev for clang, or pass NO_OPENMP to say you mean it)")
    endif()
  endif()

  if(NOT arg_HEADER_ONLY)
    multihead_kernels_library(${arg_ISA} ${openmp} kernels)
    target_link_libraries(${target} PRIVATE ${kernels})
  endif()
endfunction()

#!/usr/bin/env bash
# What multihead costs a consumer's build: CPU seconds (user + system) to compile
# bench/compile_cost.cpp (the whole header, a GQA layer, prefill and decode over a bf16 cache) at
# -O2 for the native ISA with OpenMP, the way multihead_link builds it:
#   header-only     the kernels compiled in the consumer's translation unit
#   compiled        the kernels taken from the kernels library (MULTIHEAD_COMPILED)
#   kernels library the one-time cost of that library (cmake/multihead_kernels.cpp), per ISA
# Each is compiled `runs` times (default 3) and the median printed.
#
#   bench/compile_cost.sh [runs]        CXX=clang++ bench/compile_cost.sh   to try another compiler
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
cxx=${CXX:-c++}
eigen=$(pkg-config --cflags-only-I eigen3 2>/dev/null | sed 's/-I//; s/ *$//' || true)
eigen=${eigen:-/usr/include/eigen3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
flags=(-std=c++17 -O2 -march=native -fopenmp -Iinclude -isystem "$eigen")

# CPU seconds of one compile, from bash's own accounting of the child's user and system time.
cpu_seconds() {
  local TIMEFORMAT='%U %S'
  { time "$cxx" "${flags[@]}" "$@" -o "$work/out.o" 2>"$work/errors"; } 2>"$work/time" || {
    cat "$work/errors" >&2
    echo "compile_cost: the compile failed" >&2
    exit 1
  }
  awk '{ printf "%.1f", $1 + $2 }' "$work/time"
}

median_of() {
  local samples=()
  for ((i = 0; i < runs; ++i)); do samples+=("$(cpu_seconds "$@")"); done
  printf '%s\n' "${samples[@]}" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

echo "compile_cost: $($cxx --version | head -n 1), -O2 -march=native -fopenmp, median of $runs"
printf '%-18s %8s\n' "translation unit" "CPU s"
printf '%-18s %8s\n' "header-only" "$(median_of -c bench/compile_cost.cpp)"
printf '%-18s %8s\n' "compiled" "$(median_of -DMULTIHEAD_COMPILED -c bench/compile_cost.cpp)"
runs=1
printf '%-18s %8s   (once per ISA, shared by every target)\n' "kernels library" \
  "$(median_of -c cmake/multihead_kernels.cpp)"

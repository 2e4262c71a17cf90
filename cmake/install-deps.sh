#!/usr/bin/env bash
# Installs what building and testing multihead needs on Debian or Ubuntu, and only what is
# missing: the compiler, CMake, Eigen 3.4, GoogleTest and Google Benchmark; clang and its OpenMP
# (the test suite builds a consumer with each compiler) and libFuzzer's runtime (the sanitize
# workflow's fuzzers); nlohmann-json for the optional checkpoint readers (include/multihead/io/);
# OpenMPI for the optional context parallelism (include/multihead/distributed/);
# matplotlib for the charts of examples/plot_variants.py.
set -euo pipefail

packages=(g++ make cmake ninja-build libeigen3-dev libgtest-dev libgmock-dev libbenchmark-dev clang libomp-dev
          nlohmann-json3-dev libopenmpi-dev openmpi-bin python3-matplotlib)
missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

# libFuzzer's runtime, in a package named for clang's version (Debian 12: libclang-rt-14-dev),
# which clang only recommends: asked for once clang is there.
fuzzer_runtime() {
  command -v clang >/dev/null 2>&1 || return 0
  local major
  major=$(clang --version | sed -n 's/.*clang version \([0-9]*\).*/\1/p' | head -n 1)
  if [ -n "$major" ] && ! dpkg-query -W -f='${Status}' "libclang-rt-${major}-dev" 2>/dev/null |
      grep -q "install ok installed"; then
    echo "libclang-rt-${major}-dev"
  fi
}
if [ ${#missing[@]} -eq 0 ]; then
  missing=($(fuzzer_runtime))
  if [ ${#missing[@]} -eq 0 ]; then
    exit 0
  fi
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
echo "install-deps: installing ${missing[*]}"
# A fresh machine may have no package lists yet: update only when the first try fails.
if ! $sudo apt-get install -y --no-install-recommends "${missing[@]}"; then
  $sudo apt-get update
  $sudo apt-get install -y --no-install-recommends "${missing[@]}"
fi
# clang was among the missing: its fuzzer runtime now.
runtime=$(fuzzer_runtime)
if [ -n "$runtime" ]; then
  $sudo apt-get install -y --no-install-recommends "$runtime"
fi

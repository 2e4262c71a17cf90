#!/usr/bin/env bash
# Installs what building and testing multihead needs on Debian or Ubuntu, and only what is
# missing: the compiler, CMake, Eigen 3.4, GoogleTest and Google Benchmark; clang and its OpenMP
# (the test suite builds a consumer with each compiler); matplotlib for the charts of
# examples/plot_variants.py.
set -euo pipefail

packages=(g++ make cmake ninja-build libeigen3-dev libgtest-dev libgmock-dev libbenchmark-dev clang libomp-dev
          python3-matplotlib)
missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
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

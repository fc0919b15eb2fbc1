#!/usr/bin/env bash
# Builds Echo and runs every test: setup (packages), configure (Release; the
# CUDA backend is compiled when nvcc is found, for CMake's default
# architectures), build, ctest. CUDA tests skip without a GPU.
#   ECHO_BUILD_DIR  build folder (default: build)
#   ECHO_JOBS       parallel jobs (default: nproc)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

build_dir="${ECHO_BUILD_DIR:-build}"
jobs="${ECHO_JOBS:-$(nproc)}"

bash scripts/setup.sh

cuda=OFF
if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then cuda=ON; fi
echo "test: configuring ${build_dir} (Release, CUDA ${cuda})"
cmake -S . -B "${build_dir}" -DCMAKE_BUILD_TYPE=Release -DECHO_CUDA="${cuda}"
cmake --build "${build_dir}" -j "${jobs}"
ctest --test-dir "${build_dir}" --output-on-failure -j "${jobs}"

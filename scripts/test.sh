#!/usr/bin/env bash
# Builds Echo and runs every test, in two stages:
#   1. setup (packages), configure (Release; the CUDA backend is compiled when
#      nvcc is found, for CMake's default architectures), build, ctest. CUDA
#      tests skip without a GPU.
#   2. the whole suite again in a CPU-only build under AddressSanitizer and
#      UndefinedBehaviorSanitizer (-O1, every report fatal). Tests that train for
#      many steps take fewer when ECHO_UNDER_SANITIZER=1 (set here).
#   ECHO_BUILD_DIR      build folder of stage 1 (default: build)
#   ECHO_SAN_BUILD_DIR  build folder of stage 2 (default: build-asan)
#   ECHO_SANITIZE       sanitizers of stage 2 (default: address,undefined,float-cast-overflow;
#                       "" skips it). GCC's "undefined" leaves out float-cast-overflow, which
#                       catches a double attribute cast to an integer out of its range.
#   ECHO_JOBS           parallel jobs (default: nproc)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

build_dir="${ECHO_BUILD_DIR:-build}"
san_dir="${ECHO_SAN_BUILD_DIR:-build-asan}"
sanitize="${ECHO_SANITIZE-address,undefined,float-cast-overflow}"
jobs="${ECHO_JOBS:-$(nproc)}"

bash scripts/setup.sh

cuda=OFF
if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then cuda=ON; fi
echo "test: configuring ${build_dir} (Release, CUDA ${cuda})"
cmake -S . -B "${build_dir}" -DCMAKE_BUILD_TYPE=Release -DECHO_CUDA="${cuda}"
cmake --build "${build_dir}" -j "${jobs}"
ctest --test-dir "${build_dir}" --output-on-failure -j "${jobs}"

if [ -z "${sanitize}" ]; then
  echo "test: sanitizer stage skipped (ECHO_SANITIZE is empty)"
  exit 0
fi
start=$(date +%s)
echo "test: configuring ${san_dir} (CPU only, -O1, sanitizers ${sanitize})"
cmake -S . -B "${san_dir}" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG=-O1 -DECHO_CUDA=OFF \
  -DECHO_SANITIZE="${sanitize}"
cmake --build "${san_dir}" -j "${jobs}"
# Reports abort (status 134), so a test that runs echo-lm and expects a plain
# failure status cannot mistake a report in the child for one; leaks count too.
# One OpenMP/OpenBLAS thread per test (tests that compare thread counts set
# theirs): ctest runs tests side by side, and oversubscribed instrumented
# threads made this stage 4-5x slower (measured on a shared 2-core machine:
# 515 s vs 113 s of ctest).
OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 ECHO_UNDER_SANITIZER=1 \
  ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}" \
  UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:abort_on_error=1}" \
  ctest --test-dir "${san_dir}" --output-on-failure -j "${jobs}"
echo "test: sanitizer stage took $(( $(date +%s) - start )) s"

#!/usr/bin/env bash
# Builds Echo and runs every test, in three stages:
#   1. setup (packages), configure (Release) with the emulated CUDA device
#      (ECHO_CUDA=EMU: the same .cu kernels compiled by the host compiler and run
#      on the CPU, docs/cuda.md), build, ctest: every CUDA test runs, against the
#      CPU, and a last check that every kernel in the sources was launched.
#   2. the whole suite again on the emulated device under AddressSanitizer and
#      UndefinedBehaviorSanitizer (-O1, every report fatal), with the threads of
#      each block in a seeded random order (ECHO_EMU_SCHEDULE). Tests that train
#      for many steps take fewer when ECHO_UNDER_SANITIZER=1 (set here).
#   3. the real CUDA build with nvcc (sm_90), compiled and linked, when nvcc is
#      found: the same sources must build for a GPU (scripts/gpu_check.sh runs
#      its tests on one).
#   ECHO_BUILD_DIR      build folder of stage 1 (default: build)
#   ECHO_SAN_BUILD_DIR  build folder of stage 2 (default: build-asan)
#   ECHO_NVCC_BUILD_DIR build folder of stage 3 (default: build-nvcc)
#   ECHO_SANITIZE       sanitizers of stage 2 (default: address,undefined,float-cast-overflow;
#                       "" skips it). GCC's "undefined" leaves out float-cast-overflow, which
#                       catches a double attribute cast to an integer out of its range.
#   ECHO_JOBS           parallel jobs (default: nproc)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

build_dir="${ECHO_BUILD_DIR:-build}"
san_dir="${ECHO_SAN_BUILD_DIR:-build-asan}"
nvcc_dir="${ECHO_NVCC_BUILD_DIR:-build-nvcc}"
sanitize="${ECHO_SANITIZE-address,undefined,float-cast-overflow}"
jobs="${ECHO_JOBS:-$(nproc)}"

bash scripts/setup.sh

start=$(date +%s)
echo "test: configuring ${build_dir} (Release, CUDA emulated on the CPU)"
cmake -S . -B "${build_dir}" -DCMAKE_BUILD_TYPE=Release -DECHO_CUDA=EMU
cmake --build "${build_dir}" -j "${jobs}"
ECHO_EMU_COVERAGE_CHECK=1 ctest --test-dir "${build_dir}" --output-on-failure -j "${jobs}"
echo "test: stage 1 took $(( $(date +%s) - start )) s"

if [ -z "${sanitize}" ]; then
  echo "test: sanitizer stage skipped (ECHO_SANITIZE is empty)"
else
  start=$(date +%s)
  echo "test: configuring ${san_dir} (CUDA emulated, -O1, sanitizers ${sanitize})"
  cmake -S . -B "${san_dir}" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG=-O1 -DECHO_CUDA=EMU \
    -DECHO_SANITIZE="${sanitize}"
  cmake --build "${san_dir}" -j "${jobs}"
  # Reports abort (status 134), so a test that runs echo-lm and expects a plain
  # failure status cannot mistake a report in the child for one; leaks count too.
  # One OpenMP/OpenBLAS thread and one emulator thread per test (tests that
  # compare thread counts set theirs): ctest runs tests side by side, and
  # oversubscribed instrumented threads made this stage 4-5x slower (measured on
  # a shared 2-core machine: 515 s vs 113 s of ctest).
  OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 ECHO_EMU_THREADS=1 ECHO_UNDER_SANITIZER=1 ECHO_EMU_COVERAGE_CHECK=1 \
    ECHO_EMU_SCHEDULE=random:7 \
    ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}" \
    UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:abort_on_error=1}" \
    ctest --test-dir "${san_dir}" --output-on-failure -j "${jobs}"
  echo "test: sanitizer stage took $(( $(date +%s) - start )) s"
fi

if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  start=$(date +%s)
  echo "test: configuring ${nvcc_dir} (Release, CUDA with nvcc for sm_90; compiled, not run: no GPU here)"
  cmake -S . -B "${nvcc_dir}" -DCMAKE_BUILD_TYPE=Release -DECHO_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DECHO_TESTS=OFF
  cmake --build "${nvcc_dir}" -j "${jobs}" --target echo-lm
  echo "test: nvcc build took $(( $(date +%s) - start )) s"
else
  echo "test: nvcc not found: the real CUDA build was not compiled"
fi

#!/usr/bin/env bash
# Fuzzes every input format with libFuzzer (not part of CI): builds the targets
# tests/fuzz/fuzz_*.cpp with clang (-fsanitize=fuzzer,address,undefined, CPU only,
# -O1) into build-fuzz, then runs each for a bounded time on a working copy of
# its seed corpus tests/fuzz/corpus/<target>/ (with tests/fuzz/<target>.dict
# when there is one). Prints one line per target: executions, corpus size,
# crashes. A crash input lands in build-fuzz/artifacts/<target>/; make it a
# regression by copying it to tests/fuzz/regressions/<target>/ (replayed by
# tests/reliability/test_fuzz_regressions.cpp) and fix the code.
#
#   bash scripts/fuzz.sh [--time SECONDS] [--seeds] [TARGET...]
#     --time S   seconds per target (default 60, or $ECHO_FUZZ_TIME)
#     --seeds    rewrite the binary seed corpora (checkpoint, op_runner) first
#     TARGET     checkpoint config op_runner task_spec token_file (default: all)
#   ECHO_FUZZ_DIR  build folder (default build-fuzz); ECHO_JOBS  build jobs (nproc)
# Exit status: 0 when no target crashed, 1 otherwise.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds="${ECHO_FUZZ_TIME:-60}"
seeds=0
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --time) seconds="$2"; shift 2 ;;
    --seeds) seeds=1; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(checkpoint config op_runner task_spec token_file)

build_dir="${ECHO_FUZZ_DIR:-build-fuzz}"
jobs="${ECHO_JOBS:-$(nproc)}"

bash scripts/setup.sh --fuzz
echo "fuzz: configuring ${build_dir} (clang, fuzzer + address + undefined, CPU only)"
CC=clang CXX=clang++ cmake -S . -B "${build_dir}" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g" \
  -DECHO_CUDA=OFF -DECHO_TESTS=OFF -DECHO_FUZZ=ON -DECHO_SANITIZE=address,undefined >/dev/null
build_targets=(fuzz_seed_corpus)
for t in "${targets[@]}"; do build_targets+=("fuzz_${t}"); done
cmake --build "${build_dir}" -j "${jobs}" --target "${build_targets[@]}"

if [ "${seeds}" = 1 ]; then "${build_dir}/fuzz_seed_corpus" tests/fuzz/corpus; fi

# Leak checking stays on; HDF5 and OpenBLAS keep process-lifetime allocations
# that LSan does not count as leaks (still reachable).
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"

status=0
summary=()
for t in "${targets[@]}"; do
  work="${build_dir}/corpus/${t}"
  artifacts="${build_dir}/artifacts/${t}"
  log="${build_dir}/fuzz_${t}.log"
  mkdir -p "${work}" "${artifacts}"
  dict=()
  [ -f "tests/fuzz/${t}.dict" ] && dict=(-dict="tests/fuzz/${t}.dict")
  echo "fuzz: ${t} for ${seconds} s (log ${log})"
  set +e
  "${build_dir}/fuzz_${t}" -max_total_time="${seconds}" -timeout=30 -rss_limit_mb=2560 -max_len=65536 \
    -print_final_stats=1 -artifact_prefix="${artifacts}/" "${dict[@]}" "${work}" "tests/fuzz/corpus/${t}" \
    >"${log}" 2>&1
  rc=$?
  set -e
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "${log}" | grep -o '[0-9]*$' || true)
  corpus=$(find "${work}" -type f | wc -l)
  crashes=$(find "${artifacts}" -type f | wc -l)
  line="${t}: ${execs:-?} executions in ${seconds} s, corpus ${corpus} inputs, exit ${rc}, ${crashes} crash file(s)"
  summary+=("${line}")
  if [ "${rc}" != 0 ] || [ "${crashes}" != 0 ]; then
    status=1
    echo "fuzz: ${t} FAILED; last lines of ${log}:"
    tail -40 "${log}"
  fi
done
echo "fuzz summary:"
printf '  %s\n' "${summary[@]}"
exit "${status}"

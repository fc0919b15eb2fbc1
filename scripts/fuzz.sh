#!/usr/bin/env bash
# Fuzzes every input format with libFuzzer (not part of CI): builds the targets
# tests/fuzz/fuzz_*.cpp with clang (-fsanitize=fuzzer,address,undefined, CPU only,
# -O1) into build-fuzz, then runs each for a bounded time on a working copy of
# its seed corpus tests/fuzz/corpus/<target>/ (with tests/fuzz/<target>.dict
# when there is one). Prints one line per target: executions, corpus size,
# crashes of the fuzzed process (in our code, or inside libhdf5 past the
# preflight) and the inputs on which libhdf5 crashed or hung in the preflight
# child and which became errors (see below). An input that crashes the fuzzed
# process stays in build-fuzz/artifacts/<target>/; make it a regression by
# copying it to tests/fuzz/regressions/<target>/ (replayed by
# tests/reliability/test_fuzz_regressions.cpp) and fix the code.
#
#   bash scripts/fuzz.sh [--time SECONDS] [--seeds] [TARGET...]
#     --time S   seconds per target (default 60, or $ECHO_FUZZ_TIME)
#     --seeds    rewrite the binary seed corpora (checkpoint, op_runner) first
#     TARGET     checkpoint config op_runner task_spec token_file (default: all)
#   ECHO_FUZZ_DIR  build folder (default build-fuzz); ECHO_JOBS  build jobs (nproc)
#   ECHO_H5_PREFLIGHT_TIMEOUT  the HDF5 preflight's limit while fuzzing (default 5 s,
#              below libFuzzer's -timeout=30 so that a hang in libhdf5 is the
#              preflight's error, not a timeout of the fuzzed process)
# Exit status: 0 when the fuzzed processes never crashed, 1 otherwise.
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

# Leak checking stays on (fast_unwind_on_malloc=0: libhdf5 has no frame
# pointers, and the triage below needs whole allocation stacks).
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1:fast_unwind_on_malloc=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
export ECHO_H5_PREFLIGHT_TIMEOUT="${ECHO_H5_PREFLIGHT_TIMEOUT:-5}"

# The HDF5 C library (Debian's 1.10.x) itself crashes, hangs or leaks on some
# malformed files (docs/reliability.md). Every HDF5 file our readers open is
# first parsed by libhdf5 in a forked preflight child (h5::File::preflight), so
# such a crash or hang ends the child and becomes an error in the fuzzed
# process; the targets log each one to ${build_dir}/preflight/<target>.log
# (counted below). Any crash, timeout or out-of-memory of the fuzzed process
# itself is a failure. Fuzzing runs in fork mode and goes on after one;
# afterwards each saved input is replayed and sorted by the first stack frame
# outside the sanitizer/libc runtime: inside libhdf5 -> the preflight missed
# it; anywhere else -> our code. Both fail the run (make the input a
# regression test and fix it).
# The sanitizer runtime and its interceptors (strdup, memcpy, malloc...) are
# frames of the fuzz binary without a source line; our code always has one (-g).
first_frame() {  # the first frame of the first stack in a sanitizer report on stdin
  grep -E '^ +#[0-9]+ ' | grep -vE '/fuzz_[a-z_]+\+0x[0-9a-f]+\)|libc\.so|libstdc\+\+|libgcc_s|__libc_' | head -1
}

status=0
summary=()
for t in "${targets[@]}"; do
  work="${build_dir}/corpus/${t}"
  artifacts="${build_dir}/artifacts/${t}"
  hdf5_dir="${build_dir}/hdf5/${t}"
  log="${build_dir}/fuzz_${t}.log"
  caught_log="${build_dir}/preflight/${t}.log"
  rm -rf "${artifacts}" "${caught_log}"
  mkdir -p "${work}" "${artifacts}" "${hdf5_dir}" "${build_dir}/preflight"
  dict=()
  [ -f "tests/fuzz/${t}.dict" ] && dict=(-dict="tests/fuzz/${t}.dict")
  # libhdf5 leaks on the error paths of many malformed files, which would end
  # every fuzzing job early: no leak checking for the targets that read HDF5
  # (our code's leaks are checked by the sanitizer stage of scripts/test.sh).
  # Nor the slow unwinder on every malloc there (it serves the allocation stacks
  # of leak reports): libhdf5 allocates a lot, and the preflight child parses
  # each file once more, which made these targets 3x slower.
  leaks=1
  unwind=0
  case "${t}" in checkpoint|op_runner) leaks=0 unwind=1 ;; esac
  echo "fuzz: ${t} for ${seconds} s (log ${log})"
  set +e
  ECHO_FUZZ_PREFLIGHT_LOG="${PWD}/${caught_log}" ASAN_OPTIONS="${ASAN_OPTIONS}:detect_leaks=${leaks}:fast_unwind_on_malloc=${unwind}" "${build_dir}/fuzz_${t}" -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
    -max_total_time="${seconds}" -timeout=30 -rss_limit_mb=2560 -max_len=65536 -detect_leaks="${leaks}" \
    -artifact_prefix="${artifacts}/" "${dict[@]}" "${work}" "tests/fuzz/corpus/${t}" >"${log}" 2>&1
  set -e
  execs=$(grep -oE '^#[0-9]+:' "${log}" | tail -1 | tr -d '#:')
  ours=0
  in_hdf5=0
  unreproduced=0
  slow=0
  for input in "${artifacts}"/*; do
    [ -f "${input}" ] || continue
    # libFuzzer keeps inputs slower than 10 s: the preflight's timeouts (not crashes).
    case "$(basename "${input}")" in slow-unit-*) slow=$((slow + 1)); continue ;; esac
    frame=$(ASAN_OPTIONS="${ASAN_OPTIONS}:detect_leaks=${leaks}:fast_unwind_on_malloc=${unwind}" timeout 120 "${build_dir}/fuzz_${t}" -timeout=30 -rss_limit_mb=2560 -detect_leaks="${leaks}" \
      "${input}" 2>&1 | first_frame || true)
    if [[ "${frame}" == *libhdf5* ]]; then
      in_hdf5=$((in_hdf5 + 1))
      mv "${input}" "${hdf5_dir}/"
      echo "fuzz: ${t}: $(basename "${input}") crashes inside libhdf5 in the fuzzed process (the preflight missed it): ${frame}"
    elif [ -z "${frame}" ]; then
      unreproduced=$((unreproduced + 1))
      echo "fuzz: ${t}: $(basename "${input}") did not fail again on replay (kept)"
    else
      ours=$((ours + 1))
      echo "fuzz: ${t}: $(basename "${input}") fails in our code: ${frame}"
    fi
  done
  corpus=$(find "${work}" -type f | wc -l)
  caught=0
  kinds=""
  if [ -f "${caught_log}" ]; then
    caught=$(wc -l <"${caught_log}")
    # "libhdf5 crashed (SIGSEGV) ...", "libhdf5 failed (exit status 1) ...", "libhdf5 did not finish ..."
    kinds=$(sed -E 's/^libhdf5 (crashed|failed) \(([^)]*)\).*/\2/; s/^libhdf5 did not finish.*/timeout/' "${caught_log}" |
      sort | uniq -c | awk '{n=$1; $1=""; printf "%s%s x%s", sep, substr($0, 2), n; sep=", "}')
  fi
  summary+=("${t}: ${execs:-?} executions in ${seconds} s, corpus ${corpus}; fuzzed process crashed: ${ours} in our code, ${in_hdf5} inside libhdf5 (in ${hdf5_dir}), ${unreproduced} not reproduced, ${slow} slow; caught by the HDF5 preflight: ${caught}${kinds:+ (${kinds})}")
  [ "${ours}" = 0 ] && [ "${in_hdf5}" = 0 ] || status=1
done
echo "fuzz summary:"
printf '  %s\n' "${summary[@]}"
exit "${status}"

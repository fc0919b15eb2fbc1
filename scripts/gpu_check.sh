#!/usr/bin/env bash
# The one script to run on a GPU machine:  bash scripts/gpu_check.sh RESULTS_DIR
#
# Runs every CUDA test (GoogleTest filter *Cuda*) and `echo-lm bench` for
# ssd_scan, koopman_fit, causal_attention (and the small unary bandwidth probe) on cuda and cpu,
# and writes into RESULTS_DIR:
#   results.json  pass/fail per test, bench records and timings, the
#                 nvidia-smi line, the commit, wall times, "ok"
#   tests.log     the tests' output        bench.log  the benchmarks' stderr
#   build.log     only when it built from source
# Two modes:
#   bundle  .device_bundle/bundle.tar.gz exists (made here by
#           scripts/device_bundle.sh and carried along): runs those binaries.
#   source  otherwise: builds for sm_90 into build-gpu first. This needs HDF5,
#           CLI11, GoogleTest and OpenBLAS, which the usual GPU machine lacks:
#           the build then fails and results.json says so.
# It keeps to a time budget (ECHO_GPU_BUDGET_S, default 420 s) so that it ends
# well inside 8 minutes; whatever it had no time for is marked "not run".
# Exit status: 0 when every CUDA test passed (none failed, none skipped), else 1;
# 2 when there was nothing to run (build failed, no bundle).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ $# -ne 1 ]; then
  echo "usage: bash scripts/gpu_check.sh RESULTS_DIR" >&2
  exit 2
fi
results="$1"
mkdir -p "$results"
results="$(cd "$results" && pwd)"
budget="${ECHO_GPU_BUDGET_S:-420}"
start=$(date +%s)
work="$(mktemp -d "${TMPDIR:-/tmp}/echo_gpu_check.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/gtest" "$work/bench"
: > "$results/tests.log"
: > "$results/bench.log"

elapsed() { echo $(( $(date +%s) - start )); }
left() { echo $(( budget - $(elapsed) )); }
note() { echo "gpu_check [$(elapsed)s] $*"; }

# ---- the machine ---------------------------------------------------------------------
if command -v nvidia-smi >/dev/null 2>&1; then
  smi="$(nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 | head -1)"
  [ -n "$smi" ] || smi="nvidia-smi printed nothing"
else
  smi="nvidia-smi not found"
fi
note "GPU: $smi"

# ---- what to run -----------------------------------------------------------------------
mode=""
build_status="not needed"
if [ -f .device_bundle/bundle.tar.gz ]; then
  mode=bundle
  tar -xzf .device_bundle/bundle.tar.gz -C "$work" || { echo "gpu_check: cannot unpack the bundle" >&2; exit 2; }
  commit="$(cat .device_bundle/COMMIT 2>/dev/null || echo unknown)"
  run=("$work/run")
  tests=()
  for t in "$work"/bin/test_*; do [ -x "$t" ] && tests+=("$(basename "$t")"); done
  bench_bin=echo-lm
  note "bundle built at commit $commit: ${#tests[@]} test executables"
else
  mode=source
  commit="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
  note "no .device_bundle: building for sm_90 from source (log: build.log)"
  if cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DECHO_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
       > "$results/build.log" 2>&1 &&
     cmake --build build-gpu -j "$(nproc)" >> "$results/build.log" 2>&1; then
    build_status=ok
  else
    reason="$(grep -m1 -iE 'could not find|error|not found' "$results/build.log" | cut -c1-300)"
    build_status="failed: ${reason:-$(tail -1 "$results/build.log" | cut -c1-300)}"
    note "build $build_status"
    note "prepare a bundle on a machine with the dependencies (bash scripts/device_bundle.sh) and carry .device_bundle"
  fi
  run=(env "ECHO_BIN=$PWD/build-gpu/echo-lm")
  tests=()
  if [ "$build_status" = ok ]; then
    for t in build-gpu/test_*; do [ -f "$t" ] && [ -x "$t" ] && tests+=("$t"); done
  fi
  bench_bin="$PWD/build-gpu/echo-lm"
fi
export ECHO_SOURCE_DIR="$PWD"
# The data-parallel CUDA test launches its ranks with mpirun (OpenMPI); without
# one on this machine it skips, saying so.
if [ -z "${ECHO_MPIRUN:-}" ] && command -v mpirun >/dev/null 2>&1; then export ECHO_MPIRUN="$(command -v mpirun)"; fi

# ---- CUDA tests --------------------------------------------------------------------------
: > "$work/tests.tsv"  # name, exit status, seconds
for t in "${tests[@]}"; do
  name="$(basename "$t")"
  if [ "$(left)" -lt 30 ]; then
    printf '%s\tnot run (time budget)\t0\n' "$name" >> "$work/tests.tsv"
    continue
  fi
  limit=$(( $(left) < 240 ? $(left) : 240 ))
  note "$name (limit ${limit}s)" | tee -a "$results/tests.log"
  t0=$(date +%s)
  timeout -k 5 "$limit" "${run[@]}" "$t" --gtest_filter='*Cuda*' --gtest_color=no \
    --gtest_output="json:$work/gtest/$name.json" >> "$results/tests.log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" >> "$work/tests.tsv"
done

# ---- benchmarks ----------------------------------------------------------------------------
: > "$work/bench.tsv"  # bench, device, exit status, seconds
if [ "$mode" = bundle ] || [ "$build_status" = ok ]; then
  for b in ssd_scan koopman_fit unary causal_attention; do
    for dev in cuda cpu; do
      if [ "$(left)" -lt 20 ]; then
        printf '%s\t%s\tnot run (time budget)\t0\n' "$b" "$dev" >> "$work/bench.tsv"
        continue
      fi
      limit=$(( $(left) < 90 ? $(left) : 90 ))
      note "bench $b --device $dev (limit ${limit}s)" | tee -a "$results/bench.log"
      t0=$(date +%s)
      timeout -k 5 "$limit" "${run[@]}" "$bench_bin" bench "$b" --device "$dev" \
        > "$work/bench/${b}_${dev}.jsonl" 2> "$work/bench/${b}_${dev}.err"
      rc=$?
      printf '%s\t%s\t%s\t%s\n' "$b" "$dev" "$rc" "$(( $(date +%s) - t0 ))" >> "$work/bench.tsv"
      cat "$work/bench/${b}_${dev}.err" "$work/bench/${b}_${dev}.jsonl" >> "$results/bench.log"
    done
  done
fi

# ---- results.json ---------------------------------------------------------------------------
export GC_RESULTS="$results" GC_WORK="$work" GC_MODE="$mode" GC_COMMIT="$commit" GC_SMI="$smi" \
  GC_BUILD="$build_status" GC_WALL="$(elapsed)" GC_BUDGET="$budget"
python3 - <<'PY'
import json, os, glob

work, results = os.environ["GC_WORK"], os.environ["GC_RESULTS"]

def rows(path):
    with open(path) as f:
        return [line.rstrip("\n").split("\t") for line in f if line.strip()]

tests, counts = [], {"passed": 0, "failed": 0, "skipped": 0}
problems = []
for name, status, seconds in rows(os.path.join(work, "tests.tsv")):
    entry = {"executable": name, "exit_status": status, "seconds": int(seconds), "cases": []}
    report = os.path.join(work, "gtest", name + ".json")
    if os.path.exists(report):
        with open(report) as f:
            data = json.load(f)
        for suite in data.get("testsuites", []):
            for case in suite.get("testsuite", []):
                if case.get("failures"):
                    outcome = "failed"
                elif case.get("result") == "SKIPPED" or case.get("status") == "NOTRUN":
                    outcome = "skipped"
                else:
                    outcome = "passed"
                counts[outcome] += 1
                item = {"name": suite["name"] + "." + case["name"], "result": outcome, "time": case.get("time")}
                if outcome == "failed":
                    item["failure"] = case["failures"][0].get("failure", "")[:2000]
                entry["cases"].append(item)
    if status != "0":
        problems.append(f"{name}: exit status {status}" + ("" if os.path.exists(report) else " (no report: crashed or timed out?)"))
    tests.append(entry)

bench = []
for b, dev, status, seconds in rows(os.path.join(work, "bench.tsv")):
    records, other = [], []
    path = os.path.join(work, "bench", f"{b}_{dev}.jsonl")
    if os.path.exists(path):
        for line in open(path):
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except ValueError:
                other.append(line)
    err_path = os.path.join(work, "bench", f"{b}_{dev}.err")
    stderr = open(err_path).read().strip().splitlines()[-5:] if os.path.exists(err_path) else []
    bench.append({"bench": b, "device": dev, "exit_status": status, "seconds": int(seconds),
                  "records": records, "other_output": other[:20], "stderr_tail": stderr})

if counts["failed"]:
    problems.append(f"{counts['failed']} CUDA test(s) failed")
if counts["skipped"]:
    problems.append(f"{counts['skipped']} CUDA test(s) skipped on the GPU machine (no GPU seen? see tests.log)")
if not tests:
    problems.append("no tests ran (" + ("build " + os.environ["GC_BUILD"] +
                    "; make a bundle with scripts/device_bundle.sh and carry .device_bundle"
                    if os.environ["GC_MODE"] == "source" else "empty bundle") + ")")

out = {
    "ok": not problems,
    "problems": problems,
    "mode": os.environ["GC_MODE"],
    "build": os.environ["GC_BUILD"],
    "commit": os.environ["GC_COMMIT"],
    "nvidia_smi": os.environ["GC_SMI"],
    "wall_s": int(os.environ["GC_WALL"]),
    "budget_s": int(os.environ["GC_BUDGET"]),
    "summary": counts,
    "tests": tests,
    "bench": bench,
}
with open(os.path.join(results, "results.json"), "w") as f:
    json.dump(out, f, indent=1)
print(f"gpu_check: {'OK' if out['ok'] else 'NOT OK'}: {counts['passed']} passed, {counts['failed']} failed, "
      f"{counts['skipped']} skipped; {len(bench)} bench runs; {out['wall_s']}s")
for p in problems:
    print("  - " + p)
PY
py=$?
if [ $py -ne 0 ]; then
  echo "gpu_check: could not write results.json (python3 exit $py)" >&2
  exit 2
fi
if [ ${#tests[@]} -eq 0 ]; then exit 2; fi
python3 -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1]))["ok"] else 1)' "$results/results.json"

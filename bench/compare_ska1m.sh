#!/bin/bash
# Echo against the eager PyTorch port of ska-1m (bench/torch_ska1m.py), the fair way:
# the same model and batch (B × T, every position scored), every thread pool of both
# pinned to THREADS (OpenMP, OpenBLAS, MKL, PyTorch's intra- and inter-op pools),
# interleaved rounds, and the MEAN step time over all timed steps (slow steps count).
#
#   bench/compare_ska1m.sh THREADS ROUNDS [B T STEPS] > results.jsonl
#
# Prints one JSON line per run (echo-lm bench step / torch_ska1m) and a summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${1:?threads}; ROUNDS=${2:?rounds}; B=${3:-32}; T=${4:-76}; STEPS=${5:-35}
ECHO_LM=${ECHO_LM:-build/echo-lm}
export OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
for r in $(seq 1 "$ROUNDS"); do
  "$ECHO_LM" bench step --model ska-1m --batch "$B" --seq "$T" --threads "$THREADS" --iters "$STEPS" --warmup 5 \
    | sed "s/^{/{\"round\":$r,/"
  /usr/bin/python3 bench/torch_ska1m.py --threads "$THREADS" --batch "$B" --T "$T" --scored 1.0 \
    --steps "$STEPS" --warmup 5 | sed "s/^{/{\"round\":$r,/"
done | tee /dev/stderr | /usr/bin/python3 -c '
import json, sys, statistics as s
rows = [json.loads(l) for l in sys.stdin if l.strip()]
ours = [r["tokens_per_s"] for r in rows if r.get("bench") == "step"]
theirs = [r["tokens_per_s_mean"] for r in rows if r.get("bench") == "torch_ska1m"]
print(json.dumps({"summary": True, "threads": rows[0]["threads"], "echo_tokens_per_s_mean": s.fmean(ours),
                  "torch_tokens_per_s_mean": s.fmean(theirs), "ratio": s.fmean(ours) / s.fmean(theirs),
                  "per_round_ratio": [a / b for a, b in zip(ours, theirs)]}))'

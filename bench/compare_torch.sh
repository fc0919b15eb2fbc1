#!/bin/bash
# Echo against the eager PyTorch port of a small preset (bench/torch_lm1m.py: ska-1m,
# ssm-1m or attn-1m), the fair way: the same model and batch (B × T, every position
# scored), every thread pool of both pinned to THREADS (OpenMP, OpenBLAS, MKL,
# PyTorch's intra- and inter-op pools), interleaved rounds, and the MEAN step time
# over all timed steps (slow steps count).
#
#   bench/compare_torch.sh MODEL THREADS ROUNDS [B T STEPS] > results.jsonl
#
# Prints one JSON line per run (echo-lm bench step / torch_lm1m) and a summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:?model (ska-1m, ssm-1m or attn-1m)}; THREADS=${2:?threads}; ROUNDS=${3:?rounds}
B=${4:-32}; T=${5:-76}; STEPS=${6:-35}
ECHO_LM=${ECHO_LM:-build/echo-lm}
export OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
for r in $(seq 1 "$ROUNDS"); do
  "$ECHO_LM" bench step --model "$MODEL" --batch "$B" --seq "$T" --threads "$THREADS" --iters "$STEPS" --warmup 5 \
    | sed "s/^{/{\"round\":$r,/"
  /usr/bin/python3 bench/torch_lm1m.py --model "$MODEL" --threads "$THREADS" --batch "$B" --T "$T" --scored 1.0 \
    --steps "$STEPS" --warmup 5 | sed "s/^{/{\"round\":$r,/"
done | tee /dev/stderr | MODEL=$MODEL /usr/bin/python3 -c '
import json, os, sys, statistics as s
model = os.environ["MODEL"]
rows = [json.loads(l) for l in sys.stdin if l.strip()]
ours = [r for r in rows if r.get("bench") == "step" and r.get("model") == model]
theirs = [r for r in rows if r.get("bench") == "torch_lm1m" and r.get("model") == model]
if not ours or len(ours) != len(theirs):
    sys.exit(f"compare_torch: {len(ours)} Echo and {len(theirs)} PyTorch runs of {model}")
n_ours, n_theirs = ours[0]["parameters"], theirs[0]["parameters"]
if n_ours != n_theirs:
    sys.exit(f"compare_torch: {model}: Echo has {n_ours} parameters, the port {n_theirs}")
a = [r["tokens_per_s"] for r in ours]
b = [r["tokens_per_s_mean"] for r in theirs]
print(json.dumps({"summary": True, "model": model, "parameters": n_ours, "threads": rows[0]["threads"],
                  "echo_tokens_per_s_mean": s.fmean(a), "torch_tokens_per_s_mean": s.fmean(b),
                  "ratio": s.fmean(a) / s.fmean(b), "per_round_ratio": [x / y for x, y in zip(a, b)]}))'

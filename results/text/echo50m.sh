#!/usr/bin/env bash
# echo-50m at byte level (vocab_size 256) on the fortunes corpus (the split of
# results/text/compare.sh), CPU, one thread, in the background; stopped with
# SIGINT (which writes a checkpoint) if it outlives its time budget.
#   bash results/text/echo50m.sh ECHO_BIN DATA_DIR OUT_DIR
set -euo pipefail
ECHO=${1:?echo-lm binary}
DATA=${2:?directory with train.bin and val.bin}
OUT=${3:?run directory}
OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 /usr/bin/time -v nice -n 10 "$ECHO" train --model echo-50m \
  --set vocab_size=256 --data "$DATA/train.bin" --val-data "$DATA/val.bin" --seq-len 256 --batch 2 \
  --steps 120 --lr 1e-3 --warmup 10 --eval-every 30 --eval-examples 8 --ckpt-every 30 --log-every 5 --seed 1 \
  --threads 1 --out "$OUT"

#!/usr/bin/env bash
# The three-model comparison of docs/language_modelling.md: Mamba-2 only (ssm-1m),
# Mamba-2 + attention (attn-1m) and Mamba-2 + SKA (ska-1m), byte level, the same
# data, steps, batch, seed and schedule; one CPU thread each.
#   [MODELS="ssm-1m attn-1m ska-1m"] [STEPS=250] bash results/text/compare.sh ECHO_BIN OUT_DIR
# (The documented runs: ssm-1m alone, then attn-1m and ska-1m as two concurrent
# invocations with MODELS set, on a machine shared with other work.)
set -euo pipefail
ECHO=${1:?echo-lm binary}
OUT=${2:?output directory}
STEPS=${STEPS:-250}
MODELS=${MODELS:-ssm-1m attn-1m ska-1m}
mkdir -p "$OUT/data"
if [ ! -f "$OUT/data/val.bin" ]; then
# The corpus and split of scripts/text_demo.sh.
find /usr/share/games/fortunes -maxdepth 1 -type f ! -name '*.dat' ! -name '*.u8' | LC_ALL=C sort |
  xargs cat > "$OUT/data/corpus.txt"
total=$(stat -c %s "$OUT/data/corpus.txt")
n_val=$((total / 20))
head -c $((total - n_val)) "$OUT/data/corpus.txt" > "$OUT/data/train.txt"
tail -c "$n_val" "$OUT/data/corpus.txt" > "$OUT/data/val.txt"
"$ECHO" data tokenize --bytes "$OUT/data/train.txt" --out "$OUT/data/train.bin"
"$ECHO" data tokenize --bytes "$OUT/data/val.txt" --out "$OUT/data/val.bin"
"$ECHO" data unigram --train "$OUT/data/train.bin" --eval "$OUT/data/val.bin" > "$OUT/unigram.txt"
fi
for model in $MODELS; do
  start=$(date +%s)
  OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 nice -n 10 "$ECHO" train --model "$model" --set vocab_size=256 \
    --data "$OUT/data/train.bin" --val-data "$OUT/data/val.bin" --seq-len 256 --batch 16 --steps "$STEPS" \
    --lr 3e-3 --warmup $((STEPS / 10)) --eval-every $((STEPS / 4)) --eval-examples 64 --log-every 25 --seed 1 \
    --threads 1 --out "$OUT/$model" > "$OUT/$model.log" 2>&1
  end=$(date +%s)
  echo "{\"model\": \"$model\", \"train_wall_s\": $((end - start))}" > "$OUT/$model.wall.json"
  OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 nice -n 10 "$ECHO" eval --checkpoint "$OUT/$model/latest.h5" \
    --data "$OUT/data/val.bin" --seq-len 256 --json > "$OUT/$model.eval.json"
  OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 "$ECHO" generate --checkpoint "$OUT/$model/latest.h5" \
    --prompt "The meaning of life is" --max-new-tokens 200 --temperature 0.8 --top-k 40 --seed 1 \
    > "$OUT/$model.sample.txt" 2> "$OUT/$model.sample.err"
done
echo finished > "$OUT/DONE.${MODELS// /_}"

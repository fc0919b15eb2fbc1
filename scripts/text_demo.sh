#!/usr/bin/env bash
# Language modelling on real English text, on the CPU, in a few minutes: install
# the fortune-cookie files of Debian's `fortunes` package (about 2.5 MB of quotes,
# jokes and poems), tokenize them at byte level (vocab 256), hold out the last 5%
# for validation, train a small Mamba-2 + SKA hybrid, and report validation bits
# per byte next to a unigram (byte-frequency) model of the same text, then sample
# from a prompt.
#
#   bash scripts/text_demo.sh [RUN_DIR]        (default runs/text_demo)
#
# Environment overrides: MODEL (ska-1m), STEPS (300), BATCH (16), SEQ (256),
# THREADS (all cores), PROMPT.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${1:-runs/text_demo}
: "${MODEL:=ska-1m}" "${STEPS:=300}" "${BATCH:=16}" "${SEQ:=256}" "${THREADS:=0}"
: "${PROMPT:=The meaning of life is}"

bash scripts/setup.sh fortunes

BUILD=build-demo-cpu
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DECHO_TESTS=OFF -DECHO_CUDA=OFF >/dev/null
echo "== building echo-lm in $BUILD"
cmake --build "$BUILD" -j"$(nproc)" --target echo-lm
ECHO="$BUILD/echo-lm"

DATA="$RUN_DIR/data"
rm -rf "$RUN_DIR"
mkdir -p "$DATA"
echo "== corpus: the fortune files of /usr/share/games/fortunes"
# The text files only (not the .dat indexes or the .u8 links), in a fixed order.
find /usr/share/games/fortunes -maxdepth 1 -type f ! -name '*.dat' ! -name '*.u8' | LC_ALL=C sort |
  xargs cat > "$DATA/corpus.txt"
total=$(stat -c %s "$DATA/corpus.txt")
n_val=$((total / 20))
head -c $((total - n_val)) "$DATA/corpus.txt" > "$DATA/train.txt"
tail -c "$n_val" "$DATA/corpus.txt" > "$DATA/val.txt"
echo "$total bytes: $((total - n_val)) for training, the last $n_val for validation"
"$ECHO" data tokenize --bytes "$DATA/train.txt" --out "$DATA/train.bin"
"$ECHO" data tokenize --bytes "$DATA/val.txt" --out "$DATA/val.bin"

echo "== baseline: a unigram model (byte frequencies of the training part, add-one smoothed)"
baseline=$("$ECHO" data unigram --train "$DATA/train.bin" --eval "$DATA/val.bin")
echo "$baseline"

echo "== training $MODEL (vocab 256) for $STEPS steps of $BATCH x $SEQ bytes into $RUN_DIR"
"$ECHO" train --model "$MODEL" --set vocab_size=256 --data "$DATA/train.bin" --val-data "$DATA/val.bin" \
  --seq-len "$SEQ" --batch "$BATCH" --steps "$STEPS" --lr 3e-3 --warmup $((STEPS / 10)) \
  --eval-every $((STEPS / 4)) --eval-examples 64 --log-every 25 --seed 1 --threads "$THREADS" --out "$RUN_DIR"

echo "== validation on every window of the held-out text"
result=$("$ECHO" eval --checkpoint "$RUN_DIR/latest.h5" --data "$DATA/val.bin" --seq-len "$SEQ" --json)
echo "$result"
model_bpb=$(echo "$result" | sed -n 's/.*"val_bpb":\([0-9.]*\).*/\1/p')
unigram_bpb=$(echo "$baseline" | sed -n 's/unigram baseline: \([0-9.]*\) bits.*/\1/p')
echo "== sample (temperature 0.8, top-k 40) from the prompt: $PROMPT"
printf '%s' "$PROMPT"
"$ECHO" generate --checkpoint "$RUN_DIR/latest.h5" --prompt "$PROMPT" --max-new-tokens 300 \
  --temperature 0.8 --top-k 40 --seed 1
echo "== done: checkpoint $RUN_DIR/latest.h5, metrics $RUN_DIR/metrics.jsonl"
awk -v m="$model_bpb" -v u="$unigram_bpb" 'BEGIN {
  printf "validation bits per byte: model %.4f, unigram (byte-frequency) baseline %.4f: %s by %.4f\n",
         m, u, (m < u ? "below the baseline" : "NOT below the baseline"), (u > m ? u - m : m - u) }'

awk -v m="$model_bpb" -v u="$unigram_bpb" 'BEGIN { exit !(m < u) }'

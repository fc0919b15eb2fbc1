#!/usr/bin/env bash
# The main job: set up, build, train an Echo model on associative recall (MQAR),
# evaluate it on held-out examples, and plot the run.
#
#   bash scripts/train_demo.sh [RUN_DIR]        (default runs/demo)
#
# Without a GPU: builds the CPU backend and trains ska-1m (Mamba-2 + SKA, 0.74M
# parameters) on mqar:M=8,gap=64 for 600 steps (a few minutes on 2 cores).
# With a working NVIDIA GPU (nvidia-smi answers): builds with CUDA and trains
# echo-50m (50.6M parameters) on mqar:M=16,gap=256 on the GPU.
# Environment overrides: STEPS, BATCH, TASK, MODEL, DEVICE.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${1:-runs/demo}

bash scripts/setup.sh python3-matplotlib

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  GPU=1
else
  GPU=0
fi

if [ "$GPU" = 1 ]; then
  BUILD=build-demo-cuda
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DECHO_TESTS=OFF >/dev/null
  : "${MODEL:=echo-50m}" "${TASK:=mqar:M=16,gap=256}" "${STEPS:=2000}" "${BATCH:=32}" "${DEVICE:=cuda}"
else
  # The CPU job does not need the CUDA kernels: skip compiling them.
  BUILD=build-demo-cpu
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DECHO_TESTS=OFF -DECHO_CUDA=OFF >/dev/null
  : "${MODEL:=ska-1m}" "${TASK:=mqar:M=8,gap=64}" "${STEPS:=600}" "${BATCH:=32}" "${DEVICE:=cpu}"
fi
echo "== building echo-lm in $BUILD"
cmake --build "$BUILD" -j"$(nproc)" --target echo-lm
ECHO="$BUILD/echo-lm"

echo "== training $MODEL on $TASK ($STEPS steps, batch $BATCH, $DEVICE) into $RUN_DIR"
rm -rf "$RUN_DIR"
"$ECHO" train --model "$MODEL" --task "$TASK" --steps "$STEPS" --batch "$BATCH" --lr 3e-3 \
  --warmup $((STEPS / 10)) --eval-every $((STEPS / 4)) --eval-examples 256 --ckpt-every $((STEPS / 2)) \
  --log-every 25 --device "$DEVICE" --seed 1 --out "$RUN_DIR"

echo "== held-out evaluation (fresh seed)"
"$ECHO" eval --checkpoint "$RUN_DIR/latest.h5" --task "$TASK" --examples 1024 --seed 777 --device "$DEVICE"

echo "== plot"
# The first interpreter that has matplotlib (a pyenv python3 may shadow Debian's).
for py in python3 /usr/bin/python3; do
  if "$py" -c "import matplotlib" 2>/dev/null; then
    "$py" scripts/plot_run.py "$RUN_DIR"
    break
  fi
done
echo "== done: checkpoint $RUN_DIR/latest.h5, metrics $RUN_DIR/metrics.jsonl, plot $RUN_DIR/curves.png"

#!/bin/bash
# Train and evaluate a grid of cells, resumable cell by cell.
#
#   scripts/mqar_grid.sh NAME [--jobs N] [--only REGEX] [--device cpu|cuda] [--list] [--table-only]
#
# NAME names scripts/grids/NAME.sh, a bash file that calls
#   cell ID LABEL "TRAIN ARGS" "EVAL TASK SPECS"
# once per cell, in the order the cells should run (most informative first).
# TRAIN ARGS are `echo-lm train` flags (model, --set overrides, --task, --steps, ...);
# the grid file may set TRAIN_DEFAULTS (flags put before every cell's own) and
# EVAL_EXAMPLES / EVAL_SEED.
#
# A cell's result is results/NAME/cells/ID.json: the held-out `echo-lm eval --json` lines of
# every eval task (fresh seed EVAL_SEED, never the training seed) with the cell's metadata.
# A cell whose result exists is skipped; a cell whose run directory build_runs/NAME/ID holds
# a latest.h5 continues with `echo-lm train --resume` (bit-identical on CPU), so killing the
# grid loses at most --ckpt-every steps per running cell. Cells run with one thread each,
# --jobs at a time; a lock directory per cell keeps two grid processes off the same cell.
# --device runs every cell's training and evaluation there (default: the grid file's
# DEVICE, else cpu); a cell that stops early (--early-stop-accuracy) counts as finished.
# At the end (and with --table-only) scripts/plot_grid.py writes results/NAME/table.csv,
# table.md and the plots.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
ECHO_LM=${ECHO_LM:-$ROOT/build/echo-lm}
PYTHON=${PYTHON:-/usr/bin/python3}

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 1 ] || usage
NAME=$1; shift
JOBS=1; ONLY=""; LIST=0; TABLE_ONLY=0; DEVICE_FLAG=
while [ $# -gt 0 ]; do
  case $1 in
    --jobs) JOBS=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --device) DEVICE_FLAG=$2; shift 2 ;;
    --list) LIST=1; shift ;;
    --table-only) TABLE_ONLY=1; shift ;;
    *) echo "mqar_grid: unknown argument $1" >&2; usage ;;
  esac
done
GRID_FILE=$ROOT/scripts/grids/$NAME.sh
[ -f "$GRID_FILE" ] || { echo "mqar_grid: no grid file $GRID_FILE" >&2; exit 2; }

RESULTS=$ROOT/results/$NAME
RUNS=$ROOT/build_runs/$NAME   # checkpoints: large, not committed (build*/ is git-ignored)
mkdir -p "$RESULTS/cells" "$RESULTS/logs" "$RUNS"

TRAIN_DEFAULTS=""
DEVICE=cpu
EVAL_EXAMPLES=512
EVAL_SEED=9001
IDS=(); LABELS=(); TRAIN_ARGS=(); EVAL_TASKS=()
cell() {
  [ $# -eq 4 ] || { echo "mqar_grid: cell needs ID LABEL TRAIN_ARGS EVAL_TASKS, got: $*" >&2; exit 2; }
  IDS+=("$1"); LABELS+=("$2"); TRAIN_ARGS+=("$3"); EVAL_TASKS+=("$4")
}
# shellcheck source=/dev/null
source "$GRID_FILE"
[ -n "$DEVICE_FLAG" ] && DEVICE=$DEVICE_FLAG
case $DEVICE in cpu|cuda) ;; *) echo "mqar_grid: --device must be cpu or cuda, got $DEVICE" >&2; exit 2 ;; esac

log() { echo "[$(date +%H:%M:%S)] $*"; }

# Is the run in $1 finished? Its metrics end with a summary line at the last scheduled
# step, or one that says the run stopped early.
run_finished() {
  local dir=$1
  [ -f "$dir/metrics.jsonl" ] && [ -f "$dir/config.json" ] || return 1
  "$PYTHON" - "$dir" <<'EOF'
import json, sys
d = sys.argv[1]
steps = json.load(open(d + "/config.json"))["train"]["steps"]
summaries = [json.loads(l) for l in open(d + "/metrics.jsonl") if l.strip() and '"summary"' in l]
done = bool(summaries) and (summaries[-1]["step"] == steps or summaries[-1].get("stopped_early", False))
sys.exit(0 if done else 1)
EOF
}

run_cell() {
  local i=$1
  local id=${IDS[$i]} label=${LABELS[$i]}
  local dir=$RUNS/$id result=$RESULTS/cells/$id.json logf=$RESULTS/logs/$id.log
  local lock=$RUNS/$id.lock
  if ! mkdir "$lock" 2>/dev/null; then
    local owner; owner=$(cat "$lock/pid" 2>/dev/null)
    if [ -n "$owner" ] && kill -0 "$owner" 2>/dev/null; then log "$id: running elsewhere (pid $owner)"; return 0; fi
    log "$id: stale lock, taking it over"
  fi
  echo $BASHPID > "$lock/pid"
  # Another grid process may have finished the cell while this one waited for a job slot.
  if [ -f "$result" ]; then log "$id: done elsewhere"; rm -rf "$lock"; return 0; fi
  local t0; t0=$(date +%s)
  # shellcheck disable=SC2086
  local train_cmd="$ECHO_LM train $TRAIN_DEFAULTS ${TRAIN_ARGS[$i]} --device $DEVICE --threads 1 --quiet --ckpt-every 50 --keep-last 1 --out $dir"
  if run_finished "$dir"; then
    log "$id: training already finished"
  elif [ -f "$dir/latest.h5" ]; then
    log "$id: resuming training"
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 $ECHO_LM train --resume --threads 1 --quiet --out "$dir" >>"$logf" 2>&1
  else
    log "$id: training: $train_cmd"
    rm -rf "$dir"
    echo "$train_cmd" >"$logf"
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 $train_cmd >>"$logf" 2>&1
  fi
  if ! run_finished "$dir"; then
    log "$id: training did not finish (see $logf)"; rm -rf "$lock"; return 1
  fi
  local evals=()
  # shellcheck disable=SC2206
  local tasks=(${EVAL_TASKS[$i]})
  local eval_out=$RESULTS/cells/.$id.eval
  : >"$eval_out"
  local spec
  for spec in "${tasks[@]}"; do
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 $ECHO_LM eval --checkpoint "$dir/latest.h5" --task "$spec" \
      --examples "$EVAL_EXAMPLES" --seed "$EVAL_SEED" --device "$DEVICE" --json >>"$eval_out" 2>>"$logf" \
      || { log "$id: eval of $spec failed (see $logf)"; rm -rf "$lock"; return 1; }
  done
  local t1; t1=$(date +%s)
  # The result file appears atomically, complete or not at all.
  "$PYTHON" - "$dir" "$eval_out" "$result.tmp" "$id" "$label" "$train_cmd" "$EVAL_SEED" "$((t1 - t0))" <<'EOF'
import json, sys
d, ev, out, cid, label, cmd, seed, wall = sys.argv[1:]
cfg = json.load(open(d + "/config.json"))
metrics = [json.loads(l) for l in open(d + "/metrics.jsonl") if l.strip()]
summary = [m for m in metrics if m.get("summary")]
# A resumed run has one summary line per segment; the last one ends the run.
stop = summary[-1]
json.dump({"id": cid, "label": label, "train_command": cmd, "train_tasks": cfg["train"].get("tasks"),
           "steps": cfg["train"]["steps"], "train_seed": cfg["train"].get("seed"), "eval_seed": int(seed),
           "train_seconds": sum(m["seconds"] for m in summary),
           "wall_seconds_this_session": int(wall),
           "final_loss": summary[-1]["final_loss"], "model": cfg["model"],
           "device": cfg["train"].get("device", "cpu"),
           "final_step": stop["step"], "stopped_early": bool(stop.get("stopped_early", False)),
           "stop_reason": stop.get("stop_reason", "scheduled steps done"),
           # the trainer's periodic held-out evals (its own eval seed): the learning curve
           "curve": [{"step": m["step"], "accuracy": m["accuracy"]} for m in metrics if m.get("eval")],
           "eval": [json.loads(l) for l in open(ev) if l.strip()]},
          open(out, "w"), indent=1)
EOF
  mv "$result.tmp" "$result"
  rm -f "$eval_out"
  rm -rf "$lock"
  log "$id: done in $((t1 - t0)) s"
}

if [ $LIST -eq 1 ]; then
  for i in "${!IDS[@]}"; do
    st="todo"; [ -f "$RESULTS/cells/${IDS[$i]}.json" ] && st="done"
    [ -f "$RUNS/${IDS[$i]}/latest.h5" ] && [ "$st" = todo ] && st="partial"
    printf '%-8s %-28s %-12s %s | %s\n' "$st" "${IDS[$i]}" "${LABELS[$i]}" "${TRAIN_ARGS[$i]}" "${EVAL_TASKS[$i]}"
  done
  exit 0
fi

if [ $TABLE_ONLY -eq 0 ]; then
  [ -x "$ECHO_LM" ] || { echo "mqar_grid: $ECHO_LM not built (make -C build echo-lm)" >&2; exit 2; }
  running=0
  for i in "${!IDS[@]}"; do
    id=${IDS[$i]}
    [ -n "$ONLY" ] && ! [[ $id =~ $ONLY ]] && continue
    [ -f "$RESULTS/cells/$id.json" ] && continue
    while [ "$running" -ge "$JOBS" ]; do wait -n; running=$((running - 1)); done
    run_cell "$i" &
    running=$((running + 1))
  done
  wait
fi
"$PYTHON" "$ROOT/scripts/plot_grid.py" "$RESULTS"

# MQAR per-cell grid at every gap, for a GPU: each model trained on each (M, gap) cell
# to convergence (2000 steps × batch 32, early stop at 0.99 held-out three times),
# then evaluated at its own gap and at 4096. The CPU grid of record (mqar2000) trains at
# gap 64 only; this grid is its long-gap counterpart, ≈ 75 one-thread hours on the CPU.
#   scripts/mqar_grid.sh mqar_longgap --device cuda --jobs 4
TRAIN_DEFAULTS="--steps 2000 --batch 32 --lr 3e-3 --warmup 30 --eval-every 100 --eval-examples 256 --early-stop-accuracy 0.99 --early-stop-evals 3 --seed 1"
DEVICE=cuda
EVAL_EXAMPLES=512
EVAL_SEED=9001
MODELS=("ssm:--model ssm-1m"
        "attn:--model attn-1m"
        "ska-chunk:--model ska-1m"
        "ska-prefix:--model ska-1m --set ska.mode=prefix"
        "ska-power1:--model ska-1m --set ska.filter=power --set ska.power_steps=1")
for gap in 256 1024 4096; do
  for M in 4 8 16; do
    evals="mqar:M=$M,gap=$gap"
    [ "$gap" != 4096 ] && evals="$evals mqar:M=$M,gap=4096"
    for m in "${MODELS[@]}"; do
      label=${m%%:*}; args=${m#*:}
      cell "$label-M$M-g$gap" "$label" "$args --task mqar:M=$M,gap=$gap" "$evals"
    done
  done
done

# MQAR pilot grid at a 300-step budget: four models × M ∈ {4, 8, 16} × gap ∈ {64, 256, 1024}.
# One fixed budget per cell: 300 steps × batch 32, lr 3e-3 (cosine to 10%), warmup 30,
# seed 1. Cells trained at gap 64 are also evaluated at gaps 256 and 1024 (length
# generalisation of the same checkpoint). Order: most informative first.
TRAIN_DEFAULTS="--steps 300 --batch 32 --lr 3e-3 --warmup 30 --seed 1 --eval-every 0 --eval-examples 128"
EVAL_EXAMPLES=512
EVAL_SEED=9001
MODELS=("ssm:--model ssm-1m" "attn:--model attn-1m" "ska-chunk:--model ska-1m" "ska-prefix:--model ska-1m --set ska.mode=prefix")
for cellspec in 4,64 8,64 4,256 8,256 16,64 16,256 4,1024 8,1024 16,1024; do
  M=${cellspec%,*}; gap=${cellspec#*,}
  evals="mqar:M=$M,gap=$gap"
  [ "$gap" = 64 ] && evals="$evals mqar:M=$M,gap=256 mqar:M=$M,gap=1024"
  for m in "${MODELS[@]}"; do
    label=${m%%:*}; args=${m#*:}
    cell "$label-M$M-g$gap" "$label" "$args --task mqar:M=$M,gap=$gap" "$evals"
  done
done

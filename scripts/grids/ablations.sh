# SKA ablations on MQAR M=4, gap=64, the budget of the MQAR grid.
# Base: ska-1m = chunk mode, poly filter, K=2, chunk 64, no write gate (the mqar grid's
# ska-chunk-M4-g64 cell). Power-step / filter cells run with two seeds.
TRAIN_DEFAULTS="--steps 300 --batch 32 --lr 3e-3 --warmup 30 --eval-every 0 --eval-examples 128"
EVAL_EXAMPLES=512
EVAL_SEED=9001
T="mqar:M=4,gap=64"
for seed in 1 2; do
  for K in 0 1 2; do
    cell "power-K$K-s$seed" "power-K$K" "--model ska-1m --set ska.filter=power --set ska.power_steps=$K --task $T --seed $seed" "$T"
  done
  for K in 1 2; do
    cell "poly-K$K-s$seed" "poly-K$K" "--model ska-1m --set ska.filter=poly --set ska.power_steps=$K --task $T --seed $seed" "$T"
  done
done
cell "prefix-s1" "prefix" "--model ska-1m --set ska.mode=prefix --task $T --seed 1" "$T"
cell "writegate-s1" "write-gate" "--model ska-1m --set ska.write_gate=true --task $T --seed 1" "$T"
for S in 32 128; do
  cell "chunk$S-s1" "chunk-$S" "--model ska-1m --set ska.chunk_size=$S --task $T --seed 1" "$T"
done
# The paper's original layout: values revealed in the query block (chance_informed = H_M/M).
R="mqar:M=4,gap=64,reveal=1"
cell "reveal-ska-chunk" "ska-chunk" "--model ska-1m --task $R --seed 1" "$R $T"
cell "reveal-ska-prefix" "ska-prefix" "--model ska-1m --set ska.mode=prefix --task $R --seed 1" "$R $T"
cell "reveal-attn" "attn" "--model attn-1m --task $R --seed 1" "$R $T"
cell "reveal-ssm" "ssm" "--model ssm-1m --task $R --seed 1" "$R $T"

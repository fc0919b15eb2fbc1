# Step budget of the MQAR grid: learning curves on the easy cell (M=4, gap=64), 2000 steps
# × batch 32, held-out eval every 100 steps. The 300-step pilot (grid mqar300) left the
# attention baseline below the informed guess; the grid's budget is the step count at which
# attention converges here.
TRAIN_DEFAULTS="--steps 2000 --batch 32 --lr 3e-3 --warmup 30 --seed 1 --eval-every 100 --eval-examples 256"
EVAL_EXAMPLES=512
EVAL_SEED=9001
T="mqar:M=4,gap=64"
cell "attn" "attn" "--model attn-1m --task $T" "$T"
cell "ska-chunk" "ska-chunk" "--model ska-1m --task $T" "$T"
cell "ssm" "ssm" "--model ssm-1m --task $T" "$T"
cell "ska-prefix" "ska-prefix" "--model ska-1m --set ska.mode=prefix --task $T" "$T"

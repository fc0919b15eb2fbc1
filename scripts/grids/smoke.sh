# A two-cell smoke test of the harness (seconds).
TRAIN_DEFAULTS="--steps 6 --batch 8 --lr 3e-3 --warmup 2 --seed 1 --eval-every 0 --eval-examples 8"
EVAL_EXAMPLES=16
EVAL_SEED=9001
cell "ska-M4-g8" "ska-chunk" "--model ska-1m --task mqar:M=4,gap=8" "mqar:M=4,gap=8 mqar:M=4,gap=32"
cell "ssm-M4-g8" "ssm" "--model ssm-1m --task mqar:M=4,gap=8" "mqar:M=4,gap=8 mqar:M=4,gap=32"
cell "ssm-M8-g8" "ssm" "--model ssm-1m --task mqar:M=8,gap=8" "mqar:M=8,gap=8"

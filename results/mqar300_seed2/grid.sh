# Second seed of the MQAR pilot cells whose outcome the first seed left surprising:
# at M=4, gap=256 (300 steps) ska-1m in prefix mode bound (0.981) while chunk mode stayed at
# the informed guess (0.270). Same budget as mqar300, training seed 2 (data stream and
# initialisation), same held-out eval (seed 9001).
TRAIN_DEFAULTS="--steps 300 --batch 32 --lr 3e-3 --warmup 30 --seed 2 --eval-every 0 --eval-examples 128"
EVAL_EXAMPLES=512
EVAL_SEED=9001
T="mqar:M=4,gap=256"
cell "ska-chunk-M4-g256-s2" "ska-chunk" "--model ska-1m --task $T" "$T"
cell "ska-prefix-M4-g256-s2" "ska-prefix" "--model ska-1m --set ska.mode=prefix --task $T" "$T"

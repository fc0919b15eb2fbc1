# NIAH length generalisation: train at T=64, evaluate at T=64…1024.
TRAIN_DEFAULTS="--steps 300 --batch 32 --lr 3e-3 --warmup 30 --seed 1 --eval-every 0 --eval-examples 128"
EVAL_EXAMPLES=512
EVAL_SEED=9001
evals=""; for T in 64 128 256 512 1024; do evals="$evals niah:T=$T,needles=1"; done
cell "ssm" "ssm" "--model ssm-1m --task niah:T=64,needles=1" "$evals"
cell "attn" "attn" "--model attn-1m --task niah:T=64,needles=1" "$evals"
cell "ska-chunk" "ska-chunk" "--model ska-1m --task niah:T=64,needles=1" "$evals"
cell "ska-prefix" "ska-prefix" "--model ska-1m --set ska.mode=prefix --task niah:T=64,needles=1" "$evals"

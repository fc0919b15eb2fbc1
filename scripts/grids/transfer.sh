# Transfer table (the paper's Table 3 protocol): one model per family
# trained on a mixture of the six tasks (round-robin in every batch), evaluated on each.
TRAIN_DEFAULTS="--steps 1000 --batch 36 --lr 3e-3 --warmup 50 --seed 1 --eval-every 0 --eval-examples 64"
EVAL_EXAMPLES=512
EVAL_SEED=9001
TASKS="mqar:M=4,gap=64 niah:T=64,needles=1 tooltrace:calls=8,filler=4 sysprompt:vars=4,gap=64 multihop:hops=2,chains=2 commonword:len=32,words=8"
mix=""; for t in $TASKS; do mix="$mix --task $t"; done
cell "ssm" "ssm" "--model ssm-1m $mix" "$TASKS"
cell "attn" "attn" "--model attn-1m $mix" "$TASKS"
cell "ska-chunk" "ska-chunk" "--model ska-1m $mix" "$TASKS"
cell "ska-prefix" "ska-prefix" "--model ska-1m --set ska.mode=prefix $mix" "$TASKS"

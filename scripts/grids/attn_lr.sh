# Can a learning rate shorten attention's plateau on the easy MQAR cell? (the grid's
# budget must let attention converge, and the 2000-step budget curve at lr 3e-3 showed the
# plateau lasting ~900 steps.) attn-1m on M=4, gap=64, full 600-step cosine schedules at three
# peak learning rates, held-out eval every 100 steps (256 examples), final eval on 512.
TRAIN_DEFAULTS="--steps 600 --batch 32 --warmup 30 --seed 1 --eval-every 100 --eval-examples 256"
EVAL_EXAMPLES=512
EVAL_SEED=9001
T="mqar:M=4,gap=64"
cell "attn-lr1e-2" "attn lr 1e-2" "--model attn-1m --lr 1e-2 --task $T" "$T"
cell "attn-lr3e-3" "attn lr 3e-3" "--model attn-1m --lr 3e-3 --task $T" "$T"
cell "attn-lr1e-3" "attn lr 1e-3" "--model attn-1m --lr 1e-3 --task $T" "$T"

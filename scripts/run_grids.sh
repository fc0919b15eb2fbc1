#!/bin/bash
# The CPU reproduction in priority order, at most two cells at a time; rerun it to
# resume: finished cells are skipped, interrupted ones continue from their checkpoint.
#   nohup scripts/run_grids.sh > results/run_grids.log 2>&1 &
# The full MQAR grid's step budget is to be set from results/budget (the step at which the
# attention baseline converges on M=4, gap=64); mqar300 is the 300-step pilot.
cd "$(dirname "$0")/.."
G=scripts/mqar_grid.sh
$G budget --only '^attn$' &
$G mqar300 --only '^ska-(prefix|chunk)-M4-g64$' &
wait
$G budget --jobs 2
$G mqar300 --jobs 2 --only '-M8-g64$'
$G ablations --jobs 2 --only '^(power|poly)-K.*-s1$'
$G niah --jobs 2
$G ablations --jobs 2
$G transfer --jobs 2

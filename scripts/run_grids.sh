#!/bin/bash
# The whole CPU reproduction in priority order (issue 7), two cells at a time; rerun it to
# resume: finished cells are skipped, interrupted ones continue from their checkpoint.
#   nohup scripts/run_grids.sh > results/run_grids.log 2>&1 &
cd "$(dirname "$0")/.."
G=scripts/mqar_grid.sh
$G mqar --jobs 2 --only '-M[48]-g64$'
$G mqar --jobs 2 --only '-M[48]-g256$'
$G ablations --jobs 2 --only '^(power|poly)-K.*-s1$'
$G niah --jobs 2
$G ablations --jobs 2 --only '^(prefix|writegate|chunk|reveal)'
$G transfer --jobs 2
$G ablations --jobs 2
$G mqar --jobs 2

#!/usr/bin/env bash
# One device call on a bare GPU machine with torch only, in two timed phases:
#   [SLOTS_S=200] [MODES_S=330] bash bench/gpu_modes.sh DATA_DIR CACHE_DIR OUT_DIR
# 1. BENCHMARKS.md "Many jobs per machine: GPU": 1, 2, 4, 8 and 16 500-step `stable` jobs at once
#    on GPU 0 (bench.gpu_slots, one job per slot, no MPS), rows in OUT_DIR/gpu_slots.jsonl.
# 2. Issue 18, how the figures move with the budget (bench.modes --at): `stable` on Stacked MNIST,
#    seeds 0-4, one process each on the GPU, scored at 4000, 8000, 12000 and 16000 steps; and on
#    grid25 and ring8, seeds 0-1, on the CPU with one thread each (as on the 2-core CPU), scored
#    at 8000, 16000, 24000 and 32000 steps (with stable's point defaults of the day it ran, batch
#    64 and EMA 0.99; BENCHMARKS.md says how to repeat it). Every scored budget is a JSON line in
#    OUT_DIR/modes.jsonl as soon as it is measured; the processes are cut off after MODES_S.
# CACHE_DIR holds the MNIST judge (judge-mnist.pt), trained beforehand so that the processes
# don't each train one. Everything else the commands print goes to OUT_DIR/log.txt.
set -uo pipefail
data=$1 cache=$2 out=$3
mkdir -p "$out"
export PYTHONUNBUFFERED=1
exec 2>>"$out/log.txt"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee -a "$out/log.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$out/log.txt"
command -v nvidia-cuda-mps-control >/dev/null && echo "MPS: available (not used)" >>"$out/log.txt"

date +"# slots %T" | tee -a "$out/log.txt"
timeout "${SLOTS_S:-200}" python3 -m bench.gpu_slots --data "$data" --gpu 0 --slots 1,2,4,8,16 \
  --steps 500 --jobs-per-slot 1 --json "$out/gpu_slots.jsonl" >>"$out/log.txt"

date +"# modes %T" | tee -a "$out/log.txt"
modes=(--data "$data" --cache "$cache" --seeds 1)
for seed in 0 1 2 3 4; do
  OMP_NUM_THREADS=1 timeout "${MODES_S:-330}" python3 -m bench.modes "${modes[@]}" \
    --bench stacked-mnist --first-seed "$seed" --at 4000,8000,12000,16000 >>"$out/modes.txt" &
done
for bench in grid25 ring8; do
  for seed in 0 1; do
    OMP_NUM_THREADS=1 timeout "${MODES_S:-330}" python3 -m bench.modes "${modes[@]}" \
      --bench "$bench" --first-seed "$seed" --set device=cpu --at 8000,16000,24000,32000 \
      >>"$out/modes.txt" &
  done
done
wait
grep '^{' "$out/modes.txt" >"$out/modes.jsonl"
grep -v '^{' "$out/modes.txt" >>"$out/log.txt"
rm "$out/modes.txt"
date +"# done %T" | tee -a "$out/log.txt"

#!/usr/bin/env bash
# The GPU rows of BENCHMARKS.md "Many jobs per machine", on a bare GPU machine with torch only:
#   bash bench/gpu_slots.sh DATA_DIR OUT_DIR
# 1, 2, 4, 8 and 16 `stable` jobs at once on GPU 0 (each process with 1/K of its memory), without
# CUDA MPS and then with it where it can be started.
set -uo pipefail
data=$1 out=$2
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -m bench.gpu_slots --data "$data" --gpu 0 --slots 1,2,4,8,16 --steps 500 \
  --jobs-per-slot 2 --json "$out/gpu_slots.jsonl"
if command -v nvidia-cuda-mps-control >/dev/null; then
  python3 -m bench.gpu_slots --data "$data" --gpu 0 --slots 1,2,4,8,16 --steps 500 \
    --jobs-per-slot 2 --mps --json "$out/gpu_slots.jsonl"
else
  echo "no nvidia-cuda-mps-control here: the MPS rows are not measured"
fi

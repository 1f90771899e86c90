#!/usr/bin/env bash
# How far `stable` and its variants get when trained long on one GPU, in one call on a bare GPU
# machine with torch only:
#   [EVERY=2000] bash bench/gpu_quality.sh DATA_DIR JUDGES_DIR OUT_DIR SECONDS [RUN ...]
# A RUN is "name|preset|--set field=value ..."; without any, the list below. Every run is
# `python3 -m gan train` with an evaluation (5000 samples, gan.evaluate) every EVERY steps; all
# runs train at once, one process each, and are cut off after SECONDS. Each evaluation is a JSON
# line in OUT_DIR/quality.jsonl, tagged with its run; the 10x10 grid of each run's best
# checkpoint is OUT_DIR/<run>.png (the device tool brings back 8 files: 7 runs at most).
set -uo pipefail
data=$1 judges=$2 out=$3 seconds=$4 every=${EVERY:-2000}
shift 4
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
runs=("$@")
[ ${#runs[@]} -gt 0 ] || runs=(
  "stable|stable|"
  "ema999|stable|--set ema_decay=0.999"
  "width128|stable|--set width=128"
  "depth1|stable|--set depth=1"
  "conditional|stable-conditional|"
  "batch256|stable|--set batch_size=256"
  "cond-depth1-ema999|stable-conditional|--set depth=1 --set ema_decay=0.999"
)
for run in "${runs[@]}"; do
  IFS='|' read -r name preset sets <<<"$run"
  # shellcheck disable=SC2086  # $sets is a list of options
  (timeout "$seconds" python3 -m gan train --preset "$preset" --steps 100000 --out "/tmp/q/$name" \
    --data-dir "$data" --judges "$judges" --set eval_every="$every" --set eval_samples=5000 \
    --set checkpoint_every="$every" --set keep_checkpoints=1 $sets 2>&1 \
    | grep --line-buffered -o '{"step".*}' \
    | sed -u "s/^{/{\"run\": \"$name\", /" >>"$out/quality.jsonl") &
done
wait
for run in "${runs[@]}"; do
  name=${run%%|*}
  python3 -m gan sample "/tmp/q/$name/best.pt" --n 100 --nrow 10 --out "$out/$name.png" || true
done

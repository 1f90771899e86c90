#!/usr/bin/env bash
# The GPU measurements behind BENCHMARKS.md, in one call on a bare GPU machine with torch only:
#   bash bench/gpu_check.sh DATA_DIR OUT_DIR
# CUDA smoke test of the augmentations, every preset and technique family trained briefly on
# cuda, images/s of classic and stable under each speed option and at batches up to 4096, and a
# 3000-step stable run.
set -uo pipefail
data=$1 out=$2
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
python3 -m pytest -q --noconftest -p no:cacheprovider tests/gan/test_augment.py -k cuda 2>&1 | tail -1
for preset in classic dcgan wgan-gp sngan-hinge stable stable-conditional; do
  python3 -m gan train --preset "$preset" --steps 30 --out "$out/smoke-$preset" --data-dir "$data" \
    --set device=cuda --set log_every=10 2>/dev/null | tail -1
done
python3 -m gan train --preset stable --steps 30 --out "$out/smoke-stacked" --data-dir "$data" \
  --set device=cuda --set dataset=stacked-mnist --set log_every=10 2>/dev/null | tail -1
python3 -m gan train --preset dcgan --steps 30 --out "$out/smoke-acgan" --data-dir "$data" \
  --set device=cuda --set conditional=acgan --set loss=lsgan --set r1_gamma=1 --set r2_gamma=1 \
  --set augment=translation,cutout --set instance_noise=0.1 --set spectral_norm=both 2>/dev/null | tail -1
python3 -m bench.throughput --data "$data" --presets classic \
  --variants fp32 bf16 compile cudagraphs bf16+cudagraphs --steps 600 --report 100 \
  --json "$out/throughput-classic.json" 2>"$out/throughput.err" | tail -8
python3 -m bench.throughput --data "$data" --presets stable --variants fp32 bf16 \
  --steps 600 --report 100 --json "$out/throughput-stable.json" 2>>"$out/throughput.err" | tail -4
for batch in 256 1024 4096; do  # the batch-size curve
  timeout 45 python3 -m bench.throughput --data "$data" --presets stable classic \
    --variants fp32 bf16 --steps 200 --report 50 --batch "$batch" 2>/dev/null | grep '^{'
done
python3 -m gan train --preset stable --steps 3000 --out "$out/run-stable" --data-dir "$data" \
  --set device=cuda --set keep_checkpoints=1 2>/dev/null | tail -1
python3 -m gan sample "$out/run-stable/step-00003000.pt" --n 100 --nrow 10 --out "$out/stable-gpu.png"
rm -rf "$out"/smoke-* "$out"/run-stable/datasets

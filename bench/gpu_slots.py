"""Many jobs on one GPU with torch alone (no service): K processes at once, each bound as a
`gan worker --gpus G --jobs-per-gpu K` slot is (CUDA_VISIBLE_DEVICES, 1/K of the GPU's memory,
cores/K CPU threads), each training ``--jobs-per-slot`` jobs in a row.

    python3 -m bench.gpu_slots --data DATA --gpu 0 --slots 1,2,4,8,16 --steps 500 [--mps]
    python3 -m bench.gpu_slots --data ../shared/data/mnist --device cpu --slots 1,2 --steps 50

For each K: ``jobs_per_hour`` (all jobs / the span from the first job's start to the last one's
end), ``images_per_s`` (real images through D of all jobs / that span) and ``job_s`` (the mean
of one job's own time: its slowdown among K, to the same steps and so the same quality). The
service's own measurement is ``bench.slots``; this one runs on a GPU box with torch only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def child(args: argparse.Namespace) -> None:
    """One slot: its limits, then its jobs; prints a JSON line of their times."""
    import torch

    from gan.config import resolve
    from gan.data import load_dataset
    from gan.train import train

    torch.set_num_threads(args.threads)
    if args.device == "cuda":
        torch.cuda.set_per_process_memory_fraction(args.memory_fraction, 0)
    cfg = resolve(args.preset, max_steps=args.steps, eval_every=0, log_every=args.steps,
                  checkpoint_every=args.steps, device=args.device)  # fmt: skip
    dataset = load_dataset(cfg.dataset, args.data, download=False)
    spans = []
    for _ in range(args.jobs_per_slot):
        started = time.time()
        train(cfg, dataset, Path(tempfile.mkdtemp(prefix="gpu-slots-")))
        spans.append((started, time.time()))
    images = args.jobs_per_slot * args.steps * cfg.batch_size * cfg.d_steps
    print(json.dumps({"spans": spans, "images": images}), flush=True)


def measure(args: argparse.Namespace, slots: int) -> dict[str, Any]:
    """K child processes at once, each with its share."""
    cores = len(os.sched_getaffinity(0))
    threads = max(1, cores // slots)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    if args.device == "cuda":
        env["CUDA_VISIBLE_DEVICES"] = args.gpu
    command = [sys.executable, "-m", "bench.gpu_slots", "--child", "--data", str(args.data),
               "--device", args.device, "--preset", args.preset, "--steps", str(args.steps),
               "--jobs-per-slot", str(args.jobs_per_slot), "--threads", str(threads),
               "--memory-fraction", f"{1 / slots:.6f}"]  # fmt: skip
    children = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
                for _ in range(slots)]  # fmt: skip
    results = []
    for process in children:
        out, _ = process.communicate()
        if process.returncode:
            return {"slots": slots, "failed": f"a slot exited with {process.returncode}"}
        results.append(json.loads(out.strip().splitlines()[-1]))
    spans = [span for r in results for span in r["spans"]]
    span = max(end for _, end in spans) - min(start for start, _ in spans)
    return {
        "slots": slots,
        "jobs": len(spans),
        "span_s": round(span, 1),
        "jobs_per_hour": round(len(spans) / span * 3600, 1),
        "images_per_s": round(sum(r["images"] for r in results) / span, 1),
        "job_s": round(statistics.mean(end - start for start, end in spans), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--gpu", default="0")
    parser.add_argument("--slots", default="1,2,4,8,16")
    parser.add_argument("--preset", default="stable")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--jobs-per-slot", type=int, default=2)
    parser.add_argument("--mps", action="store_true", help="run with CUDA MPS")
    parser.add_argument("--json", type=Path, help="append the rows here, one JSON line each")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--memory-fraction", type=float, default=1.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.mps:
        subprocess.run(["nvidia-cuda-mps-control", "-d"], check=True)
    try:
        for slots in (int(k) for k in args.slots.split(",")):
            row = {**measure(args, slots), "device": args.device, "mps": args.mps,
                   "preset": args.preset, "steps": args.steps}  # fmt: skip
            print(json.dumps(row), flush=True)
            if args.json:
                with args.json.open("a") as f:
                    f.write(json.dumps(row) + "\n")
    finally:
        if args.mps:
            subprocess.run(["nvidia-cuda-mps-control"], input="quit\n", text=True, check=False)


if __name__ == "__main__":
    main()

"""What it costs a step to be stoppable: the trainer's steps run as ``gan.train.train`` runs them
(``gan.interrupt.StepGuard``) against bare ``gan.steps.train_step`` calls, interleaved in one
process so that both see the same load.

    python -m bench.stop_overhead --data ../shared/data/mnist [--rounds 5]

Two configs: a fast step (``classic``, batch 64), which the guard runs bare (it only times it),
and a slow one (``dcgan`` width 64, batch 1024: seconds here), which it runs interruptibly:
hooks at every layer asking a ``should_stop`` that never says stop (as a worker's flags, when nobody
cancels) and a copy of the state at each step's start. Each round times a block of steps each way;
prints the median seconds per step each way and their ratio. One torch thread.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from gan.config import TrainConfig, resolve
from gan.data import Dataset, load_dataset
from gan.interrupt import SLOW_STEP_S, StepGuard
from gan.state import TrainState
from gan.steps import StepStats, train_step
from gan.train import RealBatches

CONFIGS = {  # name: (preset, overrides, steps per block)
    "fast: classic, batch 64": ("classic", {"batch_size": 64}, 100),
    "slow: dcgan width 64, batch 1024": ("dcgan", {"batch_size": 1024, "width": 64}, 2),
}


def per_step(
    cfg: TrainConfig, dataset: Dataset, steps: int, rounds: int
) -> tuple[dict[str, list[float]], float]:
    """Seconds per step of each way, per round; and how long the guard's last step took."""
    s = TrainState.new(cfg, dataset.shape, 0, torch.device("cpu"))
    real_batch = RealBatches(cfg, dataset, s)
    stats = train_step(cfg, s, real_batch, StepStats())
    guard = StepGuard(cfg, s, lambda: False)  # a worker's flags, never set
    ways: dict[str, list[float]] = {"bare": [], "as train runs it": []}
    for _ in range(rounds):
        for way, times in ways.items():
            start = time.perf_counter()
            for _ in range(steps):
                if way == "bare":
                    stats = train_step(cfg, s, real_batch, stats)
                else:
                    stats = guard.run(train_step, cfg, s, real_batch, stats)
            times.append((time.perf_counter() - start) / steps)
    return ways, guard.last_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the folder of MNIST")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = load_dataset("mnist", args.data)
    for name, (preset, overrides, steps) in CONFIGS.items():
        cfg = resolve(preset, **overrides, eval_every=0)
        ways, last_s = per_step(cfg, dataset, steps, args.rounds)
        bare_s, guarded_s = (statistics.median(times) for times in ways.values())
        how = "interruptibly" if last_s >= SLOW_STEP_S else "bare"
        rounds = {way: [round(t, 4) for t in times] for way, times in ways.items()}
        print(f"{name} (the guard ran it {how}): bare {bare_s:.4f} s/step, as train runs it "
              f"{guarded_s:.4f} s/step, ratio {guarded_s / bare_s:.3f}; rounds {rounds}",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

"""What it costs a step to be stoppable: steps/s of ``gan.train.train`` with a ``should_stop``
that never says stop (as a worker's flags, when nobody cancels), here against another checkout.

    python bench/stop_overhead.py --other ../main --data ../shared/data/mnist [--rounds 3]

Each round trains each config once in this checkout and once in ``--other`` (fresh processes,
alternating, so that both see the same load), and prints the steps/s of each and their ratio:
the median over the rounds. Two configs: a fast step (``classic``, batch 64: runs bare) and a
slow one (``dcgan`` at batch 512: runs interruptibly, with a copy of the state per step, once
a step takes ``gan.interrupt.SLOW_STEP_S`` or more). The first step is left out of the timing;
one CPU thread each (thread pools of concurrent processes spin against each other).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CONFIGS = {
    "fast: classic, batch 64": ("classic", {"batch_size": 64}, 300),
    "slow: dcgan width 32, batch 512": ("dcgan", {"batch_size": 512, "width": 32}, 6),
}

ONE_RUN = """
import json, sys, tempfile, time
from pathlib import Path
from gan.config import resolve
from gan.data import load_dataset
from gan.train import train
preset, overrides, steps, data = json.loads(sys.argv[1])
dataset = load_dataset("mnist", Path(data))
cfg = resolve(preset, **overrides, max_steps=steps + 1, eval_every=0, log_every=1,
              checkpoint_every=10**6)
times = []
with tempfile.TemporaryDirectory() as out:
    train(cfg, dataset, Path(out), should_stop=lambda: False,
          progress=lambda p: times.append(time.perf_counter()))
print(json.dumps(steps / (times[-1] - times[0])))
"""


def steps_per_s(checkout: Path, config: tuple[str, dict[str, int], int], data: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(checkout.resolve()), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", ONE_RUN, json.dumps([*config, data])],
        env=env, check=True, capture_output=True, text=True, cwd=checkout,
    )  # fmt: skip
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--other", type=Path, required=True, help="the checkout to compare with")
    parser.add_argument("--data", required=True, help="the folder of MNIST")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    here = Path(__file__).resolve().parent.parent
    for name, config in CONFIGS.items():
        mine, theirs = [], []
        for _ in range(args.rounds):
            theirs.append(steps_per_s(args.other, config, args.data))
            mine.append(steps_per_s(here, config, args.data))
        a, b = statistics.median(mine), statistics.median(theirs)
        print(f"{name}: here {a:.2f} steps/s, {args.other} {b:.2f} steps/s, ratio {a / b:.3f} "
              f"(rounds: here {[round(x, 2) for x in mine]}, "
              f"other {[round(x, 2) for x in theirs]})", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

"""Write docker-compose.yml with one worker service per GPU: `worker` on GPU 0 (as the file has
it), `worker-gpu1`, `worker-gpu2`, … each reserving its own GPU by id (`docker compose up
--scale` would give every replica the same one).

    python deploy/gpu_compose.py 4 > docker-compose.gpus.yml
    docker compose -f docker-compose.gpus.yml up -d

or name the GPUs: `python deploy/gpu_compose.py --ids 0,2,3`. Standard library only: it copies
the `worker` service's block of docker-compose.yml, changing its name and its device_ids.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

COMPOSE_FILE = Path(__file__).resolve().parent.parent / "docker-compose.yml"
WORKER = "  worker:\n"
MARKER = "  # (more GPU workers"
GPU_0 = 'device_ids: ["0"]'


def with_gpu_workers(compose: str, gpus: list[str]) -> str:
    """``compose`` (the text of docker-compose.yml) with the worker service on ``gpus[0]`` and
    one copy of it for each further GPU, named worker-gpu<id>."""
    start, end = compose.index(WORKER), compose.index(MARKER)
    block = compose[start:end].rstrip("\n") + "\n"
    if block.count(GPU_0) != 1:
        raise ValueError(f"the worker service of {COMPOSE_FILE.name} must reserve {GPU_0}")
    workers = [
        block.replace(GPU_0, f'device_ids: ["{gpu}"]').replace(
            WORKER, WORKER if i == 0 else f"  worker-gpu{gpu}:\n", 1
        )
        for i, gpu in enumerate(gpus)
    ]
    return compose[:start] + "".join(workers) + compose[end:]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("count", nargs="?", type=int, help="GPUs 0 to COUNT-1")
    which.add_argument("--ids", help="the GPUs' ids, e.g. 0,2,3")
    args = parser.parse_args(argv)
    gpus = args.ids.split(",") if args.ids else [str(i) for i in range(args.count)]
    if not gpus or args.count == 0:
        parser.error("name at least one GPU")
    sys.stdout.write(with_gpu_workers(COMPOSE_FILE.read_text(), gpus))


if __name__ == "__main__":
    main()

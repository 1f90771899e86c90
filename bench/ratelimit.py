"""What a rate-limit check costs: the process's bucket against the Redis one (a Redis of its own,
on this machine), side by side in one run.

    python -m bench.ratelimit --takes 3000

Prints microseconds per take for each, twice, alternating.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from api.ratelimit import LocalRateLimiter, RateLimiter, RedisRateLimiter
from harness.services import RedisServer


def per_take_us(limiter: RateLimiter, takes: int) -> float:
    started = time.perf_counter()
    for i in range(takes):
        limiter.take(f"key-{i % 10}")
    return (time.perf_counter() - started) / takes * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--takes", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        server = RedisServer(Path(folder))
        server.start()
        try:
            limiters: dict[str, RateLimiter] = {
                "process": LocalRateLimiter(10**9),
                "redis": RedisRateLimiter(server.url, "gan:bench:ratelimit:jobs", 10**9),
            }
            for _ in range(2):
                for name, limiter in limiters.items():
                    print(f"{name}: {per_take_us(limiter, args.takes):.1f} µs per take")
        finally:
            server.stop()


if __name__ == "__main__":
    main()

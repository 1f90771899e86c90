"""Mode collapse under the published protocols: ours beside the published tables.

    python -m bench.modes --data ../shared/data/mnist --cache CACHE --bench grid25 ring8 \
        --seeds 5 [--preset stable] [--set pack=2 ...] [--steps N | --at N,N,...] [--json OUT.json]

The protocols, the runs and their reports are ``harness.modes`` (tests/ tests them there; see its
docstring for what each benchmark measures).
"""

from __future__ import annotations

from harness.modes import main, report, score

__all__ = ["main", "report", "score"]

if __name__ == "__main__":
    main()

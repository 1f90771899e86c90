"""What a sweep costs the API, against the same jobs made one request at a time (in-process app,
the real job store, the filesystem broker):

    python -m bench.sweeps [--jobs 64] [--repeats 5] [--postgres postgresql+psycopg://…/test]

- POST /sweeps of a grid of ``--jobs`` points, against ``--jobs`` POST /jobs one after another
  (the same specs): the time to make and queue them all;
- GET /sweeps/{id} of that sweep once every job has a best evaluation (ranked), and GET /sweeps
  listing ``--repeats`` sweeps of that size.

Medians of ``--repeats`` runs, on a fresh SQLite file and, with ``--postgres``, a fresh schema of
that PostgreSQL. On a shared machine take the ratios, measured side by side, over the seconds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from api.main import app
from gan.progress import Progress
from harness.services import postgres_schema
from worker.settings import Settings, get_settings
from worker.store import leases, series
from worker.store.db import session_scope


def median_s(f: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def evaluate_all(url: str, job_ids: list[str]) -> None:
    """Play the worker: claim each job and report a best evaluation for it."""
    for i, job_id in enumerate(job_ids):
        with session_scope(url) as session:
            _, job = leases.claim(session, job_id, "bench", lease_s=600)
            assert job is not None
            best = {"fid": 10.0 + (i * 7919) % 97, "coverage": 9.0}
            report = Progress(
                step=50, total_steps=100, images_per_sec=1.0, d_loss=1.0, g_loss=1.0,
                d_real=0.0, d_fake=0.0, d_grad_norm=1.0, g_grad_norm=1.0, checkpoint_step=50,
                metrics=best, metrics_step=50, best=best, best_step=50, warnings=(),
            )  # fmt: skip
            series.record_progress(job, report)


@contextmanager
def service(url: str, folder: Path) -> Iterator[TestClient]:
    settings = Settings(
        database_url=url,
        broker_url="filesystem://",
        broker_dir=folder / "broker",
        artifacts_dir=folder / "artifacts",
        jobs_per_minute=1_000_000,
        max_sweep_jobs=10_000,
    )
    app.dependency_overrides[get_settings] = lambda: settings
    try:
        with TestClient(app) as client:
            yield client
    finally:
        app.dependency_overrides.clear()


def measure(url: str, folder: Path, jobs: int, repeats: int) -> dict[str, float]:
    grid = {"seed": list(range(jobs))}
    base = {"max_steps": 100, "eval_every": 0}
    with service(url, folder) as client:

        def one_sweep() -> Any:
            response = client.post("/sweeps", json={"base": base, "grid": grid})
            assert response.status_code == 202, response.text
            return response.json()

        def one_by_one() -> None:
            for seed in range(jobs):
                response = client.post("/jobs", json={**base, "seed": seed})
                assert response.status_code == 202, response.text

        sweep_s = median_s(one_sweep, repeats)
        jobs_s = median_s(one_by_one, repeats)
        sweep = one_sweep()
        evaluate_all(url, [entry["job"]["id"] for entry in sweep["jobs"]])
        get_s = median_s(lambda: client.get(f"/sweeps/{sweep['id']}").raise_for_status(), 20)
        list_s = median_s(lambda: client.get("/sweeps").raise_for_status(), 20)
    return {"sweep": sweep_s, "jobs": jobs_s, "get": get_s, "list": list_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--postgres", help="a PostgreSQL URL (a fresh schema is made in it)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stores: list[tuple[str, Callable[[], Any]]] = [
            ("sqlite", lambda: _sqlite(Path(tmp) / "gan.db"))
        ]
        if args.postgres:
            stores.append(("postgresql", lambda: postgres_schema(args.postgres)))
        for name, store in stores:
            with store() as url:
                folder = Path(tmp) / name
                folder.mkdir()
                r = measure(url, folder, args.jobs, args.repeats)
            print(
                f"{name}: POST /sweeps of {args.jobs} jobs {r['sweep'] * 1e3:.0f} ms; "
                f"{args.jobs} POST /jobs {r['jobs'] * 1e3:.0f} ms "
                f"({r['jobs'] / r['sweep']:.1f}x the sweep); GET /sweeps/{{id}} ranked "
                f"{r['get'] * 1e3:.1f} ms; GET /sweeps ({args.repeats + 1} sweeps) "
                f"{r['list'] * 1e3:.1f} ms",
                flush=True,
            )


@contextmanager
def _sqlite(path: Path) -> Iterator[str]:
    yield f"sqlite:///{path}"


if __name__ == "__main__":
    main()

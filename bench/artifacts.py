"""The artifact store: a local folder against a real S3 server (SeaweedFS, started here), side by
side in one run, with raw botocore as the baseline of the S3 layer (fsspec + s3fs).

    nice -n 10 python -m bench.artifacts --reps 7

For each store, ``--reps`` times (medians reported): write a checkpoint of the ``classic``
preset (MNIST size; serialized once, then one atomic write: a PUT on S3, a temporary file and a
rename in a folder), read it back and load it (``torch.load``; on S3 a fresh download each time,
as on a machine that never saw it), then ask the API (in-process, that store) for samples of a
job holding that checkpoint: the first request (listing, download, loading the generator) and
the next ones (the cached generator; another seed each, so the rendered-response cache does not
answer). On S3 the same bytes also go through botocore's put_object/get_object directly: what
fsspec and s3fs cost on top.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gan.checkpoint import BEST_NAME, content_digest
from gan.config import resolve
from gan.state import TrainState
from harness.objectstore import BUCKET, SeaweedFS
from worker.artifacts import ArtifactStore, checkpoints_key


def checkpoint_bytes() -> bytes:
    """A fresh ``classic`` checkpoint of MNIST shape, sealed and serialized."""
    cfg = resolve("classic", dataset="mnist")
    s = TrainState.new(cfg, (1, 28, 28), 0, torch.device("cpu"), None)
    state = {"format": "gan-checkpoint", "format_version": 3, **s.checkpoint(cfg, 0.0, 0.0)}
    state["checksum"] = content_digest(state)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def timed(action: Callable[[], Any], reps: int) -> float:
    """Median milliseconds of ``action()`` over ``reps`` runs."""
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def store_figures(store: ArtifactStore, data: bytes, reps: int) -> dict[str, float]:
    key = f"{checkpoints_key('bench')}/step-00000001.pt"
    write = timed(lambda: store.write_bytes(key, data), reps)

    def read() -> None:
        entry = store.info(key)
        assert entry is not None
        if store.remote:  # a machine that never saw it: download again
            for old in (store.cache_dir / "objects").glob("*"):
                old.unlink()
        torch.load(store.local_copy(entry), weights_only=True)

    return {"write": write, "read + load": timed(read, reps)}


def sample_figures(settings: Any, data: bytes, reps: int) -> dict[str, float]:
    """First and cached GET /jobs/{id}/samples against a job whose best.pt is ``data``."""
    from fastapi.testclient import TestClient

    from api import sampling
    from api.main import app
    from worker.settings import get_settings
    from worker.store import jobs
    from worker.store.db import session_scope

    app.dependency_overrides[get_settings] = lambda: settings
    first: list[float] = []
    cached: list[float] = []
    with TestClient(app) as client:
        for _ in range(reps):
            with session_scope(settings.database_url) as session:
                job_id = jobs.create_job(session, "classic", resolve("classic").to_dict()).id
            store = settings.artifacts()
            store.write_bytes(f"{checkpoints_key(job_id)}/{BEST_NAME}", data)
            sampling._generators.clear()
            sampling._best_steps.clear()
            for seed in range(4):
                started = time.perf_counter()
                response = client.get(f"/jobs/{job_id}/samples?n=64&seed={seed}")
                assert response.status_code == 200, response.text
                (first if seed == 0 else cached).append((time.perf_counter() - started) * 1000)
    app.dependency_overrides.clear()
    return {"samples, first": statistics.median(first),
            "samples, cached": statistics.median(cached)}  # fmt: skip


def botocore_figures(server: SeaweedFS, data: bytes, reps: int) -> dict[str, float]:
    import botocore.session

    client = botocore.session.get_session().create_client(
        "s3", endpoint_url=server.endpoint, aws_access_key_id=server.env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=server.env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1",
    )  # fmt: skip
    key = "raw/step-00000001.pt"
    write = timed(lambda: client.put_object(Bucket=BUCKET, Key=key, Body=data), reps)

    def read() -> None:
        body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        torch.load(io.BytesIO(body), weights_only=True)

    return {"write": write, "read + load": timed(read, reps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from worker.settings import Settings

    data = checkpoint_bytes()
    print(f"checkpoint: {len(data) / 2**20:.1f} MiB; medians of {args.reps} (ms)\n")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        server = SeaweedFS(folder / "seaweedfs")
        server.start()
        try:
            import os

            os.environ.update(server.env)
            rows: dict[str, dict[str, float]] = {}
            for name, url in (("folder", str(folder / "artifacts")),
                              ("s3 (SeaweedFS)", server.url(uuid.uuid4().hex[:8]))):  # fmt: skip
                settings = Settings(
                    artifacts_url=url, cache_dir=folder / f"cache-{len(rows)}",
                    database_url=f"sqlite:///{folder / f'db-{len(rows)}.db'}",
                    broker_url="filesystem://", broker_dir=folder / "broker",
                )  # fmt: skip
                store = settings.artifacts()
                rows[name] = store_figures(store, data, args.reps)
                rows[name] |= sample_figures(settings, data, args.reps)
            rows["s3, raw botocore"] = botocore_figures(server, data, args.reps)
        finally:
            server.stop()
    columns = ["write", "read + load", "samples, first", "samples, cached"]
    print("| store | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for name, figures in rows.items():
        cells = [f"{figures[c]:.1f}" if c in figures else "" for c in columns]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

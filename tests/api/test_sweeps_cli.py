"""A sweep end to end, as a user runs one: `gan sweep` and the Python client against a real
service (`gan serve`: API and one worker), its tiny jobs trained for real and ranked by the
metric their dataset has (ring8: mode_kl, no judge to train). About 30 s: the worker has one
torch thread (OMP_NUM_THREADS=1), else on a loaded 2-core machine its thread pool spins against
the other processes' and the same jobs take minutes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.client import ApiError, Client
from harness.services import Service, wait_for
from tests.api.test_client_cli import gan

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Iterator[Service]:
    """`gan serve` (API and one worker, the embedded defaults) in a folder of its own."""
    env = {"GAN_DATA_DIR": str(mnist_dir), "OMP_NUM_THREADS": "1"}
    running = Service(tmp_path_factory.mktemp("sweeps"), env)
    running.serve()
    yield running
    running.stop()


TINY = ["--set", "dataset=ring8", "--set", "arch=mlp", "--steps", "40", "--set", "batch_size=32",
        "--set", "log_every=20", "--set", "checkpoint_every=20", "--set", "eval_every=20",
        "--set", "eval_samples=200"]  # fmt: skip


def test_a_sweep_trained_by_a_real_worker_is_ranked_by_its_metric(service: Service) -> None:
    submitted = gan(
        service, "sweep", "submit", *TINY, "--grid", "lr_g=1e-3,2e-4,1e-6", "--grid", "seed=0"
    )
    assert submitted.returncode == 0, submitted.stderr
    sweep_id = submitted.stdout.strip()
    assert "3 jobs" in submitted.stderr
    with Client(service.url) as client:

        def finished() -> bool:
            states = client.sweep(sweep_id)["states"]
            assert "failed" not in states, service.logs()
            return states == {"succeeded": 3}

        wait_for(finished, 180, "the sweep's jobs to succeed", every=0.5)
        sweep = client.sweep(sweep_id)
        values = [entry["value"] for entry in sweep["jobs"]]
        assert [entry["rank"] for entry in sweep["jobs"]] == [1, 2, 3]
        assert {entry["metric"] for entry in sweep["jobs"]} == {"mode_kl"}
        assert values == sorted(values)  # type: ignore[type-var]
        for entry in sweep["jobs"]:
            job = client.job(entry["job"]["id"])
            assert job["best_metrics"] is not None
            assert job["best_metrics"]["mode_kl"] == entry["value"]
            assert job["config"]["lr_g"] == entry["point"]["lr_g"]
        best = sweep["jobs"][0]["job"]["id"]
        assert sweep["best"] == {"job_id": best, "metric": "mode_kl", "value": values[0]}
        grid = httpx.get(f"{service.url}/jobs/{best}/samples?n=16", timeout=30)
        assert grid.status_code == 200 and grid.headers["x-checkpoint"] == "best"

        status = gan(service, "sweep", "status", sweep_id)
        assert status.returncode == 0, status.stderr
        lines = status.stdout.splitlines()
        assert "3 succeeded" in lines[0] and lines[1].split()[:3] == ["RANK", "JOB", "STATE"]
        assert lines[2].split()[:3] == ["1", best, "succeeded"] and "mode_kl" in lines[2]
        assert [s["id"] for s in client.sweeps()] == [sweep_id]

        deleted = gan(service, "sweep", "delete", sweep_id)
        assert deleted.returncode == 0 and "deleted" in deleted.stdout
        for entry in sweep["jobs"]:
            with pytest.raises(ApiError) as gone:
                client.job(entry["job"]["id"])
            assert gone.value.status == 404


def test_gan_sweep_names_a_bad_value_by_its_place(service: Service) -> None:
    refused = gan(service, "sweep", "submit", "--grid", "lr_g=1e-4,5")
    assert refused.returncode == 1
    assert "grid.lr_g[1]" in refused.stderr and "less than or equal to 1" in refused.stderr
    cancelled = gan(service, "sweep", "cancel", "no-such-sweep")
    assert cancelled.returncode == 1 and "404" in cancelled.stderr

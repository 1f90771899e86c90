"""`gan worker`'s slots (worker.supervisor, worker.slot): the plan, and real slot processes on
the real Redis and PostgreSQL: two jobs trained at once by one `gan worker --jobs 2`, a slot
SIGKILLed mid-job while the other's job goes on untouched, SIGTERM requeueing both, and a
cancel noticed within a couple of seconds whatever the job's log_every and step time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.services import Service, wait_for
from worker.settings import WORKER_NICE
from worker.supervisor import plan_slots

# Small, fast jobs: the 8-Gaussian ring (no data files to read), no evaluations; many steps, so
# that they are still training when the test acts.
RING = {"dataset": "ring8", "eval_every": 0, "log_every": 10, "checkpoint_every": 50}
# Seconds for what takes a few seconds on an idle machine (a shared one is far slower).
SLOW = 300


def test_cpu_slots_share_the_cores_and_hide_cuda():
    plans = plan_slots(["0", "1"], 4, cpu_jobs=2, cores=16)
    assert [(p.index, p.device) for p in plans] == [(0, "cpu"), (1, "cpu")]
    assert all(p.env["CUDA_VISIBLE_DEVICES"] == "" for p in plans)
    assert all(p.env["GAN_SLOT_THREADS"] == p.env["OMP_NUM_THREADS"] == "8" for p in plans)
    assert plan_slots([], 1, cpu_jobs=3, cores=2)[0].env["GAN_SLOT_THREADS"] == "1"  # at least 1


def test_gpu_slots_are_bound_to_their_gpu_with_a_share_of_its_memory():
    plans = plan_slots(["2", "5"], 4, cpu_jobs=None, cores=32)
    assert [p.device for p in plans] == ["cuda:2"] * 4 + ["cuda:5"] * 4
    assert [p.index for p in plans] == list(range(8))
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in plans] == ["2"] * 4 + ["5"] * 4
    assert {p.env["GAN_SLOT_MEMORY_FRACTION"] for p in plans} == {"0.250000"}
    assert {p.env["GAN_SLOT_THREADS"] for p in plans} == {"4"}  # 32 cores / 8 slots


def test_without_gpus_or_jobs_one_slot_keeps_torchs_defaults():
    [plan] = plan_slots([], 1, cpu_jobs=None, cores=8)
    assert (plan.index, plan.env) == (0, {})  # today's single worker


# A stand-in slot: notes its pid and environment, sleeps, and notes a SIGTERM before exiting.
FAKE_SLOT = """
import json, os, signal, sys, time
from pathlib import Path
folder = Path(sys.argv[1])
me = folder / f"slot{os.environ['GAN_SLOT_INDEX']}-{os.getpid()}"
def stop(*_):
    me.with_suffix(".stopped").touch()
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
mine = {k: v for k, v in os.environ.items() if k.startswith(("GAN_SLOT", "OMP"))}
me.write_text(json.dumps(mine))
while True:
    time.sleep(0.1)
"""
SUPERVISE = """
import sys
from worker.supervisor import Supervisor, plan_slots
command = [sys.executable, "-c", sys.argv[1], sys.argv[2]]
sys.exit(Supervisor(plan_slots([], 1, cpu_jobs=2, cores=4), command).run())
"""


def started(folder: Path, index: int) -> list[int]:
    """The pids of slot ``index``'s processes so far, oldest first."""
    found = sorted(folder.glob(f"slot{index}-*"), key=lambda p: p.stat().st_mtime)
    return [int(p.name.rsplit("-", 1)[1]) for p in found if not p.suffix]


def test_the_supervisor_replaces_a_dead_slot_and_passes_sigterm_on(tmp_path: Path) -> None:
    supervisor = subprocess.Popen([sys.executable, "-c", SUPERVISE, FAKE_SLOT, str(tmp_path)])
    try:
        wait_for(lambda: started(tmp_path, 0) and started(tmp_path, 1), 60, "two slots")
        [first] = started(tmp_path, 0)
        env = json.loads((tmp_path / f"slot0-{first}").read_text())
        assert env["GAN_SLOT_THREADS"] == env["OMP_NUM_THREADS"] == "2"  # 4 cores, 2 slots
        assert env["GAN_SLOT_PARENT"] == str(supervisor.pid)
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: len(started(tmp_path, 0)) == 2, 30, "a new slot 0")
        [second] = started(tmp_path, 0)[1:]
        [other] = started(tmp_path, 1)
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=30) == 0
        for pid, index in ((second, 0), (other, 1)):  # each was told, and stopped
            assert (tmp_path / f"slot{index}-{pid}.stopped").is_file()
    finally:
        supervisor.kill()


def slot_pid(service: Service, job_id: str) -> int:
    """The pid of the slot that holds the job's lease (its `worker`: host/pid)."""
    return int(service.job(job_id)["worker"].rsplit("/", 1)[1])


def nice_of_threads(pid: int) -> list[int]:
    """The nice value of each thread of process ``pid`` (field 19 of /proc/…/stat)."""
    stats = Path(f"/proc/{pid}/task").glob("*/stat")
    return [int(stat.read_text().rsplit(")", 1)[1].split()[16]) for stat in stats]


def running_at_once(service: Service, job_ids: list[str], step: int) -> list[dict[str, Any]]:
    """The jobs, once all of them are running past ``step`` at the same time."""
    jobs = [service.job(job_id) for job_id in job_ids]
    if all(j["state"] == "running" and j["step"] >= step for j in jobs):
        return jobs
    return []


def workers_of(service: Service) -> dict[str, Any]:
    response = httpx.get(f"{service.url}/workers", timeout=10)
    assert response.status_code == 200, response.text
    listing: dict[str, Any] = response.json()
    return listing


@pytest.mark.e2e
def test_two_slots_train_two_jobs_at_once_and_a_killed_one_loses_only_its_job(
    redis_postgres: Service,
) -> None:
    service = redis_postgres
    service.serve("--no-worker")
    supervisor = service.start("worker", "--jobs", "2", env={"GAN_WORKER_NICE": str(WORKER_NICE)})
    a, b = (service.submit({**RING, "max_steps": 600}) for _ in range(2))
    jobs = wait_for(lambda: running_at_once(service, [a, b], 50), SLOW, "both jobs training")
    assert jobs[0]["worker"] != jobs[1]["worker"]  # two slots, one job each

    listing = workers_of(service)
    [worker] = listing["workers"]
    assert worker["name"].endswith(f"/{supervisor.pid}")
    assert [(s["slot"], s["device"], s["threads"]) for s in worker["slots"]] == [
        (0, "cpu", max(1, len(os.sched_getaffinity(0)) // 2)),
        (1, "cpu", max(1, len(os.sched_getaffinity(0)) // 2)),
    ]
    assert {s["job_id"] for s in worker["slots"]} == {a, b}
    assert (listing["slots_total"], listing["slots_busy"]) == (2, 2)

    killed = slot_pid(service, a)
    assert set(nice_of_threads(killed)) == {min(19, os.nice(0) + WORKER_NICE)}  # yields to the API
    os.kill(killed, signal.SIGKILL)  # as the kernel's out-of-memory killer would
    wait_for(lambda: service.job(b)["state"] == "succeeded", SLOW, "the other job to finish")
    wait_for(lambda: service.job(a)["state"] == "succeeded", SLOW, "the killed job to resume")
    untouched, resumed = service.job(b), service.job(a)
    assert untouched["attempts"] == 1 and resumed["attempts"] == 2
    assert f"(pid {killed}) ended with code -9; starting a new one" in service.logs()
    assert supervisor.poll() is None
    slots = wait_for(lambda: workers_of(service)["slots_total"] == 2 and workers_of(service),
                     60, "two live slots again")  # fmt: skip
    assert str(killed) not in {s["id"].rsplit("/", 1)[1] for s in slots["workers"][0]["slots"]}


@pytest.mark.e2e
def test_sigterm_checkpoints_and_requeues_every_running_job(redis_postgres: Service) -> None:
    service = redis_postgres
    service.serve("--no-worker")
    supervisor = service.start("worker", "--jobs", "2", env={"GAN_WORKER_NICE": str(WORKER_NICE)})
    ids = [service.submit({**RING, "max_steps": 100_000}) for _ in range(2)]
    wait_for(lambda: running_at_once(service, ids, 60), SLOW, "both jobs training")
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(timeout=120) == 0
    for job_id in ids:
        job = service.job(job_id)
        assert job["state"] == "queued" and job["worker"] is None
        assert job["checkpoint_step"] == job["step"] > 0  # checkpointed where it stopped
    assert service.logs().count("worker shutting down; checkpointed and requeued") == 2
    assert workers_of(service)["slots_total"] == 0  # each slot removed its heartbeat


@pytest.mark.e2e
def test_a_cancel_is_noticed_within_seconds_whatever_log_every(redis_postgres: Service) -> None:
    """A report every 1000 steps of a fraction of a second each here: the cancel used to wait
    for the next one (minutes); the lease's thread notices it within a second, the trainer at
    the end of the step under way."""
    service = redis_postgres
    service.serve("--no-worker")
    service.start("worker", "--jobs", "1")
    slow = {"preset": "classic", "batch_size": 64, "eval_every": 0, "log_every": 1000,
            "checkpoint_every": 10, "max_steps": 100_000}  # fmt: skip
    job_id = service.submit(slow)
    folder = service.tmp_path / "var/artifacts/jobs" / job_id / "checkpoints"
    # Into its steps: no report says so before step 1000, its checkpoints do.
    wait_for(lambda: list(folder.glob("step-*.pt")), SLOW, "the job's first checkpoint")
    asked = time.monotonic()
    assert httpx.post(f"{service.url}/jobs/{job_id}/cancel", timeout=10).status_code == 200
    wait_for(lambda: service.job(job_id)["state"] == "cancelled", 60, "cancelled", every=0.05)
    took = time.monotonic() - asked
    job = service.job(job_id)
    assert 10 < job["step"] < 1000 and job["checkpoint_step"] == job["step"]
    assert took < 5, f"the cancel took {took:.1f} s"  # ≤ 1 s to notice, a step, a checkpoint


@pytest.mark.e2e
def test_a_cancel_interrupts_a_step_of_seconds(redis_postgres: Service) -> None:
    """Steps of several seconds (width 64, a batch of 2048 on the CPU): the cancel stops the
    step under way (gan.interrupt) instead of waiting for its end; the job is cancelled at the
    step it had checkpointed when the cancel came."""
    service = redis_postgres
    service.serve("--no-worker")
    service.start("worker", "--jobs", "1")
    slow = {"preset": "dcgan", "width": 64, "batch_size": 2048, "eval_every": 0, "device": "cpu",
            "log_every": 1000, "checkpoint_every": 1, "keep_checkpoints": 3,
            "max_steps": 1000}  # fmt: skip
    job_id = service.submit(slow)
    folder = service.tmp_path / "var/artifacts/jobs" / job_id / "checkpoints"
    first, second = folder / "step-00000001.pt", folder / "step-00000002.pt"
    wait_for(second.is_file, 3 * SLOW, "the job's second checkpoint", every=0.05)
    step_s = second.stat().st_mtime - first.stat().st_mtime  # a step (and a checkpoint)
    asked = time.monotonic()  # step 3 has just begun
    assert httpx.post(f"{service.url}/jobs/{job_id}/cancel", timeout=10).status_code == 200
    wait_for(lambda: service.job(job_id)["state"] == "cancelled", SLOW, "cancelled", every=0.05)
    took = time.monotonic() - asked
    job = service.job(job_id)
    print(f"step {step_s:.1f} s; cancelled {took:.1f} s after the request")
    assert job["step"] == job["checkpoint_step"] == 2  # step 3 was interrupted, not finished
    assert took < step_s  # noticed within a second, the step undone, a checkpoint written

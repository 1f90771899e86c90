"""GET /workers: live workers and their slots, from the heartbeats and the leases."""

from worker.store import jobs, leases, workers
from worker.store.db import session_scope
from worker.store.models import utcnow


def add_slot(url: str, pid: int, index: int, device: str, worker: str = "gpu-box/1") -> None:
    info = workers.SlotInfo(
        id=f"gpu-box/{pid}", worker=worker, host="gpu-box", slot=index, device=device, threads=8
    )
    with session_scope(url) as session:
        workers.beat(session, info, utcnow())


def train_on(url: str, slot_id: str, owner: str = "") -> str:
    with session_scope(url) as session:
        job = jobs.create_job(session, "classic", {"max_steps": 10}, owner=owner)
        outcome, _ = leases.claim(session, job.id, slot_id, lease_s=60)
        assert outcome == "claimed"
        return job.id


def test_workers_lists_slots_devices_and_the_callers_jobs(client, settings):
    url = settings.database_url
    assert client.get("/workers").json() == {"workers": [], "slots_total": 0, "slots_busy": 0}
    add_slot(url, 11, 1, "cuda:0")
    add_slot(url, 10, 0, "cuda:0")
    add_slot(url, 12, 2, "cuda:1")
    mine = train_on(url, "gpu-box/10")
    train_on(url, "gpu-box/12", owner="another-key")
    response = client.get("/workers")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["slots_total"], body["slots_busy"]) == (3, 2)
    [worker] = body["workers"]
    assert (worker["name"], worker["host"], worker["busy"]) == ("gpu-box/1", "gpu-box", 2)
    slots = [
        (slot["slot"], slot["device"], slot["threads"], slot["busy"], slot["job_id"])
        for slot in worker["slots"]
    ]
    assert slots == [
        (0, "cuda:0", 8, True, mine),
        (1, "cuda:0", 8, False, None),
        (2, "cuda:1", 8, True, None),  # another key's job: busy, but not named
    ]


def test_slot_gauges_in_prometheus(client, settings):
    add_slot(settings.database_url, 10, 0, "cpu")
    add_slot(settings.database_url, 11, 1, "cpu")
    train_on(settings.database_url, "gpu-box/11")
    text = client.get("/metrics").text
    assert "gan_worker_slots 2.0" in text and "gan_worker_slots_busy 1.0" in text

"""worker.store.workers: the slots' heartbeats and who trains what, on SQLite and the real
PostgreSQL."""

from datetime import timedelta

from sqlalchemy import update

from tests.worker.store.helpers import change, claim, new_job
from worker.store import leases, workers
from worker.store.db import session_scope
from worker.store.models import WorkerSlot, utcnow


def slot_info(pid: int, index: int, worker: str = "h/1") -> workers.SlotInfo:
    return workers.SlotInfo(
        id=f"h/{pid}", worker=worker, host="h", slot=index, device="cpu", threads=1
    )


def beat(url, info: workers.SlotInfo) -> None:
    with session_scope(url) as session:
        workers.beat(session, info, utcnow())


def listing(url, live_s=60.0) -> list[tuple[str, str | None]]:
    with session_scope(url) as session:
        rows = workers.live_slots(session, live_s)
        return [(slot.id, job.id if job is not None else None) for slot, job in rows]


def test_live_slots_and_the_jobs_their_leases_hold(database_url):
    for pid, index in ((11, 1), (10, 0)):
        beat(database_url, slot_info(pid, index))
    beat(database_url, slot_info(20, 0, worker="h/2"))
    job_id = new_job(database_url)
    claim(database_url, job_id, worker="h/11")
    assert listing(database_url) == [("h/10", None), ("h/11", job_id), ("h/20", None)]
    with session_scope(database_url) as session:
        assert workers.slot_counts(session, 60.0) == (3, 1)
    change(database_url, job_id, leases.mark_finished)  # its lease ends: the slot is idle
    assert listing(database_url)[1] == ("h/11", None)
    with session_scope(database_url) as session:
        assert workers.slot_counts(session, 60.0) == (3, 0)


def test_a_slot_unseen_for_a_lease_is_gone_and_one_that_stopped_is_removed(database_url):
    for pid in (10, 11, 12):
        beat(database_url, slot_info(pid, pid - 10))
    with session_scope(database_url) as session:
        session.execute(
            update(WorkerSlot)
            .where(WorkerSlot.id == "h/11")
            .values(seen_at=utcnow() - timedelta(seconds=120))
        )
        workers.remove(session, "h/12")
    assert listing(database_url) == [("h/10", None)]
    beat(database_url, slot_info(11, 1))  # heard from again
    assert [slot for slot, _ in listing(database_url)] == ["h/10", "h/11"]


def test_a_beat_forgets_slots_dead_for_a_day(database_url):
    beat(database_url, slot_info(10, 0))
    with session_scope(database_url) as session:
        session.execute(update(WorkerSlot).values(seen_at=utcnow() - timedelta(days=2)))
    beat(database_url, slot_info(11, 0, worker="h/2"))
    with session_scope(database_url) as session:
        assert [slot.id for slot in session.query(WorkerSlot)] == ["h/11"]

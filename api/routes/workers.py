"""/workers: the training capacity, from the slots' heartbeats and the jobs' leases."""

from __future__ import annotations

from itertools import groupby

from fastapi import APIRouter

from api.deps import AUTH_RESPONSES, STORE_RESPONSES, OwnerDep, SessionDep, SettingsDep
from api.schemas import SlotOut, WorkerList, WorkerOut
from worker.store import workers
from worker.store.models import Job, WorkerSlot

router = APIRouter(
    prefix="/workers", tags=["operations"], responses={**AUTH_RESPONSES, **STORE_RESPONSES}
)


@router.get("", response_model=WorkerList)
def list_workers(owner: OwnerDep, session: SessionDep, settings: SettingsDep) -> WorkerList:
    """Every live worker (`gan worker`) with its slots: each slot's device, CPU threads and the
    job it trains (its id only when the job is yours), and the totals."""
    rows = workers.live_slots(session, settings.lease_s)
    listed = [
        worker_out(name, [slot_out(slot, job, owner) for slot, job in group])
        for name, group in groupby(rows, key=lambda row: row[0].worker)
    ]
    return WorkerList(
        workers=listed,
        slots_total=len(rows),
        slots_busy=sum(job is not None for _, job in rows),
    )


def slot_out(slot: WorkerSlot, job: Job | None, owner: str) -> SlotOut:
    return SlotOut(
        id=slot.id,
        slot=slot.slot,
        device=slot.device,
        threads=slot.threads,
        busy=job is not None,
        job_id=job.id if job is not None and job.owner == owner else None,
        seen_at=slot.seen_at,
    )


def worker_out(name: str, slots: list[SlotOut]) -> WorkerOut:
    host = name.rpartition("/")[0]
    return WorkerOut(name=name, host=host, slots=slots, busy=sum(s.busy for s in slots))

"""The training slots' heartbeats (``WorkerSlot``): each slot process of a `gan worker`
writes its row every few seconds (``beat``) and removes it when it stops (``remove``); a slot
unseen for longer than a lease is gone. Who trains what comes from the leases: a slot trains
the job whose ``lease_owner`` is its id."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from worker.store.models import Job, WorkerSlot, utcnow
from worker.store.states import LEASED_STATES

# Rows unseen for this long are deleted by the next beat of any slot (a slot that was killed
# never removes its own): long enough to look into what happened, short enough to stay small.
FORGET_AFTER = timedelta(days=1)


@dataclass(frozen=True)
class SlotInfo:
    """What a slot says of itself in its heartbeat."""

    id: str  # host/pid: the lease_owner of the job it trains
    worker: str  # the `gan worker` it belongs to (host/pid), its own id when alone
    host: str
    slot: int
    device: str
    threads: int


def beat(session: Session, info: SlotInfo, started_at: datetime) -> None:
    """Write (or refresh) the slot's row, and forget long-dead slots."""
    now = utcnow()
    row = session.get(WorkerSlot, info.id)
    if row is None:
        row = WorkerSlot(id=info.id, started_at=started_at)
        session.add(row)
    row.worker, row.host, row.slot = info.worker, info.host, info.slot
    row.device, row.threads, row.seen_at = info.device, info.threads, now
    session.execute(delete(WorkerSlot).where(WorkerSlot.seen_at < now - FORGET_AFTER))


def remove(session: Session, slot_id: str) -> None:
    """The slot stopped: it is no longer capacity."""
    session.execute(delete(WorkerSlot).where(WorkerSlot.id == slot_id))


def live_slots(session: Session, live_s: float) -> list[tuple[WorkerSlot, Job | None]]:
    """Every slot seen in the last ``live_s`` seconds with the job it holds the lease of (None
    when idle), by worker and slot index."""
    since = utcnow() - timedelta(seconds=live_s)
    query = select(WorkerSlot).where(WorkerSlot.seen_at >= since)
    slots = list(session.scalars(query.order_by(WorkerSlot.worker, WorkerSlot.slot)))
    held = select(Job).where(
        Job.state.in_(LEASED_STATES), Job.lease_owner.in_([slot.id for slot in slots])
    )
    training = {job.lease_owner: job for job in session.scalars(held)}
    return [(slot, training.get(slot.id)) for slot in slots]


def slot_counts(session: Session, live_s: float) -> tuple[int, int]:
    """(live slots, those training a job)."""
    since = utcnow() - timedelta(seconds=live_s)
    busy = (
        select(Job.lease_owner)
        .where(Job.state.in_(LEASED_STATES), Job.lease_owner.is_not(None))
        .scalar_subquery()
    )
    total, in_use = session.execute(
        select(
            func.count(),
            func.count().filter(WorkerSlot.id.in_(busy)),
        ).where(WorkerSlot.seen_at >= since)
    ).one()
    return int(total), int(in_use)

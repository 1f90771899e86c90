"""Jobs' webhooks and their deliveries (``models.Webhook``, ``models.WebhookDelivery``).

Deliveries are made from the durable events table (``models.JobEvent``), never from the
training loop: ``enqueue`` reads each webhook's job's events past its ``cursor`` and turns those
it wants into pending deliveries, moving the cursor in the same transaction (only if no other
dispatcher moved it first). ``claim`` takes a due delivery for one attempt by pushing its
``next_attempt_at`` past the attempt's end, so an attempt whose worker dies is tried again once
that passes; ``finish`` records how the attempt went, unless another dispatcher took the
delivery since. So every wanted event is delivered or recorded as failed, once a worker runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from worker.store.events import events_after
from worker.store.models import Job, JobEvent, Webhook, WebhookDelivery, utcnow

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
DELIVERY_STATES = (PENDING, DELIVERED, FAILED)


def add_webhook(
    session: Session, job_id: str, url: str, events: Sequence[str], progress_every_s: float,
    secret: str,
) -> Webhook:  # fmt: skip
    """Send the job's events of these kinds to ``url`` from now on (from its first event)."""
    hook = Webhook(
        job_id=job_id, url=url, events=list(events), progress_every_s=progress_every_s,
        secret=secret, cursor=0, progress_at=None,
    )  # fmt: skip
    session.add(hook)
    return hook


def get_webhook(session: Session, job_id: str) -> Webhook | None:
    return session.get(Webhook, job_id)


def deliveries_of(session: Session, job_id: str, limit: int = 1000) -> list[WebhookDelivery]:
    """The job's newest ``limit`` deliveries, oldest first."""
    query = (
        select(WebhookDelivery)
        .where(WebhookDelivery.job_id == job_id)
        .order_by(WebhookDelivery.id.desc())
        .limit(limit)
    )
    return list(reversed(session.scalars(query).all()))


def behind(session: Session) -> list[str]:
    """The jobs whose webhooks have events past their cursors."""
    newest = (
        select(func.max(JobEvent.id)).where(JobEvent.job_id == Webhook.job_id).scalar_subquery()
    )
    return list(session.scalars(select(Webhook.job_id).where(Webhook.cursor < newest)))


def payload(event: JobEvent) -> dict[str, object]:
    """A delivery's body: the event as the event stream sends it (its ``data`` is the SSE
    event's data), with its id, type, job and time."""
    return {
        "id": event.id,
        "event": event.kind,
        "job_id": event.job_id,
        "created_at": event.created_at.isoformat(),
        "data": event.data,
    }


def enqueue(session: Session, job_id: str, limit: int = 500) -> int:
    """Make the pending deliveries of up to ``limit`` of the job's events past its webhook's
    cursor (the kinds it wants; progress at most every ``progress_every_s`` of the events'
    times), and move the cursor past them. Returns how many were made: 0 when another
    dispatcher moved the cursor meanwhile (the caller commits; nothing was added then)."""
    hook = get_webhook(session, job_id)
    if hook is None:
        return 0
    cursor, progress_at, now = hook.cursor, hook.progress_at, utcnow()
    made = []
    for event in events_after(session, job_id, hook.cursor, limit):
        cursor = event.id
        if event.kind not in hook.events:
            continue
        if event.kind == "progress":
            if progress_at is not None and (
                (event.created_at - progress_at).total_seconds() < hook.progress_every_s
            ):
                continue
            progress_at = event.created_at
        made.append(
            WebhookDelivery(
                job_id=job_id,
                event_id=event.id,
                kind=event.kind,
                payload=payload(event),
                state=PENDING,
                attempts=0,
                status_codes=[],
                next_attempt_at=now,
                created_at=now,
            )
        )
    moved = session.execute(
        update(Webhook)
        .where(Webhook.job_id == job_id, Webhook.cursor == hook.cursor)
        .values(cursor=cursor, progress_at=progress_at)
        .execution_options(synchronize_session=False)
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        return 0
    session.add_all(made)
    return len(made)


def due(session: Session, now: datetime, limit: int = 100) -> list[tuple[int, int]]:
    """(id, attempts) of pending deliveries whose time has come, oldest first."""
    query = (
        select(WebhookDelivery.id, WebhookDelivery.attempts)
        .where(WebhookDelivery.state == PENDING, WebhookDelivery.next_attempt_at <= now)
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
        .limit(limit)
    )
    return [(row[0], row[1]) for row in session.execute(query)]


@dataclass(frozen=True)
class Claimed:
    """A delivery taken for one attempt (its ``attempt``-th), with where it goes."""

    id: int
    attempt: int
    payload: dict[str, object]
    url: str
    secret: str
    owner: str  # the job's API key owner, "" when the service runs without keys


def claim(
    session: Session, delivery_id: int, attempts: int, now: datetime, until: datetime
) -> Claimed | None:
    """Take the delivery for its next attempt, holding it until ``until`` (when it is tried
    again if this attempt never finishes); None when another dispatcher took it first."""
    taken = session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.attempts == attempts,
            WebhookDelivery.state == PENDING,
            WebhookDelivery.next_attempt_at <= now,
        )
        .values(attempts=attempts + 1, next_attempt_at=until)
        .execution_options(synchronize_session=False)
    )
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        return None
    query = (
        select(WebhookDelivery.payload, Webhook.url, Webhook.secret, Job.owner)
        .join(Webhook, Webhook.job_id == WebhookDelivery.job_id)
        .join(Job, Job.id == WebhookDelivery.job_id)
        .where(WebhookDelivery.id == delivery_id)
    )
    row = session.execute(query).one_or_none()
    if row is None:
        return None
    return Claimed(delivery_id, attempts + 1, row[0], row[1], row[2], row[3])


def finish(
    session: Session, claimed: Claimed, status_code: int | None, error: str | None,
    retry_at: datetime | None,
) -> bool:  # fmt: skip
    """Record the attempt ``claimed``: delivered (no ``error``), pending again at ``retry_at``,
    or failed (neither). False when the delivery was taken again since (its hold passed)."""
    delivery = session.get(WebhookDelivery, claimed.id, with_for_update=True)
    if delivery is None or delivery.attempts != claimed.attempt or delivery.state != PENDING:
        return False
    delivery.status_codes = [*delivery.status_codes, status_code]
    delivery.last_error = error
    if error is None:
        delivery.state, delivery.delivered_at, delivery.next_attempt_at = DELIVERED, utcnow(), None
    elif retry_at is not None:
        delivery.next_attempt_at = retry_at
    else:
        delivery.state, delivery.next_attempt_at = FAILED, None
    return True

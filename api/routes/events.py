"""/jobs/{id}/events: a job's progress, state changes and new checkpoints as Server-Sent Events."""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from api.deps import AUTH_RESPONSES, STORE_DOWN, STORE_RESPONSES, ClientKeyDep, JobDep, SettingsDep
from api.errors import STORE_ERRORS, STORE_RETRY_S
from api.eventfeed import feed_for
from api.slots import stream_slots
from worker.store import events, jobs
from worker.store.db import get_engine
from worker.store.models import JobEvent
from worker.store.states import FINAL_STATES

log = logging.getLogger(__name__)
router = APIRouter(prefix="/jobs", tags=["events"], responses={**AUTH_RESPONSES, **STORE_RESPONSES})

MAX_EVENT_ID = 2**63 - 1  # the largest id a database integer holds (SQLite, PostgreSQL bigint)
KEEPALIVE_S = 15.0  # a comment line this often keeps proxies from closing an idle stream


def _sse(event: JobEvent) -> str:
    return f"id: {event.id}\nevent: {event.kind}\ndata: {json.dumps(event.data)}\n\n"


def _read(url: str, job_id: str, after: int) -> tuple[list[JobEvent], str | None]:
    """(events after ``after``, the job's state; None once it is deleted)."""
    with Session(get_engine(url)) as session:
        found = events.events_after(session, job_id, after)
        job = jobs.get_job(session, job_id)
        return found, job.state if job is not None else None


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "text/event-stream. Each event has an id, a type and JSON data: "
            "`state` {state, error}; `progress` {step, total_steps, images_per_sec, "
            "eta_seconds, d_loss, g_loss, checkpoint_step, metrics, metrics_step, best_metrics, "
            "warnings} (the same fields as GET /jobs/{id}); `checkpoint` {step}. The stream "
            "ends after the event that finishes the job.",
            "content": {"text/event-stream": {}},
        },
        404: {"description": "No such job."},
        503: {
            "description": "The API process has its most event streams open; see Retry-After. "
            f"Or: {STORE_DOWN}"
        },
    },
)
async def job_events(
    job: JobDep,
    request: Request,
    settings: SettingsDep,
    client: ClientKeyDep,
    last_event_id: Annotated[
        int | None,
        Header(
            alias="Last-Event-ID",
            ge=0,
            le=MAX_EVENT_ID,
            description="Resume after this event (browsers' EventSource sends it on reconnect).",
        ),
    ] = None,
    after: Annotated[
        int | None,
        Query(
            ge=0,
            le=MAX_EVENT_ID,
            description="Like Last-Event-ID, for clients that cannot set headers.",
        ),
    ] = None,
) -> StreamingResponse:
    """Follow a job live. A new connection gets the job's whole history of events, then new ones
    as they happen; a reconnection with ``Last-Event-ID`` (or ``?after=``) gets only those after
    it. The stream closes once the job has finished (succeeded, failed, cancelled) and its last
    event is sent, or when the job is deleted. While the job store is unreachable the stream
    stays open (a comment line every few seconds says so) and goes on where it was once the
    store is back. An API key has at most ``streams_per_key`` streams open at once (429 past
    that), the API process ``max_streams`` (503)."""
    start = last_event_id if last_event_id is not None else after or 0
    url, job_id = settings.database_url, job.id
    give_back = stream_slots(settings).take(client)

    async def stream() -> AsyncIterator[str]:
        feed, sent, store_down = feed_for(url), start, False
        try:
            yield "retry: 2000\n\n"
            with feed.watching(job_id):
                while True:
                    try:
                        found, state = await anyio.to_thread.run_sync(
                            _read, url, job_id, sent, limiter=feed.readers
                        )
                    except STORE_ERRORS as e:  # not the stream's failure: it waits for the store
                        if not store_down:
                            log.warning("events of %s: the job store is unreachable: %s", job_id, e)
                        store_down = True
                        yield ": the job store is unreachable; retrying\n\n"  # a keepalive too
                        if await request.is_disconnected():
                            return
                        await anyio.sleep(STORE_RETRY_S)
                        continue
                    store_down = False
                    for event in found:
                        yield _sse(event)
                        sent = event.id
                    if state is None or (state in FINAL_STATES and not found):
                        return
                    if found:
                        continue  # there may be more than one read's worth
                    if not await feed.changed(job_id, sent, state, within=KEEPALIVE_S):
                        yield ": keepalive\n\n"
                    if await request.is_disconnected():
                        return
        finally:
            give_back()

    body = stream()
    weakref.finalize(body, give_back)  # also when the stream never starts (the client left)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body, media_type="text/event-stream", headers=headers)

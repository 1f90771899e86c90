"""/sweeps: many jobs from one spec and a grid (or list) over its fields, ranked by quality.

Each job of a sweep is an ordinary job (/jobs/{id}: cancel, resume, samples, delete); the sweep
is created with its jobs in one transaction (all or none), counts as its number of jobs against
the key's ``jobs_per_minute``, and is cancelled or deleted as a whole here."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.deps import (
    AUTH_RESPONSES,
    STORE_DOWN,
    STORE_RESPONSES,
    CeleryDep,
    OwnerDep,
    SessionDep,
    SettingsDep,
    SweepDep,
    charge_jobs,
)
from api.errors import field_error
from api.routes.jobs import (
    IdempotencyKey,
    delete_with_files,
    hash_request,
    job_out,
    queue_or_fail,
    resolve_config,
)
from api.schemas import (
    SweepBestOut,
    SweepIn,
    SweepJobOut,
    SweepList,
    SweepOut,
    SweepSummaryOut,
)
from api.sweepspec import Point, expand, point_specs
from api.webhooks import webhook_secret
from gan.config import ConfigError
from worker.settings import Settings
from worker.store import sweeps, webhooks
from worker.store.models import Job, Sweep

router = APIRouter(
    prefix="/sweeps", tags=["sweeps"], responses={**AUTH_RESPONSES, **STORE_RESPONSES}
)

Responses = dict[int | str, dict[str, Any]]
NOT_FOUND: Responses = {404: {"description": "No such sweep (or it belongs to another API key)."}}
Planned = list[tuple[dict[str, Any], str, dict[str, Any]]]  # (point, preset, resolved config)


def _summary(sweep: Sweep, entries: Sequence[sweeps.Entry], request: Request) -> dict[str, Any]:
    best = entries[0] if entries and entries[0].rank is not None else None
    return {
        "id": sweep.id,
        "created_at": sweep.created_at,
        "spec": sweep.spec,
        "size": len(entries),
        "states": dict(Counter(entry.job.state for entry in entries)),
        "best": SweepBestOut(job_id=best.job.id, metric=best.metric, value=best.value)
        if best is not None and best.metric is not None and best.value is not None
        else None,
        "links": {
            "self": str(request.url_for("get_sweep", sweep_id=sweep.id)),
            "cancel": str(request.url_for("cancel_sweep", sweep_id=sweep.id)),
        },
    }


def sweep_out(sweep: Sweep, members: Sequence[Job], request: Request) -> SweepOut:
    entries = sweeps.ranked(sweep, members)
    jobs = [
        SweepJobOut(
            rank=e.rank, point=e.point, metric=e.metric, value=e.value, job=job_out(e.job, request)
        )
        for e in entries
    ]
    return SweepOut(**_summary(sweep, entries, request), jobs=jobs)


def _members(session: Session, sweep: Sweep) -> list[Job]:
    return sweeps.sweep_jobs(session, [sweep])[sweep.id]


def _request_hash(body: SweepIn) -> str:
    return hash_request(body.model_dump(mode="json", exclude_none=True))


def _replay(
    sweep: Sweep, request_hash: str, session: Session, request: Request, response: Response
) -> SweepOut:
    """The sweep an earlier request with the same Idempotency-Key created."""
    if sweep.request_hash != request_hash:
        raise field_error(
            ["header", "Idempotency-Key"],
            f"this Idempotency-Key was used for another sweep (sweep {sweep.id}); use a new key "
            "for a new sweep",
        )
    response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = str(request.url_for("get_sweep", sweep_id=sweep.id))
    return sweep_out(sweep, _members(session, sweep), request)


def plan(body: SweepIn, settings: Settings, owner: str) -> Planned:
    """(point, preset, resolved config) of each job of the sweep; a 422 naming the place in
    the request of the first problem (a bad value: all of them)."""
    points: list[Point] = expand(body, settings.max_sweep_jobs)
    planned: Planned = []
    for point, spec in zip(points, point_specs(body, points), strict=True):
        try:
            config = resolve_config(spec, settings, owner)
        except ConfigError as e:  # rules between fields: at the field the rule names
            raise field_error(point.loc(e.field), str(e)) from e
        planned.append((point.values, spec.preset, config.to_dict()))  # type: ignore[attr-defined]
    return planned


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=SweepOut,
    responses={
        422: {
            "description": "A bad sweep: no grid nor points, an empty grid, an unknown field, a "
            "value a field does not take, or more jobs than GAN_MAX_SWEEP_JOBS; each error's "
            'loc names its place, e.g. ["body", "grid", "lr_g", 2] for the third lr_g.'
        },
        429: {
            "description": "Its jobs are more than this API key may start now (jobs_per_minute; "
            "a sweep counts as its number of jobs); see Retry-After."
        },
        503: {
            "description": "Some of its jobs could not be queued (broker unreachable): the "
            f"sweep exists, those jobs are recorded as failed, to resume. Or: {STORE_DOWN}"
        },
    },
)
def create_sweep(
    body: SweepIn,
    request: Request,
    response: Response,
    session: SessionDep,
    celery: CeleryDep,
    settings: SettingsDep,
    owner: OwnerDep,
    idempotency_key: IdempotencyKey = None,
) -> SweepOut:
    """Queue one job per point of a grid (every combination of the values given for each
    field) or of a list of points, each the base spec with the point's fields over it. The
    jobs are made together with the sweep, all or none. Answers 202 with the sweep; its jobs
    are ordinary jobs (``job.links``). With an Idempotency-Key, a retry with the same body
    returns the sweep the first request made."""
    request_hash = _request_hash(body)
    if idempotency_key is not None:
        earlier = sweeps.find_idempotent(session, owner, idempotency_key)
        if earlier is not None:
            return _replay(earlier, request_hash, session, request, response)
    planned = plan(body, settings, owner)
    hook = body.base.webhook  # every job of the sweep sends its events there
    secret = (
        webhook_secret(hook, request, settings, owner, ("body", "base", "webhook")) if hook else ""
    )
    charge_jobs(owner, settings, len(planned))
    spec = body.model_dump(mode="json", exclude_none=True)
    try:
        sweep, made = sweeps.create_sweep(
            session,
            spec,
            planned,
            owner=owner,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
        )
        if hook is not None:
            for job in made:
                webhooks.add_webhook(
                    session, job.id, str(hook.url), hook.events, hook.progress_every_s, secret
                )
        session.commit()  # the sweep and every job exist before any task can reach a worker
    except IntegrityError as e:
        session.rollback()
        earlier = sweeps.find_idempotent(session, owner, idempotency_key or "")
        if earlier is None:
            raise RuntimeError("a new sweep failed a constraint other than its key's") from e
        return _replay(earlier, request_hash, session, request, response)
    unqueued = [job.id for job in made if not queue_or_fail(job, celery, settings.task_queue)]
    session.commit()
    if unqueued:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"sweep {sweep.id}: {len(unqueued)} of its {len(made)} jobs could not be queued "
            "(broker unreachable); they are recorded as failed and can be resumed with POST "
            "/jobs/{id}/resume",
        )
    response.headers["Location"] = str(request.url_for("get_sweep", sweep_id=sweep.id))
    return sweep_out(sweep, made, request)


@router.get("", response_model=SweepList)
def list_sweeps(
    request: Request,
    session: SessionDep,
    owner: OwnerDep,
    limit: Annotated[int, Query(ge=1, le=500, description="Most sweeps to return.")] = 100,
) -> SweepList:
    """Your sweeps, newest first, each with how many of its jobs are in each state and its
    best job so far."""
    found = sweeps.list_sweeps(session, owner=owner, limit=limit)
    members = sweeps.sweep_jobs(session, found)
    summaries = [
        SweepSummaryOut(**_summary(s, sweeps.ranked(s, members[s.id]), request)) for s in found
    ]
    return SweepList(sweeps=summaries)


@router.get("/{sweep_id}", response_model=SweepOut, responses=NOT_FOUND)
def get_sweep(sweep: SweepDep, request: Request, session: SessionDep) -> SweepOut:
    """The sweep's jobs ranked by their best quality metric (the lowest fid, kl or mode_kl,
    whichever their dataset has), each with its point, state and full job; jobs without an
    evaluation yet come last, in the order of their points."""
    return sweep_out(sweep, _members(session, sweep), request)


@router.post("/{sweep_id}/cancel", response_model=SweepOut, responses=NOT_FOUND)
def cancel_sweep(sweep: SweepDep, request: Request, session: SessionDep) -> SweepOut:
    """Cancel every job of the sweep that has not finished (as POST /jobs/{id}/cancel: queued
    ones at once, running ones at their next progress report); finished ones stay as they are.
    Cancelled jobs can be resumed one by one."""
    members = _members(session, sweep)
    sweeps.cancel_sweep(members)
    session.commit()
    return sweep_out(sweep, members, request)


@router.delete("/{sweep_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
def delete_sweep(sweep: SweepDep, session: SessionDep, settings: SettingsDep) -> Response:
    """Remove the sweep and every job of it, with their metrics, events and files (running
    jobs' workers stop at their next progress report). An artifact store that cannot be
    reached is a 503 before anything is removed."""
    members = _members(session, sweep)
    ids = [job.id for job in members]
    delete_with_files(settings, ids, lambda: sweeps.delete_sweep(session, sweep, members), session)
    return Response(status_code=status.HTTP_204_NO_CONTENT)

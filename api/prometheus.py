"""Prometheus metrics of the service, served by the API at ``/metrics``.

Read from the job store and the broker when scraped (so every API process serves the same):
- ``gan_jobs{state}``: jobs in each state, every state of ``worker.store.models.STATES`` (0
  included);
- ``gan_job_duration_seconds{state}``: histogram of finished jobs' started_at → finished_at;
- ``gan_training_images_per_second``: the sum of the running jobs' latest throughput (their
  count is ``gan_jobs{state="running"}``; no job id labels, whose number has no bound);
- ``gan_queue_depth{queue}``: training tasks waiting in the broker (no sample when the broker
  does not answer: the scrape never fails for it);
- ``gan_worker_slots`` and ``gan_worker_slots_busy``: the live workers' training slots, and
  those training a job (``worker.store.workers``).

Measured by the API processes (summed over `gan serve --processes N`: ``api.metricsdir``):
- ``gan_sampling_latency_seconds{route, status}``: time to answer the sampling routes, by route
  template (never the raw path: no job ids) and status class (``2xx``, ``4xx``, ``5xx``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from kombu.transport.redis import PRIORITY_STEPS, Channel
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString
from sqlalchemy import ColumnElement, Float, case, cast, extract, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.metricsdir import scrape_registry
from api.readiness import describe
from worker.broker import is_embedded, is_redis
from worker.settings import Settings
from worker.store import workers
from worker.store.db import get_engine
from worker.store.models import Job
from worker.store.states import FINAL_STATES, RUNNING, STATES

log = logging.getLogger(__name__)

# The text format Prometheus scrapes (generate_latest writes it).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Jobs train for minutes to hours: 1 min … 1 day.
JOB_DURATION_BUCKETS = (60, 300, 600, 1800, 3600, 7200, 14400, 28800, 43200, 86400)
# Sampling loads a checkpoint and runs the generator: milliseconds on a GPU, seconds on a CPU.
SAMPLING_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Route templates whose latency is observed (their sub-routes included).
SAMPLING_ROUTES = ("/jobs/{job_id}/samples", "/jobs/{job_id}/interpolation")
# Seconds the scrape waits for Redis.
BROKER_TIMEOUT_S = 1.0


class ApiMetrics:
    """What this API process measures itself, in a registry of its own: one per app, so that
    apps made side by side (as tests do) never share or collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.sampling_latency = Histogram(
            "gan_sampling_latency_seconds",
            "Seconds to answer a sampling request, by route template and status class.",
            ["route", "status"],
            buckets=SAMPLING_BUCKETS,
            registry=self.registry,
        )


def scrape(metrics: ApiMetrics, settings: Settings) -> bytes:
    """The text exposition: the API processes' own metrics (this one's, or under `--processes
    N` all of theirs summed), then the job store's and the broker's as they are now."""
    own = generate_latest(scrape_registry(metrics.registry))
    return own + generate_latest(ServiceCollector(settings))


class ServiceCollector:
    """Reads the job store (two queries) and the broker's queue length when collected."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        yield from self._job_metrics()
        yield self._queue_depth()
        yield from self._slot_metrics()

    def _job_metrics(self) -> Iterator[Metric]:
        try:
            with Session(get_engine(self.settings.database_url)) as session:
                by_state = job_counts(session)
                durations = job_durations(session)
        except SQLAlchemyError as e:  # the scrape goes on: /readyz is what reports the outage
            log.warning("metrics: the job store did not answer: %s", describe(e))
            return
        jobs = GaugeMetricFamily("gan_jobs", "Jobs in each state.", labels=["state"])
        for state in [*STATES, *sorted(set(by_state) - set(STATES))]:
            jobs.add_metric([state], by_state.get(state, StateCount()).jobs)
        yield jobs
        yield GaugeMetricFamily(
            "gan_training_images_per_second",
            "Training throughput: the sum of the running jobs' latest images per second.",
            value=by_state.get(RUNNING, StateCount()).images_per_sec,
        )
        histogram = HistogramMetricFamily(
            "gan_job_duration_seconds",
            "Seconds from start to finish of finished jobs, by final state.",
            labels=["state"],
        )
        for state in FINAL_STATES:
            d = durations.get(state, Durations())
            buckets = [
                (floatToGoString(b), n)
                for b, n in zip(JOB_DURATION_BUCKETS, d.buckets, strict=True)
            ]
            histogram.add_metric([state], [*buckets, ("+Inf", d.count)], d.seconds)
        yield histogram

    def _slot_metrics(self) -> Iterator[Metric]:
        try:
            with Session(get_engine(self.settings.database_url)) as session:
                total, busy = workers.slot_counts(session, self.settings.lease_s)
        except SQLAlchemyError as e:
            log.warning("metrics: the job store did not answer: %s", describe(e))
            return
        yield GaugeMetricFamily(
            "gan_worker_slots", "Training slots of the live workers.", value=total
        )
        yield GaugeMetricFamily(
            "gan_worker_slots_busy", "Training slots that train a job now.", value=busy
        )

    def _queue_depth(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            "gan_queue_depth", "Training tasks waiting in the broker's queue.", labels=["queue"]
        )
        try:
            depth = queue_depth(self.settings)
        except (redis.RedisError, OSError) as e:
            log.warning("metrics: the broker did not answer: %s", describe(e))
            return family
        if depth is not None:
            family.add_metric([self.settings.task_queue], depth)
        return family


@dataclass(frozen=True)
class StateCount:
    jobs: int = 0
    images_per_sec: float = 0.0  # the sum of the jobs' latest throughput


@dataclass(frozen=True)
class Durations:
    count: int = 0
    seconds: float = 0.0
    buckets: Sequence[int] = (0,) * len(JOB_DURATION_BUCKETS)  # cumulative, as Prometheus's


def job_counts(session: Session) -> dict[str, StateCount]:
    """{state: its jobs and their summed throughput}, for the states that have jobs."""
    query = select(Job.state, func.count(), func.sum(Job.images_per_sec)).group_by(Job.state)
    return {
        state: StateCount(jobs=count, images_per_sec=float(ips or 0.0))
        for state, count, ips in session.execute(query)
    }


def job_durations(session: Session) -> dict[str, Durations]:
    """{final state: the run times of its jobs that started}, bucketed in the database."""
    seconds = _seconds_between(Job.started_at, Job.finished_at, session.get_bind().dialect.name)
    query = (
        select(
            Job.state,
            func.count(),
            func.sum(seconds),
            *[func.sum(case((seconds <= bound, 1), else_=0)) for bound in JOB_DURATION_BUCKETS],
        )
        .where(
            Job.state.in_(FINAL_STATES),
            Job.started_at.is_not(None),
            Job.finished_at.is_not(None),
        )
        .group_by(Job.state)
    )
    return {
        state: Durations(count, float(total or 0.0), [int(n or 0) for n in buckets])
        for state, count, total, *buckets in session.execute(query)
    }


def _seconds_between(start: Any, end: Any, dialect: str) -> ColumnElement[float]:
    """``end - start`` in seconds, in SQL (SQLite keeps timestamps as text)."""
    if dialect == "sqlite":
        return cast((func.julianday(end) - func.julianday(start)) * 86400.0, Float)
    return cast(extract("epoch", end - start), Float)


def queue_depth(settings: Settings) -> int | None:
    """Training tasks waiting in the broker, or None for a broker this cannot count."""
    if is_embedded(settings.broker_url):
        return filesystem_queue_depth(settings.broker_dir / "queue", settings.task_queue)
    if is_redis(settings.broker_url):
        return redis_queue_depth(settings.broker_url, settings.task_queue)
    return None


def filesystem_queue_depth(folder: Path, queue: str) -> int:
    """Kombu's filesystem transport keeps each message as ``<ms>_<uuid>.<queue>.msg``."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:  # made when the first task is sent
        return 0
    return sum(1 for name in names if name.partition(".")[2] == f"{queue}.msg")


def redis_queue_keys(queue: str) -> list[str]:
    """The Redis lists of kombu's queue: one per priority step (the default priority's is the
    queue's name)."""
    return [queue, *(f"{queue}{Channel.sep}{step}" for step in PRIORITY_STEPS if step)]


def redis_queue_depth(url: str, queue: str, timeout: float = BROKER_TIMEOUT_S) -> int:
    """LLEN of the queue's lists, in one round trip."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        pipeline = client.pipeline(transaction=False)
        for key in redis_queue_keys(queue):
            pipeline.llen(key)
        return sum(int(n) for n in pipeline.execute())
    finally:
        client.close()


class ObserveSamplingLatency:
    """ASGI middleware: observe ``histogram`` for requests the router matched to a sampling
    route, labelled by the route's template (``scope["route"]``, set by the router) and the
    response's status class."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app, self.histogram = app, histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless a response starts: an exception that escapes the app

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            template = getattr(scope.get("route"), "path", None)
            if isinstance(template, str) and template.startswith(SAMPLING_ROUTES):
                self.histogram.labels(route=template, status=f"{status // 100}xx").observe(
                    time.perf_counter() - started
                )

"""A small typed Python client of the service's HTTP API, used by the ``gan`` client commands.

    from api.client import Client

    with Client("http://127.0.0.1:8000", api_key=None) as gan:
        job = gan.submit("stable", max_steps=5000)
        for event in gan.events(job["id"]):          # live, until the job finishes
            print(event.type, event.data)
        png = gan.sample(job["id"], n=64, label=7)    # bytes of an 8x8 grid

It needs only httpx and the standard library (no torch, no FastAPI), so scripts can use it
anywhere. Every answer that is not a success raises ``ApiError`` with the HTTP status and the
service's ``detail``; a service that cannot be reached raises httpx's ``TransportError``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, Literal, NamedTuple, cast

import httpx
from typing_extensions import TypedDict  # not typing's: pydantic reads these on 3.11 too

from gan.monitor import WarningCode
from worker.store.states import JobState

DEFAULT_URL = "http://127.0.0.1:8000"


class JobWarning(TypedDict):
    code: WarningCode  # what was flagged
    step: int  # the step the condition started
    message: str  # what happened and what to try


class Job(TypedDict):
    """A job as ``GET /jobs/{id}`` answers it (the README and /docs describe each field)."""

    id: str
    state: JobState
    preset: str
    config: dict[str, Any]
    step: int
    total_steps: int
    images_per_sec: float | None
    eta_seconds: float | None
    d_loss: float | None
    g_loss: float | None
    checkpoint_step: int | None
    metrics: dict[str, float | None]
    metrics_step: int | None
    best_metrics: dict[str, float | int | None] | None
    warnings: list[JobWarning]
    error: str | None
    attempts: int
    worker: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    updated_at: str
    sweep_id: str | None  # the sweep that made it, if any
    links: dict[str, str]


class SweepJob(TypedDict):
    """A job of a sweep and where it ranks (1: the lowest best metric; None: no best yet)."""

    rank: int | None
    point: dict[str, Any]  # the fields this point set over the base
    metric: str | None  # fid, kl or mode_kl: whichever the job's dataset has
    value: float | None
    job: Job


class SweepBest(TypedDict):
    job_id: str
    metric: str
    value: float


class SweepSummary(TypedDict):
    """A sweep as ``GET /sweeps`` lists it."""

    id: str
    created_at: str
    spec: dict[str, Any]  # what was asked for: base, and grid or points
    size: int
    states: dict[str, int]  # how many of its jobs are in each state
    best: SweepBest | None
    links: dict[str, str]


class Sweep(SweepSummary):
    """A sweep as ``GET /sweeps/{id}`` answers it: its jobs best first."""

    jobs: list[SweepJob]


class Metrics(TypedDict):
    """``GET /jobs/{id}/metrics``: points oldest first, each a ``step`` and its values (d_loss,
    g_loss, d_real, d_fake, d_grad_norm, g_grad_norm, images_per_sec, fid, …; None: not
    finite)."""

    job_id: str
    total_points: int
    points: list[dict[str, float | None]]


class Checkpoint(TypedDict):
    name: str  # a step number, or "best"
    step: int
    created_at: str
    size_bytes: int
    best: bool
    metrics: dict[str, float | None] | None
    download: str


class Slot(TypedDict):
    id: str  # host/pid, as a job's "worker" names it
    slot: int
    device: str  # "cuda:1", "cuda" or "cpu"
    threads: int
    busy: bool
    job_id: str | None  # the job it trains, when it is yours
    seen_at: str


class Worker(TypedDict):
    name: str  # host/pid of the `gan worker`
    host: str
    slots: list[Slot]
    busy: int


class Workers(TypedDict):
    """``GET /workers``: the live workers and their slots."""

    workers: list[Worker]
    slots_total: int
    slots_busy: int


class Webhook(TypedDict):
    """A job spec's ``webhook`` (README: Webhooks)."""

    url: str
    events: list[Literal["state", "checkpoint", "progress"]]
    progress_every_s: float


class WebhookDelivery(TypedDict):
    id: int
    event_id: int
    event: Literal["state", "checkpoint", "progress"]
    state: Literal["pending", "delivered", "failed"]
    attempts: int
    status_codes: list[int | None]  # each finished attempt's HTTP status (None: no answer)
    last_error: str | None
    next_attempt_at: str | None
    created_at: str
    delivered_at: str | None


class Webhooks(TypedDict):
    """``GET /jobs/{id}/webhooks``."""

    job_id: str
    webhook: Webhook | None
    deliveries: list[WebhookDelivery]


class Event(NamedTuple):
    """One Server-Sent Event of ``GET /jobs/{id}/events``: its id (for ``last_event_id``), its
    type (``state``, ``progress`` or ``checkpoint``) and its JSON data."""

    id: int | None
    type: str
    data: Any


class ApiError(Exception):
    """The service answered with an error: ``status`` is the HTTP status, ``detail`` its
    ``detail`` (a message, or for a 422 a list of ``{loc, msg, type}`` naming each field)."""

    def __init__(self, status: int, detail: Any) -> None:
        self.status, self.detail = status, detail
        super().__init__(f"{status}: {self.message}")

    @property
    def fields(self) -> dict[str, str]:
        """A 422's messages by the field (or parameter, or header) they are about: its name,
        or its path inside the body when it is nested (``grid.lr_g[2]``)."""
        if not isinstance(self.detail, list):
            return {}
        found: dict[str, str] = {}
        for item in self.detail:
            if isinstance(item, dict):
                found.setdefault(_field_path(item.get("loc") or ["?"]), str(item.get("msg", "")))
        return found

    @property
    def message(self) -> str:
        """The detail for a person: the message, or each field with its problem."""
        if isinstance(self.detail, list) and self.fields:
            return "; ".join(f"{field}: {msg}" for field, msg in self.fields.items())
        return str(self.detail)


def _field_path(loc: list[Any]) -> str:
    """``["body", "grid", "lr_g", 2]`` → ``grid.lr_g[2]``; ``["body", "max_steps"]`` →
    ``max_steps``; a loc of one element is that element."""
    parts = loc[1:] if len(loc) > 1 else loc
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path


def _raise_for(response: httpx.Response) -> None:
    if response.is_success or response.status_code == 304:
        return
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        detail = response.text or response.reason_phrase
    raise ApiError(response.status_code, detail)


def parse_sse(lines: Iterable[str]) -> Iterator[Event]:
    """The events of a ``text/event-stream`` given line by line (without line endings), as the
    SSE specification reads them: ``data`` lines joined, comments and ``retry`` skipped."""
    event_id: int | None = None
    kind = "message"
    data: list[str] = []
    for line in lines:
        if not line:  # a blank line dispatches the event
            if data:
                yield Event(event_id, kind, json.loads("\n".join(data)))
            kind, data = "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            kind = value
        elif name == "id" and value.isdigit():
            event_id = int(value)


class Client:
    """The service at ``base_url``, with an API key when it needs one (sent as ``X-API-Key``).
    ``timeout`` is the seconds each request may take (sampling a large grid on a CPU may need
    more than the default); event streams wait as long as the job runs."""

    def __init__(
        self, base_url: str = DEFAULT_URL, api_key: str | None = None, timeout: float = 60.0
    ) -> None:
        headers = {"X-API-Key": api_key} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._http.request(method, path, **kwargs)
        _raise_for(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    # --- jobs --------------------------------------------------------------------------------

    def submit(
        self, preset: str = "classic", *, idempotency_key: str | None = None, **overrides: Any
    ) -> Job:
        """Queue a training job: a preset plus any fields to override (``max_steps=5000``), and
        a ``webhook={"url": …}`` (a ``Webhook``). With an ``idempotency_key``, a retry returns
        the job the first request made."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = {"preset": preset, **overrides}
        return cast(Job, self._json("POST", "/jobs", json=body, headers=headers))

    def job(self, job_id: str) -> Job:
        """The job's state, progress, latest and best metrics, warnings and config."""
        return cast(Job, self._json("GET", f"/jobs/{job_id}"))

    def jobs(
        self,
        state: str | Iterable[str] | None = None,
        limit: int | None = None,
        page_size: int = 100,
    ) -> Iterator[Job]:
        """Your jobs, newest first, in these states (all when None), at most ``limit`` of them
        (all when None): pages of ``page_size`` are fetched as the iteration needs them."""
        states = [state] if isinstance(state, str) else list(state or ())
        cursor: str | None = None
        seen = 0
        while True:
            size = page_size if limit is None else min(page_size, limit - seen)
            if size <= 0:
                return
            params: dict[str, Any] = {"limit": size, "state": states}
            if cursor is not None:
                params["cursor"] = cursor
            page = self._json("GET", "/jobs", params=params)
            for job in page["jobs"]:
                yield cast(Job, job)
                seen += 1
            cursor = page["next_cursor"]
            if cursor is None:
                return

    def cancel(self, job_id: str) -> Job:
        """Stop the job, keeping its checkpoints: ``cancelled`` at once when it was queued,
        ``cancelling`` while its worker stops. 409 (ApiError) once it has finished."""
        return cast(Job, self._json("POST", f"/jobs/{job_id}/cancel"))

    def resume(self, job_id: str, max_steps: int | None = None) -> Job:
        """Queue a cancelled or failed job again, from its newest checkpoint; with
        ``max_steps``, to a new total (which also trains a succeeded job further)."""
        body = {"max_steps": max_steps} if max_steps is not None else None
        return cast(Job, self._json("POST", f"/jobs/{job_id}/resume", json=body))

    def delete(self, job_id: str) -> None:
        """Remove the job, its metrics, events and files."""
        self._request("DELETE", f"/jobs/{job_id}")

    # --- sweeps ------------------------------------------------------------------------------

    def submit_sweep(
        self,
        preset: str = "classic",
        *,
        grid: Mapping[str, Iterable[Any]] | None = None,
        points: Iterable[Mapping[str, Any]] | None = None,
        idempotency_key: str | None = None,
        **overrides: Any,
    ) -> Sweep:
        """Queue one job per point: of a ``grid`` (field → values, every combination) or of
        ``points`` (each the fields it overrides), over the base spec (a preset plus
        ``overrides``). With an ``idempotency_key``, a retry returns the first sweep."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body: dict[str, Any] = {"base": {"preset": preset, **overrides}}
        if grid is not None:
            body["grid"] = {name: list(values) for name, values in grid.items()}
        if points is not None:
            body["points"] = [dict(point) for point in points]
        return cast(Sweep, self._json("POST", "/sweeps", json=body, headers=headers))

    def sweep(self, sweep_id: str) -> Sweep:
        """The sweep's jobs, ranked by their best quality metric, with their states."""
        return cast(Sweep, self._json("GET", f"/sweeps/{sweep_id}"))

    def sweeps(self, limit: int | None = None) -> list[SweepSummary]:
        """Your sweeps, newest first."""
        listing = self._json("GET", "/sweeps", params=_given({"limit": limit}))
        return cast(list[SweepSummary], listing["sweeps"])

    def cancel_sweep(self, sweep_id: str) -> Sweep:
        """Cancel every job of the sweep that has not finished."""
        return cast(Sweep, self._json("POST", f"/sweeps/{sweep_id}/cancel"))

    def delete_sweep(self, sweep_id: str) -> None:
        """Remove the sweep and all its jobs, with their files."""
        self._request("DELETE", f"/sweeps/{sweep_id}")

    # --- what a job made -----------------------------------------------------------------------

    def metrics(
        self, job_id: str, since_step: int | None = None, max_points: int | None = None
    ) -> Metrics:
        """The job's time series of losses, logits, gradient norms and evaluations."""
        params = {"since_step": since_step, "max_points": max_points}
        return cast(Metrics, self._json("GET", f"/jobs/{job_id}/metrics", params=_given(params)))

    def checkpoints(self, job_id: str) -> list[Checkpoint]:
        """The job's checkpoint files on disk, oldest first."""
        listing = self._json("GET", f"/jobs/{job_id}/checkpoints")
        return cast(list[Checkpoint], listing["checkpoints"])

    def sample(
        self,
        job_id: str,
        n: int = 64,
        seed: int = 0,
        label: int | Literal["rows"] | None = None,
        checkpoint: int | str | None = None,
        ema: bool = True,
        truncation: float | None = None,
        nrow: int | None = None,
        format: Literal["png", "npy"] = "png",
    ) -> bytes:
        """Fresh samples from one of the job's checkpoints (default: its best, else newest):
        a PNG grid, or with ``format="npy"`` the NumPy array's bytes."""
        params = {
            "n": n,
            "seed": seed,
            "label": label,
            "checkpoint": checkpoint,
            "ema": None if ema else "false",
            "truncation": truncation,
            "nrow": nrow,
            "format": format,
        }
        return self._request("GET", f"/jobs/{job_id}/samples", params=_given(params)).content

    def export_generator(
        self,
        job_id: str,
        format: Literal["safetensors", "onnx", "torchscript"] = "safetensors",
        checkpoint: int | str | None = None,
        ema: bool = True,
    ) -> bytes:
        """The generator of one of the job's checkpoints (default: its best, else newest),
        alone, as a safetensors, ONNX or TorchScript file's bytes (README: Export)."""
        params = {"format": format, "checkpoint": checkpoint, "ema": None if ema else "false"}
        return self._request("GET", f"/jobs/{job_id}/generator", params=_given(params)).content

    def webhooks(self, job_id: str) -> Webhooks:
        """The job's webhook (``submit(..., webhook={"url": …})``) and its deliveries: each
        event's state, attempts, status codes and next retry."""
        return cast(Webhooks, self._json("GET", f"/jobs/{job_id}/webhooks"))

    def presets(self) -> dict[str, dict[str, Any]]:
        """Every preset's full config, by name."""
        listing = self._json("GET", "/presets")
        return {preset["name"]: preset["config"] for preset in listing["presets"]}

    def workers(self) -> Workers:
        """The live workers, their slots (device, threads, the job each trains) and totals."""
        return cast(Workers, self._json("GET", "/workers"))

    # --- following a job -----------------------------------------------------------------------

    def events(
        self, job_id: str, last_event_id: int | None = None, reconnects: int = 5
    ) -> Iterator[Event]:
        """The job's events as they happen, until the job has finished (the service then ends
        the stream): its history first, or only what came after ``last_event_id``. A dropped
        connection is reopened where it left off, up to ``reconnects`` times in a row."""
        failures = 0
        while True:
            headers = {"Accept": "text/event-stream"}
            if last_event_id is not None:
                headers["Last-Event-ID"] = str(last_event_id)
            try:
                with self._http.stream(
                    "GET", f"/jobs/{job_id}/events", headers=headers, timeout=httpx.Timeout(60.0)
                ) as response:
                    if not response.is_success:
                        response.read()
                        _raise_for(response)
                    for event in parse_sse(response.iter_lines()):
                        failures = 0
                        if event.id is not None:
                            last_event_id = event.id
                        yield event
                return  # the service ended the stream: the job has finished, or is gone
            except (httpx.TransportError, httpx.RemoteProtocolError):
                failures += 1
                if failures > reconnects:
                    raise
                time.sleep(min(2.0 * failures, 10.0))


def _given(params: Mapping[str, Any]) -> dict[str, Any]:
    """The query parameters that have a value."""
    return {name: value for name, value in params.items() if value is not None}

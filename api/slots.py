"""Bounds on how many requests of a kind run at once, per key and in all, in this API process.

Event streams and sample generation hold something for as long as they run (a connection and a
place in the job store's polling; CPU and memory), so a rate (``api.ratelimit``) does not bound
them: a client could open streams slowly and keep them all. A ``Slots`` counts those running:
past ``per_key`` for one key the next is a 429 (that client asks too much), past ``total`` a
503 (the service is full); either says when to retry.

Per process even when the rate limits are kept in Redis: the bounds share out one process's
cores, memory and connections (RELIABILITY.md, "Several API processes", says why, and what N
processes multiply).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from functools import lru_cache

from fastapi import HTTPException

from api.errors import too_many_requests, unavailable
from worker.settings import Settings

SAMPLING_RETRY_AFTER_S = 1.0  # generating takes a fraction of a second to a few seconds
STREAM_RETRY_AFTER_S = 5.0  # a stream lasts as long as its job: no use asking again at once
ANY_KEY = ""  # what ``Slots.admit`` counts for (a client key is "key:…" or "address:…")


class Slots:
    """At most ``per_key`` held at once per key and ``total`` in all (None: no bound in all).
    Thread-safe: sync routes run in threads, streams in the event loop."""

    def __init__(self, what: str, per_key: int, total: int | None, retry_after: float) -> None:
        self.what, self.per_key, self.total, self.retry_after = what, per_key, total, retry_after
        self._held: Counter[str] = Counter()
        self._lock = threading.Lock()

    @property
    def in_use(self) -> int:
        with self._lock:
            return self._held.total()

    def _full(self) -> HTTPException:
        return unavailable(
            f"the service has {self.total} {self.what} at once, its most", self.retry_after
        )

    def admit(self) -> Callable[[], None]:
        """Hold one of the ``total`` for a request whose key is not known yet, or raise a 503
        (all are held): a check that needs no key, so that a request past the bound is refused
        before it costs anything (a thread, the key's lookup). Returns the function that gives
        it back, as ``take``."""
        return self._hold(None)

    def take(self, key: str) -> Callable[[], None]:
        """Hold a slot for ``key``, or raise a 429 (this key holds ``per_key``) or a 503 (all
        ``total`` are held). Returns the function that gives it back; calling it again does
        nothing, so a stream may give it back both when it ends and when it is collected."""
        return self._hold(key)

    def _hold(self, key: str | None) -> Callable[[], None]:
        counted = ANY_KEY if key is None else key
        with self._lock:
            if key is not None and self._held[key] >= self.per_key:
                raise too_many_requests(
                    f"at most {self.per_key} {self.what} at once per API key", self.retry_after
                )
            if self.total is not None and self._held.total() >= self.total:
                raise self._full()
            self._held[counted] += 1
        given_back = threading.Event()

        def give_back() -> None:
            with self._lock:
                if given_back.is_set():
                    return
                given_back.set()
                self._held[counted] -= 1
                if self._held[counted] <= 0:
                    del self._held[counted]

        return give_back


@lru_cache
def slots_for(what: str, per_key: int, total: int | None, retry_after: float) -> Slots:
    """The process's ``Slots`` for ``what`` ("event streams", "sample requests") and these
    bounds, shared by all requests."""
    return Slots(what, per_key, total, retry_after)


def sampling_slots(settings: Settings) -> Slots:
    """Sample and interpolation requests generating at once: ``samplings_per_key`` per key.
    No bound in all: ``sampling_admissions``, which each of them holds first, is that bound."""
    return slots_for("sample requests", settings.samplings_per_key, None, SAMPLING_RETRY_AFTER_S)


def stream_slots(settings: Settings) -> Slots:
    """Event streams open at once."""
    return slots_for(
        "event streams", settings.streams_per_key, settings.max_streams, STREAM_RETRY_AFTER_S
    )


def sampling_admissions(settings: Settings) -> Slots:
    """Sample and interpolation requests being answered at once (their key and job looked up,
    then generated or served from the cache): ``max_samplings``, admitted on the event loop
    before they take a thread. A burst past it is refused there (under a millisecond of the
    app's work each, measured in-process), instead of queueing its lookups in the thread pool
    that serves every other sync route (RELIABILITY.md, "Hostile clients": 200 sample requests
    at once made ``GET /jobs/{id}`` wait up to seconds for a thread)."""
    return slots_for(
        "sample requests in progress", settings.max_samplings, settings.max_samplings,
        SAMPLING_RETRY_AFTER_S,
    )  # fmt: skip

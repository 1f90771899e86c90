"""One poll of the job store for all the event streams of an API process.

Each stream used to read the store itself every half second, in a thread of the pool that
also runs every sync route and dependency: 300 streams made 600 reads a second, which kept the
pool's 40 threads (and the database connections) busy, so /livez and GET /jobs/{id} waited
seconds for a thread. Now one task reads, every ``POLL_S``, the state and newest event id of
every job that has a stream, in one query, and a stream reads its events only when its job has
new ones, in a small pool of threads of its own (``READERS``): streams never take the routes'
threads, and idle streams cost nothing but their socket.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
from sqlalchemy.orm import Session

from worker.store import events
from worker.store.db import get_engine

log = logging.getLogger(__name__)

POLL_S = 0.5  # how often the feed looks for new events in the job store
READERS = 4  # threads reading for the streams (the feed's poll, and each stream's events)


def _newest(url: str, job_ids: list[str]) -> dict[str, tuple[str, int]]:
    with Session(get_engine(url)) as session:
        return events.newest(session, job_ids)


class Feed:
    """What the streams of one job store, in one event loop, know of their jobs: for each
    watched job its (state, newest event id) as of the last poll; a job that is gone (deleted)
    is absent once a poll has run without it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.readers = anyio.CapacityLimiter(READERS)
        self._watched: Counter[str] = Counter()
        self._newest: dict[str, tuple[str, int]] = {}
        self._polled = asyncio.Event()  # set, and replaced by a new one, after each poll
        self._failed = False  # the last poll could not read the store
        self._task: asyncio.Task[None] | None = None

    @contextmanager
    def watching(self, job_id: str) -> Iterator[None]:
        """While in it, the feed polls ``job_id`` (and polls at all while any job is watched)."""
        self._watched[job_id] += 1
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._poll())
        try:
            yield
        finally:
            self._watched[job_id] -= 1
            if self._watched[job_id] <= 0:
                del self._watched[job_id]

    async def changed(self, job_id: str, sent: int, state: str, within: float) -> bool:
        """Wait, at most ``within`` seconds, until the job has an event after ``sent``, a
        state other than ``state``, or is gone: True then, False when the time ran out. True
        too when the store could not be read: the stream's own read then says what is wrong."""
        with anyio.move_on_after(within):
            while True:
                polled = self._polled
                await polled.wait()
                if self._failed:
                    return True
                newest = self._newest.get(job_id)
                if newest is None or newest[0] != state or newest[1] > sent:
                    return True
        return False

    async def _poll(self) -> None:
        """Poll while any job is watched; a failed poll (the store is down) is logged and the
        streams wait for the next one."""
        while self._watched:
            try:
                found = await anyio.to_thread.run_sync(
                    _newest, self.url, list(self._watched), limiter=self.readers
                )
            except Exception as e:
                if not self._failed:
                    log.warning("event streams cannot poll the job store: %s", e)
                self._failed = True
            else:
                self._newest, self._failed = found, False
            polled, self._polled = self._polled, asyncio.Event()
            polled.set()
            await asyncio.sleep(POLL_S)


# One feed per event loop and job store: asyncio's events belong to the loop they were made in
# (the API has one; each test client may start its own).
_feeds: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Feed]] = (
    weakref.WeakKeyDictionary()
)


def feed_for(url: str) -> Feed:
    """This event loop's feed of the job store at ``url``."""
    feeds = _feeds.setdefault(asyncio.get_running_loop(), {})
    if url not in feeds:
        feeds[url] = Feed(url)
    return feeds[url]

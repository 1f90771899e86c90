"""How `gan serve` runs uvicorn: its options, and the HTTP protocol that guards connections.

uvicorn closes an idle connection only ``timeout_keep_alive`` after a response; one that never
sends a request, or sends its headers a byte at a time, it keeps forever, so enough of them
exhaust the process's file descriptors (every new client then hangs, and asyncio logs each
failed accept). ``GuardedH11Protocol`` closes a connection that has not sent a whole request
head within ``header_timeout_s`` of connecting (or of starting its next request), and refuses
connections past ``max_connections`` (closing the one that has waited longest for a request
head, which may be the new one).
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from worker.settings import Settings, get_settings

log = logging.getLogger(__name__)

# Seconds an idle keep-alive connection stays open. uvicorn's 5 s counts from when a response is
# handed to the socket, so under load (a busy event loop, a full send buffer) a client's next
# request on the connection could meet the close: the 64-client sampling load saw a few such
# resets a minute (RELIABILITY.md). 75 s is what common proxies keep (nginx, load balancers).
KEEP_ALIVE_S = 75
# File descriptors kept free beside the connections: the job store's pool, checkpoint files,
# the worker's pipes, logs.
SPARE_FDS = 256


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections that do not send a request head in time
    and refusing those past the process's bound (see the module's docstring)."""

    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._await_head()
        if len(self.connections) > get_settings().max_connections:
            self._make_room()

    def _make_room(self) -> None:
        """Close the connection that has waited longest for a request head (this one if none
        other is waiting): idle sockets make way for clients that send requests."""
        waiting = [
            c
            for c in self.connections
            if isinstance(c, GuardedH11Protocol) and c._head_timer is not None
        ]
        oldest = min(waiting, key=lambda c: c._head_timer.when() if c._head_timer else 0.0)
        oldest._head_timed_out()

    def data_received(self, data: bytes) -> None:
        if self._head_timer is None and (self.cycle is None or self.cycle.response_complete):
            self._await_head()  # the next request on a kept-alive connection has begun
        cycle = self.cycle
        super().data_received(data)
        if self.cycle is not cycle:  # a request head was read whole
            self._cancel_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _await_head(self) -> None:
        self._cancel_head_timer()
        timeout = get_settings().header_timeout_s
        self._head_timer = self.loop.call_later(timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._cancel_head_timer()
        if not self.transport.is_closing():
            self.transport.close()


def allow_open_files(connections: int) -> int:
    """Raise this process's soft limit of open files towards its hard limit, as far as
    ``connections`` plus spare descriptors need; the limit it has now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + SPARE_FDS
    if soft < wanted and (hard == resource.RLIM_INFINITY or soft < hard):
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft < wanted:
        log.warning(
            "at most %d open files: fewer than GAN_MAX_CONNECTIONS=%d needs (%d); lower it",
            soft,
            connections,
            wanted,
        )
    return soft


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn.run's options besides the app, host, port and processes.

    Proxy headers (X-Forwarded-For, X-Forwarded-Proto) are read only from ``trusted_proxies``:
    uvicorn's own default believes them from 127.0.0.1, which lets any local client (or one
    behind a proxy that passes the header through) choose the address it is counted as."""
    return {
        "http": "api.server:GuardedH11Protocol",  # by name: each of `--processes` imports it
        "timeout_keep_alive": KEEP_ALIVE_S,
        "proxy_headers": bool(settings.trusted_proxies),
        "forwarded_allow_ips": ",".join(settings.trusted_proxies),
    }

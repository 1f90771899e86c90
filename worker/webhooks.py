"""Webhooks: POSTing jobs' events to the URLs their specs name, signed, retried, recorded.

Each worker process runs a ``Dispatcher`` in a thread of its own beside the reconciler's
(``worker.main``), every ``webhook_poll_s`` seconds: it turns new events of the durable events
table into deliveries (``worker.store.webhooks.enqueue``) and makes the attempts that are due.
Training never waits for it: the training task only appends events, as it does for the event
stream, and a slow or dead receiver holds up nothing but later deliveries. It is a thread of
the worker rather than of the API because a worker always runs where jobs train (an API may
run in several processes, or not at all meanwhile), and rather than a Celery task because the
solo pool runs one task at a time: a training job would hold deliveries back for hours.

A delivery is a POST of ``worker.store.webhooks.payload`` as JSON, with headers
``X-GAN-Event`` (state, checkpoint, progress), ``X-GAN-Delivery`` (its id) and
``X-GAN-Signature: t=<unix time>,v1=<hex>``: HMAC-SHA256, keyed with the job's webhook secret,
of ``<t>.<body>`` (``sign``). Any 2xx is delivered; anything else (an error status, a redirect,
no answer within ``webhook_timeout_s``) is tried again after ``webhook_retry_s``, doubling each
time (``backoff``), up to ``webhook_max_attempts`` in all, then recorded as failed.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import threading
import time
from datetime import timedelta
from urllib.parse import urlsplit

import httpx
from sqlalchemy.exc import IntegrityError

from gan.errors import first_line
from worker.settings import Settings
from worker.store import webhooks
from worker.store.db import UNAVAILABLE, session_scope
from worker.store.models import utcnow

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-GAN-Signature"
MAX_BACKOFF_S = 3600.0
KEY_SECRET_INFO = b"gan-webhook-v1"  # what an API key's webhook secret is derived with
BATCH = 100  # deliveries tried per pass at most


def key_secret(api_key: str) -> str:
    """The webhook secret of an API key: hex HMAC-SHA256 of ``gan-webhook-v1`` keyed with the
    key itself, so its holder can compute it and the service need not store the key."""
    return hmac.new(api_key.encode(), KEY_SECRET_INFO, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-GAN-Signature`` header of ``body`` sent at ``timestamp`` (Unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def backoff(settings: Settings, attempts: int) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt."""
    return float(min(MAX_BACKOFF_S, settings.webhook_retry_s * 2 ** (attempts - 1)))


def refused_address(url: str) -> str | None:
    """Why ``url``'s host may not be sent to: it does not resolve, or one of its addresses is
    loopback, private, link-local, multicast or otherwise not global; None when it may."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError) as e:
        return f"its host {host!r} cannot be resolved ({e})"
    for *_, address in found:
        ip = ipaddress.ip_address(str(address[0]).split("%")[0])
        if not ip.is_global or ip.is_multicast:
            return (
                f"its host {host!r} has the address {ip}, which is loopback, private or "
                "reserved (GAN_WEBHOOK_ALLOW_PRIVATE=1 allows such addresses)"
            )
    return None


def attempt_hold_s(settings: Settings) -> float:
    """Seconds an attempt holds its delivery: longer than it may last (the timeout bounds the
    connect, the send and the read each), after which another attempt may be made."""
    return 3 * settings.webhook_timeout_s + 5.0


class Dispatcher:
    """One per worker process; ``run_once`` is one pass."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.http = httpx.Client(timeout=settings.webhook_timeout_s, follow_redirects=False)

    def run_once(self) -> int:
        """Queue the deliveries of new events, then make the attempts that are due; returns
        how many attempts were made."""
        url = self.settings.database_url
        with session_scope(url) as session:
            behind = webhooks.behind(session)
        for job_id in behind:
            try:
                with session_scope(url) as session:
                    webhooks.enqueue(session, job_id)
            except IntegrityError:  # another dispatcher queued the same events: they are
                continue
        with session_scope(url) as session:
            due = webhooks.due(session, utcnow(), BATCH)
        return sum(self._attempt(delivery_id, attempts) for delivery_id, attempts in due)

    def _attempt(self, delivery_id: int, attempts: int) -> bool:
        """One attempt at the delivery, if no other dispatcher took it first."""
        url, now = self.settings.database_url, utcnow()
        hold = timedelta(seconds=attempt_hold_s(self.settings))
        with session_scope(url) as session:
            claimed = webhooks.claim(session, delivery_id, attempts, now, now + hold)
        if claimed is None:
            return False
        code, error = self.post(claimed)
        retry_at = None
        if error is not None and claimed.attempt < self.settings.webhook_max_attempts:
            retry_at = utcnow() + timedelta(seconds=backoff(self.settings, claimed.attempt))
        if error is not None and error.startswith("refused"):
            retry_at = None  # the address will not become allowed by waiting
        with session_scope(url) as session:
            webhooks.finish(session, claimed, code, error, retry_at)
        if error is not None:
            log.warning("webhook delivery %d (attempt %d): %s", claimed.id, claimed.attempt, error)
        return True

    def post(self, claimed: webhooks.Claimed) -> tuple[int | None, str | None]:
        """POST the delivery: (status code or None, None when delivered or why not)."""
        if claimed.owner and not self.settings.webhook_allow_private:
            reason = refused_address(claimed.url)  # again: a name may resolve elsewhere now
            if reason is not None:
                return None, f"refused: {reason}"
        body = json.dumps(claimed.payload, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "gan-service-webhooks",
            "X-GAN-Event": str(claimed.payload.get("event")),
            "X-GAN-Delivery": str(claimed.id),
            SIGNATURE_HEADER: sign(claimed.secret, int(time.time()), body),
        }
        try:
            response = self.http.post(claimed.url, content=body, headers=headers)
        except httpx.HTTPError as e:
            return None, f"no answer: {first_line(e) or type(e).__name__}"
        if response.is_success:
            return response.status_code, None
        return response.status_code, f"answered {response.status_code}"

    def run_forever(self, stop: threading.Event) -> None:
        """A pass every ``webhook_poll_s`` seconds until ``stop`` is set; a failed pass is
        logged and retried."""
        while not stop.wait(self.settings.webhook_poll_s):
            try:
                self.run_once()
            except UNAVAILABLE as e:
                log.warning("webhook pass failed: the job store is unreachable: %s", first_line(e))
            except Exception:
                log.exception("webhook pass failed")

    def start(self) -> threading.Event:
        """``run_forever`` in a daemon thread; set the returned event to stop it."""
        stop = threading.Event()
        threading.Thread(target=self.run_forever, args=(stop,), daemon=True).start()
        return stop

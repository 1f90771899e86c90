"""The kinds of Celery broker the service treats differently, told apart by the broker's URL
(``Settings.broker_url``).

- embedded: kombu's filesystem transport (``filesystem://``), the default. Its messages are
  files under ``Settings.broker_dir``; it needs no server, and serves one worker on one machine.
- Redis (``redis://``, or ``rediss://`` over TLS): messages live in Redis, which can lose them
  (a restart without persistence, a flush), so the reconciler watches for that.

Any other URL is a broker Celery knows and this service handles generically.
"""

from __future__ import annotations

EMBEDDED_SCHEMES = ("filesystem://",)
REDIS_SCHEMES = ("redis://", "rediss://")


def is_embedded(url: str) -> bool:
    """Whether ``url`` is the embedded filesystem broker."""
    return url.startswith(EMBEDDED_SCHEMES)


def is_redis(url: str) -> bool:
    """Whether ``url`` is a Redis broker."""
    return url.startswith(REDIS_SCHEMES)

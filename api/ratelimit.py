"""A token bucket per key (an API key, a client address), in this API process."""

from __future__ import annotations

import threading
import time
from functools import lru_cache


class RateLimiter:
    """At most ``per_minute`` actions a minute per key, in bursts of up to ``per_minute``: each
    key's bucket holds that many tokens and refills at per_minute / 60 tokens a second."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}  # key → (tokens, when)
        self._lock = threading.Lock()

    def take(self, key: str, cost: int = 1) -> float:
        """Take ``cost`` tokens for ``key``: 0 when it had them, else the seconds until it has.
        A cost above the bucket's capacity (a sweep of more jobs than ``per_minute``) is taken
        from a full bucket, leaving it in debt: the key then waits for the whole cost."""
        now = time.monotonic()
        need = min(float(cost), self.capacity)
        with self._lock:
            tokens = self._tokens(key, now)
            if tokens >= need:
                self._buckets[key] = (tokens - cost, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (need - tokens) / self.rate

    def wait(self, key: str) -> float:
        """Seconds until ``key`` has a token (0: it has one now), taking none."""
        now = time.monotonic()
        with self._lock:
            tokens = self._tokens(key, now)
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate

    def _tokens(self, key: str, now: float) -> float:
        """The tokens in ``key``'s bucket at ``now``; a full bucket is forgotten (the dict keeps
        only keys that have spent something)."""
        tokens, when = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - when) * self.rate)
        if tokens >= self.capacity:
            self._buckets.pop(key, None)
        return tokens


@lru_cache
def limiter_for(per_minute: int, purpose: str = "jobs") -> RateLimiter:
    """The process's limiter for this rate and ``purpose`` ("jobs": job starts per API key,
    "bad-keys": unknown API keys per client address), shared by all requests."""
    return RateLimiter(per_minute)

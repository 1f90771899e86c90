"""Token buckets per key (an API key, a client address): in Redis when the broker is Redis, so
that a budget holds across every API process and host, else in this API process.

``rate_limiter`` is the one place that chooses. Redis keeps each bucket as a hash
``gan:<task queue>:ratelimit:<purpose>:<key>`` (the task queue names the deployment sharing the
Redis), updated by one Lua script (atomic: two processes never both spend the last token) on
Redis's own clock (hosts' clocks never disagree about it), expiring once it would be full
again. When Redis does not answer, a ``RedisRateLimiter`` falls back to its process's own
bucket for ``RECHECK_S`` before asking again: the limit holds per process meanwhile (as it did
before there was Redis), never a 500 and never unlimited (RELIABILITY.md says why).
"""

from __future__ import annotations

import logging
import threading
import time
from functools import lru_cache
from typing import Literal, Protocol

import redis

from gan.errors import first_line
from worker.broker import is_redis
from worker.settings import Settings

log = logging.getLogger(__name__)

Purpose = Literal["jobs", "bad-keys"]
# Seconds a rate-limit call waits for Redis (a Redis near the API answers in a millisecond).
REDIS_TIMEOUT_S = 0.5
# Seconds a limiter whose Redis failed uses its process's bucket before asking Redis again, so
# that an outage costs one timeout per RECHECK_S, not one per request.
RECHECK_S = 5.0

# KEYS[1]: the bucket; ARGV[1]: its capacity (tokens); ARGV[2]: its refill (tokens a second);
# ARGV[3]: the cost. Takes ``cost`` tokens if there are min(cost, capacity) (a cost above the
# capacity leaves the bucket in debt); returns the seconds until there are (0: taken), as text.
TOKEN_BUCKET = """
local capacity, rate, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local need = math.min(cost, capacity)
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(bucket[1]), tonumber(bucket[2])
if tokens == nil or at == nil then tokens, at = capacity, now end
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= need then tokens = tokens - cost else wait = (need - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / rate * 1000) + 1000)
return tostring(wait)
"""


class RateLimiter(Protocol):
    """At most ``per_minute`` actions a minute per key, in bursts of up to ``per_minute``: each
    key's bucket holds that many tokens and refills at per_minute / 60 tokens a second."""

    def take(self, key: str, cost: int = 1) -> float:
        """Take ``cost`` tokens for ``key``: 0 when it had them, else the seconds until it has.
        A cost above the bucket's capacity (a sweep of more jobs than ``per_minute``) is taken
        from a full bucket, leaving it in debt: the key then waits for the whole cost."""
        ...


class LocalRateLimiter:
    """The buckets in this process (the embedded default, and the fallback while Redis is
    down)."""

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

    def _tokens(self, key: str, now: float) -> float:
        """The tokens in ``key``'s bucket at ``now``; a full bucket is forgotten (the dict keeps
        only keys that have spent something)."""
        tokens, when = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - when) * self.rate)
        if tokens >= self.capacity:
            self._buckets.pop(key, None)
        return tokens


class RedisRateLimiter:
    """The buckets in Redis, shared by every API process and host that uses it; ``fallback``
    answers while Redis does not (for ``recheck_s`` after each failure)."""

    def __init__(
        self, url: str, prefix: str, per_minute: int, recheck_s: float = RECHECK_S
    ) -> None:
        self.prefix, self.capacity, self.rate = prefix, per_minute, per_minute / 60.0
        self.fallback, self.recheck_s = LocalRateLimiter(per_minute), recheck_s
        client = redis.Redis.from_url(
            url, socket_connect_timeout=REDIS_TIMEOUT_S, socket_timeout=REDIS_TIMEOUT_S
        )
        self._script = client.register_script(TOKEN_BUCKET)  # EVALSHA, EVAL after a restart
        self._down_until = 0.0  # monotonic time before which Redis is not asked

    def take(self, key: str, cost: int = 1) -> float:
        if time.monotonic() < self._down_until:
            return self.fallback.take(key, cost)
        try:
            bucket = f"{self.prefix}:{key}"
            wait = float(self._script(keys=[bucket], args=[self.capacity, self.rate, cost]))
        except (redis.RedisError, OSError) as e:
            if not self._down_until:
                log.warning(
                    "rate limits: Redis did not answer (%s); counting in this process until it "
                    "does", first_line(e),
                )  # fmt: skip
            self._down_until = time.monotonic() + self.recheck_s
            return self.fallback.take(key, cost)
        if self._down_until:
            log.warning("rate limits: Redis answers again; counting in Redis")
            self._down_until = 0.0
        return wait


def rate_limiter(settings: Settings, purpose: Purpose) -> RateLimiter:
    """The limiter for ``purpose`` ("jobs": jobs started per API key, ``jobs_per_minute``;
    "bad-keys": unknown API keys per client address, ``bad_keys_per_minute``): in Redis when
    the broker is Redis, else in this process."""
    per_minute = settings.jobs_per_minute if purpose == "jobs" else settings.bad_keys_per_minute
    redis_url = settings.broker_url if is_redis(settings.broker_url) else None
    return limiter_for(per_minute, purpose, redis_url, settings.task_queue)


@lru_cache
def limiter_for(
    per_minute: int, purpose: Purpose, redis_url: str | None = None, deployment: str = ""
) -> RateLimiter:
    """The process's limiter for this rate, purpose and Redis, shared by all requests."""
    if redis_url is None:
        return LocalRateLimiter(per_minute)
    return RedisRateLimiter(redis_url, f"gan:{deployment}:ratelimit:{purpose}", per_minute)

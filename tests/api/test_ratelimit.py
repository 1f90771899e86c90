"""The rate limiters: the Redis token bucket against a real Redis of the test's own (shared by
limiters as API processes share it, down, back), and the choice between it and the process's."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from api.ratelimit import REDIS_TIMEOUT_S, LocalRateLimiter, RedisRateLimiter, rate_limiter
from harness.services import RedisServer
from worker.settings import Settings


def test_the_redis_bucket_is_shared_by_limiters_like_api_processes(own_redis: RedisServer):
    first, second = (RedisRateLimiter(own_redis.url, "gan:t:ratelimit:jobs", 3) for _ in "ab")
    assert [first.take("alice"), second.take("alice"), first.take("alice")] == [0, 0, 0]
    wait = second.take("alice")
    assert 19 < wait <= 20  # a token every 60/3 s
    assert first.take("bob") == 0  # another key has a bucket of its own
    ttl = own_redis.client().pttl("gan:t:ratelimit:jobs:alice")
    assert 0 < ttl <= 61_000  # forgotten once it would be full again


@pytest.mark.parametrize("kind", ["redis", "local"])
def test_a_cost_of_several_tokens_and_above_the_capacity(own_redis: RedisServer, kind: str):
    """A sweep of n jobs takes n tokens; one larger than the bucket takes a full bucket and
    leaves it in debt, so the key waits for the whole cost (both kinds of limiter alike)."""
    limiter = (
        RedisRateLimiter(own_redis.url, "gan:t:ratelimit:jobs", 6)  # a token every 10 s
        if kind == "redis"
        else LocalRateLimiter(6)
    )
    assert limiter.take("a", 4) == 0
    assert 19 < limiter.take("a", 4) <= 20  # 2 left, 2 more to wait for
    assert limiter.take("b", 10) == 0  # from a full bucket: 6 - 10 = -4 tokens
    assert 49 < limiter.take("b") <= 50  # back to 1 token takes 5 × 10 s


def test_the_redis_bucket_refills_and_never_gives_more_than_its_capacity(own_redis: RedisServer):
    limiter = RedisRateLimiter(own_redis.url, "gan:t:ratelimit:jobs", 600)  # 10 tokens a second
    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:  # atomic: the capacity, and what refilled meanwhile
        waits = list(pool.map(lambda _: limiter.take("k"), range(640)))
    refilled = (time.monotonic() - started) * 10
    assert 600 <= sum(1 for w in waits if w == 0) <= 600 + refilled + 1
    assert 0 < limiter.take("k") <= 0.1
    time.sleep(0.25)
    assert limiter.take("k") == 0


def test_redis_down_counts_in_the_process_and_comes_back(own_redis: RedisServer):
    limiter = RedisRateLimiter(own_redis.url, "gan:t:ratelimit:bad-keys", 2, recheck_s=0.2)
    assert limiter.take("10.0.0.1") == 0
    own_redis.stop()
    started = time.monotonic()
    waits = [limiter.take("10.0.0.1") for _ in range(3)]
    assert waits[:2] == [0, 0] and waits[2] > 0  # the process's bucket holds the limit meanwhile
    assert time.monotonic() - started < 2  # no request waits out a timeout per call
    own_redis.start()
    time.sleep(0.3)
    assert limiter.take("10.0.0.1") == 0  # Redis again: a fresh server, a full bucket
    assert own_redis.client().exists("gan:t:ratelimit:bad-keys:10.0.0.1")


@pytest.mark.parametrize(
    ("broker", "kind"), [("filesystem://", LocalRateLimiter), ("redis://h:1/0", RedisRateLimiter)]
)
def test_the_broker_chooses_where_limits_are_kept(broker: str, kind: type) -> None:
    settings = Settings(broker_url=broker, task_queue="q", jobs_per_minute=7)
    limiter = rate_limiter(settings, "jobs")
    assert isinstance(limiter, kind)
    assert rate_limiter(settings, "jobs") is limiter  # one per process, shared by requests
    assert rate_limiter(settings, "bad-keys") is not limiter


def test_a_redis_that_never_answers_costs_one_timeout_then_none():
    with socket.socket() as hung:  # connections queue in its backlog; nothing ever answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        url = f"redis://127.0.0.1:{hung.getsockname()[1]}/0"
        limiter = RedisRateLimiter(url, "gan:t:ratelimit:jobs", 1)
        started = time.monotonic()
        assert limiter.take("k") == 0  # the process's bucket, after one timeout
        assert REDIS_TIMEOUT_S <= time.monotonic() - started < REDIS_TIMEOUT_S + 1
        started = time.monotonic()
        assert limiter.take("k") > 0  # at once, until RECHECK_S has passed
        assert time.monotonic() - started < 0.1

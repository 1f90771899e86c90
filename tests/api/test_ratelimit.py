"""The token buckets of api.ratelimit: a sweep takes as many tokens as it has jobs."""

import pytest

from api.ratelimit import RateLimiter


def test_a_cost_takes_that_many_tokens_or_says_how_long_to_wait():
    limiter = RateLimiter(per_minute=6)  # a token every 10 s
    assert limiter.take("k", 4) == 0.0
    assert limiter.take("k", 3) == pytest.approx(10.0, abs=0.5)  # 2 left, 1 more needed
    assert limiter.take("k", 2) == 0.0
    assert limiter.take("other", 6) == 0.0  # each key its own bucket


def test_a_cost_above_the_capacity_is_taken_from_a_full_bucket_leaving_it_in_debt():
    limiter = RateLimiter(per_minute=6)
    assert limiter.take("k", 9) == 0.0
    assert limiter.wait("k") == pytest.approx(40.0, abs=0.5)  # from -3 tokens back to 1
    assert limiter.take("k", 9) == pytest.approx(90.0, abs=0.5)  # needs a full bucket again

from worker.broker import is_embedded, is_redis


def test_broker_kinds_are_told_apart_by_url():
    assert is_embedded("filesystem://") and not is_redis("filesystem://")
    for url in ("redis://127.0.0.1:6379/0", "rediss://user:pw@redis.example:6380/1"):
        assert is_redis(url) and not is_embedded(url)
    assert not is_embedded("amqp://guest@localhost//") and not is_redis("amqp://guest@localhost//")

"""Several API processes as real processes: two `gan serve` on different ports sharing a Redis
broker share their rate limits (and keep limiting per process while that Redis is down), and
`gan serve --processes 2` serves the sum of both processes' own metrics at every scrape."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from harness.services import RedisServer, Service, free_port, wait_for

KEY = "a-valid-key"
SPEC = {"preset": "classic", "max_steps": 5}


def post_job(url: str, key: str = KEY) -> httpx.Response:
    return httpx.post(f"{url}/jobs", json=SPEC, headers={"X-API-Key": key}, timeout=10)


def live(url: str) -> bool:
    try:
        return httpx.get(f"{url}/livez", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def list_jobs(url: str, key: str) -> int:
    return httpx.get(f"{url}/jobs", headers={"X-API-Key": key}, timeout=10).status_code


def test_two_api_processes_share_a_keys_budget_in_redis(tmp_path: Path, own_redis: RedisServer):
    service = Service(
        tmp_path,
        {
            "GAN_DATABASE_URL": f"sqlite:///{tmp_path / 'gan.db'}",
            "GAN_BROKER_URL": own_redis.url,
            "GAN_API_KEYS": KEY,
            "GAN_JOBS_PER_MINUTE": "2",
            "GAN_BAD_KEYS_PER_MINUTE": "2",
        },
    )
    try:
        first, second = service.url, f"http://127.0.0.1:{free_port()}"
        service.start("serve", "--no-worker", "--port", str(service.port))
        service.start("serve", "--no-worker", "--port", second.rsplit(":", 1)[1])
        wait_for(lambda: live(first) and live(second), 60, "both API processes to answer")

        assert [post_job(first).status_code, post_job(first).status_code] == [202, 202]
        refused = post_job(second)  # the first process spent the key's budget
        assert refused.status_code == 429, refused.text
        assert 25 < float(refused.headers["Retry-After"]) <= 30  # a job every 30 s

        assert [list_jobs(first, "guess-1"), list_jobs(second, "guess-2")] == [401, 401]
        assert list_jobs(first, "guess-3") == 429  # the address's budget, spent on both
        assert list_jobs(second, KEY) == 200  # a valid key from it still works

        own_redis.stop()  # each process counts in its own bucket until Redis is back: no 500
        assert [list_jobs(second, f"guess-{i}") for i in range(4, 7)] == [401, 401, 429]
        assert list_jobs(second, KEY) == 200
    finally:
        service.stop()


def sampling_count(url: str) -> float:
    """``gan_sampling_latency_seconds_count`` of the 4xx answers, as one scrape reports it."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "gan_sampling_latency_seconds"
        for sample in family.samples
        if sample.name.endswith("_count") and sample.labels["status"] == "4xx"
    )


def test_metrics_sum_every_api_processs_own(tmp_path: Path):
    folder = tmp_path / "metrics"
    # Eight sample requests at once: each process admits them all (the default is its cores).
    env = {"PROMETHEUS_MULTIPROC_DIR": str(folder), "GAN_MAX_SAMPLINGS": "8"}
    service = Service(tmp_path, env)
    try:
        service.serve("--no-worker", "--processes", "2")
        sent = 0

        def both_processes_answered() -> bool:
            nonlocal sent
            url = f"{service.url}/jobs/no-such-job/samples"
            with ThreadPoolExecutor(8) as pool:  # new connections at once, for both to accept
                answers = list(pool.map(lambda _: httpx.get(url, timeout=10), range(8)))
            assert {a.status_code for a in answers} == {404}
            sent += len(answers)
            return len(list(folder.glob("histogram_*.db"))) == 2  # a file per process

        wait_for(both_processes_answered, 30, "requests served by both API processes")
        assert [sampling_count(service.url) for _ in range(8)] == [sent] * 8
    finally:
        service.stop()
    assert folder.is_dir()  # the operator's folder is kept (emptied at the next start)

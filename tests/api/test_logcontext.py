"""Requests about a job log with its id."""

from fastapi.testclient import TestClient
from starlette.responses import PlainTextResponse

from api.logcontext import JobLogContext
from worker.logs import current_job_id


def test_requests_on_a_job_log_with_its_id():
    seen = []

    async def endpoint(scope, receive, send):
        seen.append(current_job_id())
        await PlainTextResponse("ok")(scope, receive, send)

    client = TestClient(JobLogContext(endpoint))
    for path in ("/jobs/abc", "/jobs/abc/samples", "/jobs", "/jobs/", "/presets/abc"):
        client.get(path)
    assert seen == ["abc", "abc", None, None, None]
    assert current_job_id() is None

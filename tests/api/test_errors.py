"""A job store that cannot be reached is a 503 to retry on every route that reads it, never a
500, and the OpenAPI document says so (tests/reliability/test_api_store_outage.py stops a real
PostgreSQL under a running API)."""

from api.deps import STORE_DOWN
from api.main import app
from harness.services import free_port
from worker.settings import get_settings


def test_a_job_store_that_does_not_answer_is_a_503_to_retry(client, settings):
    nothing_listens = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test"
    app.dependency_overrides[get_settings] = lambda: settings.model_copy(
        update={"database_url": nothing_listens}
    )
    for method, path in [("GET", "/jobs"), ("POST", "/jobs"), ("GET", "/jobs/x/events"),
                         ("GET", "/workers")]:  # fmt: skip
        response = client.request(method, path, json={"dataset": "ring8"})
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == "5"
        assert response.json() == {"detail": "the job store is unreachable; retry in 5 s"}
    assert client.get("/livez").status_code == 200


def test_openapi_documents_the_503_of_every_route_that_reads_the_store(client):
    paths = client.get("/openapi.json").json()["paths"]
    store_routes = [(p, op) for p, ops in paths.items() for op in ops.values()
                    if p.startswith(("/jobs", "/datasets", "/workers"))]  # fmt: skip
    assert len(store_routes) >= 15
    for path, operation in store_routes:
        assert STORE_DOWN in operation["responses"]["503"]["description"], path

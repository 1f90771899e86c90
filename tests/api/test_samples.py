import io
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch.testing import assert_close

from gan.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from gan.config import from_dict
from gan.data import load_dataset
from gan.sample import decode, generate, latent, load_generator
from gan.train import train
from tests.conftest import first
from tests.gan.test_sample import as_int


def train_job_briefly(client, settings, steps: int = 3, **spec) -> str:
    """A job created through the API, with a checkpoint written the way the worker writes it."""
    job = client.post("/jobs", json={"max_steps": steps, "log_every": 1, **spec}).json()
    config = from_dict(job["config"])
    dataset = first(load_dataset(config.dataset, settings.data_dir, download=False), 256)
    train(config, dataset, settings.checkpoint_dir(job["id"]))
    return job["id"]


def test_no_checkpoint_yet_is_409(client):
    job = client.post("/jobs", json={"max_steps": 10, "checkpoint_every": 5}).json()
    response = client.get(f"/jobs/{job['id']}/samples")
    assert response.status_code == 409
    assert (
        "no checkpoint yet" in response.json()["detail"] and "step 5" in response.json()["detail"]
    )


def test_png_grid_is_deterministic_per_seed(client, settings):
    job_id = train_job_briefly(client, settings)
    first = client.get(f"/jobs/{job_id}/samples?n=64&seed=0")
    assert first.status_code == 200, first.text
    assert first.headers["content-type"] == "image/png"
    assert first.headers["x-checkpoint-step"] == "3" and first.headers["x-checkpoint"] == "latest"
    image = Image.open(io.BytesIO(first.content))
    assert image.size == (242, 242) and image.mode == "L"  # 8x8 digits of 28 px, 2 px borders
    assert client.get(f"/jobs/{job_id}/samples?n=64&seed=0").content == first.content
    assert client.get(f"/jobs/{job_id}/samples?n=64&seed=1").content != first.content


def test_npy_is_the_raw_uint8_array(client, settings):
    job_id = train_job_briefly(client, settings)
    response = client.get(f"/jobs/{job_id}/samples?n=10&seed=3&format=npy")
    assert response.status_code == 200
    array = np.load(io.BytesIO(response.content), allow_pickle=False)
    assert array.shape == (10, 28, 28) and array.dtype == np.uint8
    png = client.get(f"/jobs/{job_id}/samples?n=10&seed=3").content
    grid = np.asarray(Image.open(io.BytesIO(png)))
    assert np.array_equal(grid[2:30, 2:30], array[0])  # the grid shows the same digits


def test_sample_parameters_are_validated(client, settings):
    job_id = train_job_briefly(client, settings)
    for query, field in (
        ("n=0", "n"),
        ("n=5000", "n"),
        ("seed=-1", "seed"),
        ("format=gif", "format"),
    ):
        response = client.get(f"/jobs/{job_id}/samples?{query}")
        assert response.status_code == 422
        assert ["query", field] in [e["loc"] for e in response.json()["detail"]]


def test_colour_and_point_datasets_sample_as_pictures(client, settings):
    stacked = train_job_briefly(client, settings, dataset="stacked-mnist")
    response = client.get(f"/jobs/{stacked}/samples?n=4&format=npy")
    assert np.load(io.BytesIO(response.content)).shape == (4, 3, 28, 28)
    grid = Image.open(io.BytesIO(client.get(f"/jobs/{stacked}/samples?n=4").content))
    assert grid.mode == "RGB" and grid.size == (62, 62)

    ring = train_job_briefly(client, settings, dataset="ring8")
    points = np.load(io.BytesIO(client.get(f"/jobs/{ring}/samples?n=50&format=npy").content))
    assert points.shape == (50, 2) and points.dtype == np.float32
    scatter = Image.open(io.BytesIO(client.get(f"/jobs/{ring}/samples?n=50").content))
    assert scatter.mode == "L" and np.asarray(scatter).max() == 255  # white dots drawn
    for job_id, shape in ((stacked, (2, 3, 3, 28, 28)), (ring, (2, 3, 2))):
        walks = client.get(f"/jobs/{job_id}/interpolation?rows=2&steps=3&format=npy").content
        assert np.load(io.BytesIO(walks)).shape == shape
        assert client.get(f"/jobs/{job_id}/interpolation?rows=2&steps=3").status_code == 200


def job_with_a_best_checkpoint(client, settings) -> str:
    """A job with checkpoints at steps 2 and 4 and, as the trainer keeps it, best.pt: step 2's."""
    job_id = train_job_briefly(client, settings, steps=4, checkpoint_every=2, keep_checkpoints=5)
    directory = settings.checkpoint_dir(job_id)
    save_checkpoint(load_checkpoint(checkpoint_path(directory, 2)), directory / "best.pt")
    return job_id


def sample(client, job_id, query=""):
    response = client.get(f"/jobs/{job_id}/samples?n=16&format=npy&{query}")
    assert response.status_code == 200, response.text
    headers = (response.headers["x-checkpoint"], int(response.headers["x-checkpoint-step"]))
    return headers, response.content


def test_samples_default_to_the_best_checkpoint(client, settings):
    job_id = job_with_a_best_checkpoint(client, settings)
    (kind, step), default = sample(client, job_id)
    assert (kind, step) == ("best", 2)
    assert sample(client, job_id, "checkpoint=best") == (("best", 2), default)
    assert sample(client, job_id, "checkpoint=2") == (("step", 2), default)  # the same weights
    (kind, step), latest = sample(client, job_id, "checkpoint=latest")
    assert (kind, step) == ("latest", 4) and latest != default
    assert sample(client, job_id, "checkpoint=4") == (("step", 4), latest)
    # Step 2's file pruned: best.pt still has its weights.
    checkpoint_path(settings.checkpoint_dir(job_id), 2).unlink()
    assert sample(client, job_id, "checkpoint=2") == (("step", 2), default)


def test_without_a_best_checkpoint_samples_are_the_latest(client, settings):
    job_id = train_job_briefly(client, settings, steps=4, checkpoint_every=2)
    assert sample(client, job_id)[0] == ("latest", 4)
    response = client.get(f"/jobs/{job_id}/samples?checkpoint=best")
    assert response.status_code == 404
    assert "no best checkpoint" in response.json()["detail"]
    assert "on disk: steps 2, 4" in response.json()["detail"]


def test_a_checkpoint_not_on_disk_is_404_naming_those_that_are(client, settings):
    job_id = job_with_a_best_checkpoint(client, settings)
    response = client.get(f"/jobs/{job_id}/samples?checkpoint=3")
    assert response.status_code == 404
    detail = response.json()["detail"]
    assert "no checkpoint at step 3" in detail and "steps 2, 4 and best (step 2)" in detail
    empty = client.post("/jobs", json={"max_steps": 10}).json()["id"]
    for checkpoint, status in (("best", 404), ("7", 404), ("latest", 409)):
        response = client.get(f"/jobs/{empty}/samples?checkpoint={checkpoint}")
        assert response.status_code == status, (checkpoint, response.text)


def test_bad_checkpoint_values_are_422_naming_checkpoint(client, settings):
    job_id = train_job_briefly(client, settings)
    for value in ("newest", "-1", "1.5", "", "%C2%B2", "1e3", "9" * 30, "best%20"):
        response = client.get(f"/jobs/{job_id}/samples?checkpoint={value}")
        assert response.status_code == 422, (value, response.text)
        [error] = response.json()["detail"]
        assert error["loc"] == ["query", "checkpoint"], error
    message = client.get(f"/jobs/{job_id}/samples?checkpoint=newest").json()["detail"][0]["msg"]
    assert '"latest", "best" or a non-negative integer' in message


def npy(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.load(io.BytesIO(response.content), allow_pickle=False)


def query_errors(response) -> list[tuple[list, str]]:
    """(loc, msg) of each error of a 422."""
    assert response.status_code == 422, response.text
    return [(error["loc"], error["msg"]) for error in response.json()["detail"]]


def test_label_draws_classes_of_a_conditional_model(client, settings):
    job_id = train_job_briefly(client, settings, preset="stable-conditional")
    url = f"/jobs/{job_id}/samples?format=npy&seed=5"
    G, _, _ = load_generator(checkpoint_path(settings.checkpoint_dir(job_id), 3))
    sevens = npy(client.get(f"{url}&n=6&label=7"))
    assert np.array_equal(sevens, generate(G, 6, 5, torch.full((6,), 7)))
    default = npy(client.get(f"{url}&n=6"))  # classes 0, 1, …, 5
    assert np.array_equal(default, generate(G, 6, 5)) and not np.array_equal(default, sevens)

    rows = npy(client.get(f"{url}&label=rows&nrow=3&n=1000"))  # n is not the count
    assert rows.shape == (30, 28, 28)
    for k in range(10):  # row k is class k, the same latents down each column
        one_class = npy(client.get(f"{url}&n=3&label={k}"))
        assert_close(as_int(rows[3 * k : 3 * k + 3]), as_int(one_class), rtol=0, atol=1)
    grid = Image.open(io.BytesIO(client.get(f"/jobs/{job_id}/samples?label=rows&nrow=3").content))
    assert grid.size == (2 + 3 * 30, 2 + 10 * 30)  # 3 per row, 10 rows

    for label in (10, 99):
        [(loc, message)] = query_errors(client.get(f"{url}&label={label}"))
        assert loc == ["query", "label"] and "from 0 to 9" in message
    [(loc, message)] = query_errors(client.get(f"{url}&label=rows&nrow=103"))
    assert loc == ["query", "nrow"] and "at most 102" in message
    walk = npy(client.get(f"/jobs/{job_id}/interpolation?format=npy&steps=3&label=7"))
    seven = npy(client.get(f"/jobs/{job_id}/samples?format=npy&n=1&seed=0&label=7"))
    assert_close(as_int(walk[0, 0]), as_int(seven[0]), rtol=0, atol=1)
    [(loc, _)] = query_errors(client.get(f"/jobs/{job_id}/interpolation?label=10"))
    assert loc == ["query", "label"]


def test_label_on_an_unconditional_model_is_422_naming_label(client, settings):
    job_id = train_job_briefly(client, settings)
    for path in ("samples?label=0", "samples?label=rows", "interpolation?label=0"):
        [(loc, message)] = query_errors(client.get(f"/jobs/{job_id}/{path}"))
        assert loc == ["query", "label"] and "not conditional" in message, message
    for value in ("-1", "x", "1.5", "%C2%B2", "Rows", ""):
        [(loc, _)] = query_errors(client.get(f"/jobs/{job_id}/samples?label={value}"))
        assert loc == ["query", "label"], value


def test_ema_picks_the_moving_average_or_the_raw_generator(client, settings):
    stable = train_job_briefly(client, settings, preset="stable")
    url = f"/jobs/{stable}/samples?n=16&format=npy"
    ema, raw = client.get(url), client.get(f"{url}&ema=false")
    assert (ema.headers["x-generator"], raw.headers["x-generator"]) == ("ema", "raw")
    assert ema.content != raw.content and client.get(f"{url}&ema=true").content == ema.content
    classic = train_job_briefly(client, settings)  # keeps no EMA: raw weights either way
    both = [client.get(f"/jobs/{classic}/samples?n=16&format=npy&ema={flag}") for flag in (1, 0)]
    assert [r.headers["x-generator"] for r in both] == ["raw", "raw"]
    assert both[0].content == both[1].content


def test_truncation_trades_variety_for_typical_samples(client, settings):
    job_id = train_job_briefly(client, settings)
    url = f"/jobs/{job_id}/samples?n=64&format=npy"
    plain, truncated = npy(client.get(url)), npy(client.get(f"{url}&truncation=0.5"))
    assert not np.array_equal(plain, truncated)
    assert np.array_equal(truncated, npy(client.get(f"{url}&truncation=0.5")))
    G, _, _ = load_generator(checkpoint_path(settings.checkpoint_dir(job_id), 3))
    assert np.array_equal(truncated, decode(G, latent(64, G.latent_dim, 0, truncation=0.5)))
    assert truncated.std(axis=0).mean() < plain.std(axis=0).mean()  # less varied
    assert client.get(f"{url}&truncation=4").status_code == 200
    for value in ("0", "-1", "4.5", "nan", "inf", "x"):
        [(loc, _)] = query_errors(client.get(f"{url}&truncation={value}"))
        assert loc == ["query", "truncation"], value


def test_nrow_sets_the_grid_width(client, settings):
    job_id = train_job_briefly(client, settings)
    for nrow, size in (("", (122, 92)), ("6", (182, 62)), ("12", (362, 32)), ("1", (32, 362))):
        response = client.get(f"/jobs/{job_id}/samples?n=12&nrow={nrow}".removesuffix("&nrow="))
        assert Image.open(io.BytesIO(response.content)).size == size, nrow
    for value in ("0", "1025"):
        [(loc, _)] = query_errors(client.get(f"/jobs/{job_id}/samples?nrow={value}"))
        assert loc == ["query", "nrow"]


def test_etag_is_a_hash_of_the_checkpoint_file_and_parameters(client, settings):
    job_id = job_with_a_best_checkpoint(client, settings)
    url = f"/jobs/{job_id}/samples?n=16"
    first_response = client.get(url)
    etag = first_response.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')  # strong
    assert first_response.headers["cache-control"] == "no-cache"
    assert client.get(url).headers["etag"] == etag
    assert client.get(f"{url}&nrow=4&ema=true&format=png").headers["etag"] == etag  # defaults
    changes = ("seed=1", "format=npy", "ema=false", "truncation=1", "nrow=8", "n=15",
               "checkpoint=latest", "checkpoint=2", "checkpoint=4")  # fmt: skip
    etags = {client.get(f"{url}&{change}").headers["etag"] for change in changes}
    assert len(etags) == len(changes) and etag not in etags
    assert client.get(f"{url}&checkpoint=best").headers["etag"] == etag  # the default's file
    walk = client.get(f"/jobs/{job_id}/interpolation").headers["etag"]
    assert walk == client.get(f"/jobs/{job_id}/interpolation").headers["etag"]
    assert walk != client.get(f"/jobs/{job_id}/interpolation?steps=9").headers["etag"]


def fail_if_called(*args, **kwargs):
    raise AssertionError("generated samples for a 304")


@pytest.mark.parametrize("path", ["samples?n=16&seed=3", "interpolation?rows=2&format=npy"])
def test_if_none_match_is_304_without_generating(client, settings, monkeypatch, path):
    job_id = train_job_briefly(client, settings)
    url = f"/jobs/{job_id}/{path}"
    etag = client.get(url).headers["etag"]
    assert client.get(url, headers={"If-None-Match": '"other"'}).status_code == 200
    with monkeypatch.context() as patch:
        patch.setattr("gan.sample.decode", fail_if_called)
        for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            response = client.get(url, headers={"If-None-Match": header})
            assert response.status_code == 304 and response.content == b"", header
            assert response.headers["etag"] == etag
            assert response.headers["cache-control"] == "no-cache"
    # Training rewrote the checkpoint (a new mtime): a new ETag, and the new bytes.
    path_on_disk = checkpoint_path(settings.checkpoint_dir(job_id), 3)
    stat = path_on_disk.stat()
    os.utime(path_on_disk, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    response = client.get(url, headers={"If-None-Match": etag})
    assert response.status_code == 200 and response.headers["etag"] != etag


def test_interpolation_walks_from_seed_from_to_seed_to(client, settings):
    job_id = train_job_briefly(client, settings)
    url = f"/jobs/{job_id}/interpolation?seed_from=3&seed_to=8&steps=5&rows=2"
    response = client.get(f"{url}&format=npy")
    walks = npy(response)
    assert walks.shape == (2, 5, 28, 28) and walks.dtype == np.uint8
    assert response.headers["x-checkpoint-step"] == "3" and response.headers["x-generator"] == "raw"
    for r in range(2):  # the ends are the one-sample draws of the seeds
        for column, seed in ((0, 3 + r), (-1, 8 + r)):
            one = npy(client.get(f"/jobs/{job_id}/samples?n=1&format=npy&seed={seed}"))[0]
            assert_close(as_int(walks[r, column]), as_int(one), rtol=0, atol=1)
    assert not np.array_equal(walks[0, 0], walks[0, 1])
    png = client.get(url)
    assert png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size == (2 + 5 * 30, 2 + 2 * 30)
    truncated = npy(client.get(f"{url}&format=npy&truncation=0.5"))
    assert not np.array_equal(truncated, walks)
    for query, field in (
        ("steps=1", "steps"),
        ("steps=65", "steps"),
        ("rows=0", "rows"),
        ("rows=33", "rows"),
        ("seed_from=-1", "seed_from"),
        ("seed_to=x", "seed_to"),
        ("truncation=0", "truncation"),
        ("format=gif", "format"),
        ("checkpoint=newest", "checkpoint"),
    ):
        response = client.get(f"/jobs/{job_id}/interpolation?{query}")
        assert ["query", field] in [loc for loc, _ in query_errors(response)], query
    empty = client.post("/jobs", json={"max_steps": 10}).json()["id"]
    assert client.get(f"/jobs/{empty}/interpolation").status_code == 409


def test_openapi_documents_the_sampling_parameters_and_headers(client):
    spec = client.get("/openapi.json").json()
    for path, names in (
        ("samples", {"n", "seed", "format", "checkpoint", "label", "ema", "truncation", "nrow"}),
        ("interpolation", {"seed_from", "seed_to", "steps", "rows", "format", "checkpoint",
                           "label", "ema", "truncation"}),
    ):  # fmt: skip
        operation = spec["paths"][f"/jobs/{{job_id}}/{path}"]["get"]
        parameters = {p["name"]: p for p in operation["parameters"] if p["in"] == "query"}
        assert set(parameters) == names
        assert all(parameters[name]["description"] for name in names)
        ok = operation["responses"]["200"]
        assert {"image/png", "application/octet-stream"} <= set(ok["content"])
        assert {"ETag", "Cache-Control", "X-Generator", "X-Checkpoint"} <= set(ok["headers"])
        assert "304" in operation["responses"]


def test_rendered_responses_are_made_once_per_etag_within_the_byte_budget(monkeypatch):
    from api import sampling

    monkeypatch.setattr(sampling, "RENDERED_BYTES", 10)
    monkeypatch.setattr(sampling, "_rendered", type(sampling._rendered)())
    monkeypatch.setattr(sampling, "_rendered_size", 0)
    made = []

    def render(body: bytes):
        def make():
            made.append(body)
            return body, {"x": len(made)}

        return make

    assert sampling.rendered('"a"', render(b"aaaa")) == (b"aaaa", {"x": 1})
    assert sampling.rendered('"a"', render(b"other")) == (b"aaaa", {"x": 1})  # cached
    sampling.rendered('"b"', render(b"bbbb"))
    sampling.rendered('"c"', render(b"cccc"))  # 12 bytes > 10: the oldest ("a") goes
    assert sampling.rendered('"a"', render(b"AAAA"))[0] == b"AAAA"
    assert made == [b"aaaa", b"bbbb", b"cccc", b"AAAA"]
    sampling.rendered('"big"', render(b"x" * 11))  # over the budget alone: not kept
    assert '"big"' not in sampling._rendered


def test_a_burst_past_the_sampling_bound_is_refused_before_it_takes_a_thread(
    settings, postgres_url
):
    """Sample requests past GAN_MAX_SAMPLINGS are refused on the event loop as they arrive,
    even while none of the admitted ones generates yet (they wait in their key's lookup here),
    and a sync route is served meanwhile. Checking only how many generate let the whole burst
    into the key lookups, whose threads and database connections the other routes wait for."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from sqlalchemy import create_engine, text

    from api.slots import sampling_admissions
    from tests.conftest import app_client
    from worker.store.db import session_scope
    from worker.store.keys import create_api_key

    bounded = settings.model_copy(
        update={"database_url": postgres_url, "api_keys": ["probe"], "max_samplings": 2}
    )
    with session_scope(postgres_url) as session:
        _, stored = create_api_key(session, "burst")  # looked up in the api_keys table
    engine = create_engine(postgres_url)
    # The lock is let go (closed) before the pool waits for its requests, also when one fails.
    with app_client(bounded) as client, ThreadPoolExecutor(60) as pool, engine.connect() as lock:
        lock.execute(text("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE"))  # lookups wait
        headers = {"X-API-Key": stored}
        burst = [pool.submit(client.get, "/jobs/any/samples", headers=headers) for _ in range(60)]
        answered = []
        for done in as_completed(burst, timeout=120):  # 2 admitted wait for the lock
            answered.append(done)
            if len(answered) == 58:
                break
        refused = [f.result() for f in answered]
        assert {r.status_code for r in refused} == {503}
        assert all(int(r.headers["Retry-After"]) >= 1 for r in refused)
        assert "2 sample requests in progress at once" in refused[0].json()["detail"]
        probe = client.get("/jobs/none", headers={"X-API-Key": "probe"})  # needs no api_keys
        assert probe.status_code == 404
        lock.rollback()  # the admitted two are looked up: another key's job is not there
        admitted = [f.result(timeout=120) for f in burst if f not in answered]
    assert [r.status_code for r in admitted] == [404, 404]
    assert sampling_admissions(bounded).in_use == 0  # every place given back
    engine.dispose()

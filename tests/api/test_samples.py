import io

import numpy as np
from PIL import Image

from gan.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from gan.config import from_dict
from gan.data import load_dataset
from gan.train import train
from tests.conftest import first


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

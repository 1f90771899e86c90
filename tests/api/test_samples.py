import io

import numpy as np
from PIL import Image

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
    assert first.headers["x-checkpoint-step"] == "3"
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

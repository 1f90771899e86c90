import functools
import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from gan.config import DATASETS, UPLOAD_ID
from gan.data import load_dataset


def png(value: int, size: tuple[int, int] = (20, 20)) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, value).save(buffer, format="PNG")
    return buffer.getvalue()


def make_zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


DIGITS = make_zip({"zero/a.png": png(0), "zero/b.png": png(10), "one/c.png": png(255)})


def upload(client, archive: bytes = DIGITS, filename: str = "digits.zip", **form):
    files = {"file": (filename, archive, "application/zip")}
    return client.post("/datasets", files=files, data={k: str(v) for k, v in form.items()})


def test_upload_stores_a_dataset_the_trainer_can_load(client, settings):
    response = upload(client, name="my digits", channels=3, image_size=16)
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert UPLOAD_ID.fullmatch(dataset["id"])
    assert dataset["name"] == "my digits" and dataset["num_images"] == 3
    assert dataset["shape"] == [3, 16, 16]
    assert dataset["classes"] == ["one", "zero"] and dataset["num_classes"] == 2
    assert response.headers["location"] == dataset["links"]["self"]
    assert dataset["links"]["self"].endswith(f"/datasets/{dataset['id']}")
    assert client.get(f"/datasets/{dataset['id']}").json() == dataset

    loaded = load_dataset(dataset["id"], settings.data_dir, uploads_dir=settings.datasets_dir)
    assert loaded.shape == (3, 16, 16) and loaded.num_classes == 2
    np.testing.assert_array_equal(loaded.labels.numpy(), [1, 1, 0])  # sorted paths: one/ first
    assert loaded.data[2].float().mean() == 255  # one/c.png (white) has label 0


def test_upload_defaults(client):
    dataset = upload(client).json()
    assert dataset["name"] == "digits" and dataset["shape"] == [1, 28, 28]


def test_datasets_are_listed_newest_first(client):
    assert client.get("/datasets").json()["datasets"] == []
    ids = [upload(client, name=f"d{i}").json()["id"] for i in range(3)]
    listed = client.get("/datasets").json()["datasets"]
    assert [d["id"] for d in listed] == ids[::-1]


def test_the_list_has_the_datasets_known_by_name(client):
    builtin = client.get("/datasets").json()["builtin"]
    assert [d["name"] for d in builtin] == list(DATASETS)
    mnist = builtin[0]
    assert mnist["shape"] == [1, 28, 28] and mnist["num_classes"] == 10
    assert mnist["description"] == DATASETS["mnist"].description


@pytest.mark.parametrize("dataset_id", ["ds-" + "0" * 32, "trap", "ds-" + "0" * 32 + "%0A"])
def test_unknown_dataset_is_404(client, settings, dataset_id):
    good = upload(client).json()
    trap = settings.datasets_dir / "trap"  # a folder with a meta.json, but not a dataset id
    trap.mkdir()
    (trap / "meta.json").write_text(json.dumps({**good, "id": None, "links": None}))
    (settings.datasets_dir / ("ds-" + "0" * 32 + "\n")).symlink_to(
        settings.datasets_dir / good["id"]
    )
    response = client.get(f"/datasets/{dataset_id}")
    assert response.status_code == 404
    assert "no dataset with id" in response.json()["detail"]


@pytest.mark.parametrize(
    ("archive", "message"),
    [
        (make_zip({"../x.png": png(0)}), "outside the archive"),
        (make_zip({"a.png": png(0), "readme.txt": b"hi"}), "readme.txt is not a PNG"),
        (make_zip({"a.png": png(0)[:30]}), "a.png is a damaged image"),
        (make_zip({}), "no images"),
        (b"GIF89a not a zip", "not a valid zip archive"),
    ],
)
def test_invalid_archives_are_422_naming_the_file_field(client, settings, archive, message):
    response = upload(client, archive)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "file"] and message in error["msg"]
    assert not settings.datasets_dir.exists() or not list(settings.datasets_dir.iterdir())


def test_too_large_is_413(client, settings):
    response = upload(client, make_zip({"big.png": png(0, size=(4097, 4096))}))
    assert response.status_code == 413, response.text
    assert "4097x4096 pixels" in response.json()["detail"][0]["msg"]
    bomb = make_zip({"bomb.bmp": bytes(5 * 2**20)})
    response = upload(client, bomb)
    assert response.status_code == 413 and "zip bomb" in response.json()["detail"][0]["msg"]
    assert client.get("/datasets").json()["datasets"] == []


@pytest.mark.parametrize(
    ("form", "field"),
    [({"channels": 2}, "channels"), ({"image_size": 4}, "image_size"),
     ({"image_size": 129}, "image_size"), ({"channels": "one"}, "channels"),
     ({"name": "x" * 101}, "name")],
)  # fmt: skip
def test_bad_form_fields_are_422(client, form, field):
    response = upload(client, **form)
    assert response.status_code == 422, response.text
    assert [e["loc"][-1] for e in response.json()["detail"]] == [field]


def test_missing_file_is_422(client):
    response = client.post("/datasets", data={"name": "x"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "file"]


def test_cross_origin_upload_is_refused(client):
    files = {"file": ("d.zip", DIGITS, "application/zip")}
    response = client.post("/datasets", files=files, headers={"Origin": "https://evil.example"})
    assert response.status_code == 403
    same = client.post("/datasets", files=files, headers={"Origin": "http://testserver"})
    assert same.status_code == 201, same.text


def test_archive_over_the_size_limit_is_413(client, monkeypatch):
    from gan import data

    small = functools.partial(data.UploadLimits, max_archive_bytes=len(DIGITS) - 1)
    monkeypatch.setattr(data, "UploadLimits", small)
    response = upload(client)
    assert response.status_code == 413, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "file"] and "over the limit of" in error["msg"]


def test_bodies_over_the_limit_are_refused_before_they_are_read(client):
    from api.middleware import MAX_BODY_BYTES

    too_big = {"content-length": str(MAX_BODY_BYTES + 1), "content-type": "application/zip"}
    response = client.post("/datasets", content=b"x", headers=too_big)
    assert response.status_code == 413 and "limit" in response.json()["detail"]

    def chunks():
        yield b"x" * 10

    response = client.post("/datasets", content=chunks())  # chunked: no Content-Length
    assert response.status_code == 411
    assert client.get("/datasets").json()["datasets"] == []


def test_datasets_belong_to_the_key_that_uploaded_them(client, settings):
    from api.main import app
    from worker.settings import get_settings

    keyed = settings.model_copy(update={"api_keys": ("key-a", "key-b")})
    app.dependency_overrides[get_settings] = lambda: keyed
    files = {"file": ("digits.zip", DIGITS, "application/zip")}
    assert client.post("/datasets", files=files).status_code == 401
    as_a, as_b = {"X-API-Key": "key-a"}, {"X-API-Key": "key-b"}
    mine = client.post("/datasets", files=files, headers=as_a).json()["id"]
    assert [d["id"] for d in client.get("/datasets", headers=as_a).json()["datasets"]] == [mine]
    assert client.get("/datasets", headers=as_b).json()["datasets"] == []
    assert client.get(f"/datasets/{mine}", headers=as_b).status_code == 404
    refused = client.post("/jobs", json={"dataset": mine}, headers=as_b)
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "dataset"]
    assert client.post("/jobs", json={"dataset": mine}, headers=as_a).status_code == 202

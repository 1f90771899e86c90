"""GET /jobs/{id}/generator: each format loads without this project and draws the service's own
samples for the same latents."""

import io
import json
import re
import sys
from pathlib import Path
from typing import get_args

import numpy as np
import onnxruntime
import pytest
import torch
from torch.testing import assert_close

from api.routes import generator
from gan import export
from gan.checkpoint import checkpoint_path
from gan.data import to_uint8
from gan.sample import default_labels, latent
from tests.api.test_samples import npy, query_errors, train_job_briefly

README = Path(__file__).resolve().parents[2] / "README.md"
N, SEED = 6, 11


def readme_loader():
    """``load_generator`` of the README's Export section, run as the README shows it."""
    section = README.read_text().split("\n## Export", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, "no python block in the README's Export section"
    assert "def load_generator" in code.group(1) and "gan" not in re.findall(
        r"^(?:from|import) (\w+)", code.group(1), re.M
    )
    namespace: dict = {}
    exec(code.group(1), namespace)
    return namespace["load_generator"]


def run_export(data: bytes, format: str, z: torch.Tensor, y, tmp_path: Path):
    """(samples, metadata) of an exported generator, loaded the way a user would."""
    path = tmp_path / f"generator.{format}"
    path.write_bytes(data)
    if format == "safetensors":
        G, meta = readme_loader()(str(path))
        return G(z, y), meta
    if format == "onnx":
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feed = {"z": z.numpy()} | ({"y": y.numpy()} if y is not None else {})
        meta = session.get_modelmeta().custom_metadata_map
        return torch.from_numpy(session.run(None, feed)[0]), meta
    files = {"gan.json": ""}
    module = torch.jit.load(str(path), _extra_files=files)
    return (module(z, y) if y is not None else module(z)), json.loads(files["gan.json"])


FORMATS = ("safetensors", "onnx", "torchscript")


@pytest.mark.parametrize("preset", ["classic", "stable-conditional"])
def test_each_format_draws_the_services_samples(client, settings, tmp_path, preset):
    job_id = train_job_briefly(client, settings, preset=preset, eval_every=0)
    config = client.get(f"/jobs/{job_id}").json()["config"]
    k = 10 if preset == "stable-conditional" else 0
    z, y = latent(N, config["latent_dim"], SEED), (torch.arange(N) % k if k else None)
    served = npy(client.get(f"/jobs/{job_id}/samples?n={N}&seed={SEED}&format=npy"))
    for format in FORMATS:
        response = client.get(f"/jobs/{job_id}/generator?format={format}")
        assert response.status_code == 200, response.text
        assert response.headers["x-checkpoint-step"] == "3"
        weights = response.headers["x-generator"]  # classic keeps no EMA; stable does
        assert weights == ("ema" if k else "raw")
        extension = generator.EXTENSIONS[format]
        assert response.headers["content-disposition"].endswith(f'-step3-{weights}.{extension}"')
        samples, meta = run_export(response.content, format, z, y, tmp_path)
        mine = to_uint8(samples.detach()).squeeze(1)
        assert_close(mine.int(), torch.from_numpy(served).int(), rtol=0, atol=1)
        assert np.mean(mine.numpy() == served) > 0.99  # rounding ties aside, the same pixels
        assert meta["format"] == "gan-generator" and meta["weights"] == weights
        assert int(meta["latent_dim"]) == config["latent_dim"] and int(meta["num_classes"]) == k
        assert json.loads(meta["shape"]) == [1, 28, 28] and int(meta["step"]) == 3
        assert json.loads(meta["config"]) == config
    if k:
        check_conditional_exports(job_id, client, settings, tmp_path)


def check_conditional_exports(job_id, client, settings, tmp_path):
    """The float outputs of a conditional job's exports are its generator's for any batch size,
    and the safetensors header holds the network as plain weights and ops."""
    from gan.sample import load_generator

    G, _, _ = load_generator(checkpoint_path(settings.checkpoint_dir(job_id), 3))
    exports = {f: client.get(f"/jobs/{job_id}/generator?format={f}").content for f in FORMATS}
    for n in (1, 13):  # the export traced one batch size; any works
        z, y = latent(n, G.latent_dim, n), default_labels(G, n)
        with torch.no_grad():
            expected = G(z, y)
        for format, data in exports.items():
            samples, _ = run_export(data, format, z, y, tmp_path)
            assert_close(samples.detach(), expected, atol=2e-5, rtol=1e-4)
    file = io.BytesIO(exports["safetensors"])
    header = json.loads(file.read(int.from_bytes(file.read(8), "little")))
    ops = [op["op"] for op in json.loads(header["__metadata__"]["layers"])]
    assert ops[0] == "linear" and "class_affine" in ops and ops[-2:] == ["tanh", "reshape"]
    assert not any("parametrizations" in name for name in header)


def test_ema_false_exports_the_raw_generator(client, settings, tmp_path):
    job_id = train_job_briefly(client, settings, preset="stable", eval_every=0)
    url = f"/jobs/{job_id}/generator?format=torchscript"
    ema, raw = client.get(url), client.get(f"{url}&ema=false")
    assert (ema.headers["x-generator"], raw.headers["x-generator"]) == ("ema", "raw")
    z = latent(4, client.get(f"/jobs/{job_id}").json()["config"]["latent_dim"], 0)
    served = npy(client.get(f"/jobs/{job_id}/samples?n=4&seed=0&format=npy&ema=false"))
    samples, meta = run_export(raw.content, "torchscript", z, None, tmp_path)
    assert meta["weights"] == "raw"
    assert_close(to_uint8(samples).squeeze(1).int(), torch.from_numpy(served).int(), rtol=0, atol=1)
    again = client.get(url, headers={"If-None-Match": ema.headers["etag"]})
    assert again.status_code == 304


def test_bad_input_is_a_4xx_naming_the_parameter(client, settings):
    job_id = train_job_briefly(client, settings)
    [(loc, _)] = query_errors(client.get(f"/jobs/{job_id}/generator?format=pickle"))
    assert loc == ["query", "format"]
    [(loc, _)] = query_errors(client.get(f"/jobs/{job_id}/generator?checkpoint=newest"))
    assert loc == ["query", "checkpoint"]
    missing = client.get(f"/jobs/{job_id}/generator?checkpoint=99")
    assert missing.status_code == 404 and "steps 3" in missing.json()["detail"]
    assert client.get("/jobs/nope/generator").status_code == 404


def test_a_damaged_checkpoint_is_409_naming_it(client, settings):
    job_id = train_job_briefly(client, settings)
    path = checkpoint_path(settings.checkpoint_dir(job_id), 3)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    response = client.get(f"/jobs/{job_id}/generator?format=onnx&checkpoint=3")
    assert response.status_code == 409 and "step-00000003.pt" in response.json()["detail"]


def test_a_format_whose_package_is_missing_is_501_naming_it(client, settings, monkeypatch):
    job_id = train_job_briefly(client, settings)
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    response = client.get(f"/jobs/{job_id}/generator?format=onnx")
    assert response.status_code == 501
    assert "format onnx" in response.json()["detail"] and "'onnx'" in response.json()["detail"]
    assert client.get(f"/jobs/{job_id}/generator?format=torchscript").status_code == 200


def test_the_route_offers_the_formats_gan_exports():
    assert get_args(generator.Format) == export.FORMATS
    assert set(generator.EXTENSIONS) == set(export.FORMATS)


def test_no_checkpoint_yet_is_409(client):
    job = client.post("/jobs", json={"max_steps": 10, "checkpoint_every": 5}).json()
    response = client.get(f"/jobs/{job['id']}/generator")
    assert response.status_code == 409 and "no checkpoint yet" in response.json()["detail"]

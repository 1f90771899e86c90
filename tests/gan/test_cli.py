import io
import json
import re
import zipfile

import numpy as np
import pytest
from PIL import Image

from gan.checkpoint import latest_checkpoint, load_checkpoint
from gan.cli import main, parse_overrides


def test_train_then_sample_a_grid(tmp_path, mnist_dir, quick_mnist_judge, capsys):
    out = tmp_path / "run"
    judges = ["--judges", str(quick_mnist_judge.parent)]  # the end's evaluation: not ~/.cache's
    main(["train", "--preset", "classic", "--steps", "4", "--out", str(out), *judges,
          "--data-dir", str(mnist_dir), "--set", "log_every=2", "--set", "lr_d=1e-4"])  # fmt: skip
    checkpoint = latest_checkpoint(out)
    assert checkpoint is not None
    config = load_checkpoint(checkpoint)["config"]
    assert (config["max_steps"], config["lr_d"], config["log_every"]) == (4, 1e-4, 2)
    assert "4/4" in capsys.readouterr().err  # the progress bar reached the end

    main(["sample", str(checkpoint), "--n", "6", "--nrow", "3", "--out", str(tmp_path / "g.png")])
    assert Image.open(tmp_path / "g.png").size == (2 + 3 * 30, 2 + 2 * 30)
    main(["sample", str(checkpoint), "--n", "5", "--out", str(tmp_path / "x.npy")])
    assert np.load(tmp_path / "x.npy").shape == (5, 28, 28)


def test_train_prints_evaluations_and_evaluate_scores_a_checkpoint(
    tmp_path, mnist_dir, quick_mnist_judge, capsys
):
    out = tmp_path / "run"
    judges = ["--data-dir", str(mnist_dir), "--judges", str(quick_mnist_judge.parent)]
    evaluations = ["--set", "eval_every=2", "--set", "eval_samples=100"]
    main(["train", "--preset", "classic", "--steps", "4", "--out", str(out), *judges,
          "--set", "log_every=2", *evaluations])  # fmt: skip
    lines = [json.loads(m) for m in re.findall(r"\{.*\}", capsys.readouterr().err)]
    assert [line["step"] for line in lines] == [2, 4]
    assert all(line["fid"] > line["fid_baseline"] > 0 and line["coverage"] >= 1 for line in lines)

    main(["evaluate", str(out / "best.pt"), "--samples", "100", *judges])
    scored = json.loads(capsys.readouterr().out)
    best = min(lines, key=lambda line: line["fid"])
    assert scored["step"] == best["step"]
    # same latents and reals (seed 0 as the run's), same generator: the run's own figures
    assert scored["fid"] == pytest.approx(best["fid"], rel=1e-4)


def test_train_on_your_own_images(tmp_path, mnist_dir):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for label in ("a", "b"):
            for i in range(8):
                png = io.BytesIO()
                Image.fromarray(np.full((20, 20), 30 * i, np.uint8)).save(png, format="PNG")
                zf.writestr(f"{label}/{i}.png", png.getvalue())
    (tmp_path / "mine.zip").write_bytes(archive.getvalue())
    out = tmp_path / "run"
    main(["train", "--preset", "stable-conditional", "--steps", "2", "--out", str(out),
          "--images", str(tmp_path / "mine.zip"), "--set", "batch_size=8",
          "--set", "width=8", "--set", "image_size=16"])  # fmt: skip
    checkpoint = latest_checkpoint(out)
    assert checkpoint is not None
    state = load_checkpoint(checkpoint)
    assert state["data"] == {"shape": [1, 16, 16], "num_classes": 2}
    assert state["config"]["dataset"].startswith("ds-")
    rows = tmp_path / "rows.npy"  # a row of 3 per class, the same latent down each column
    main(["sample", str(checkpoint), "--label", "rows", "--nrow", "3", "--truncation", "1",
          "--out", str(rows)])  # fmt: skip
    samples = np.load(rows)
    assert samples.shape == (6, 16, 16) and not np.array_equal(samples[:3], samples[3:])


def test_bad_overrides_name_the_field(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--out", "x", "--set", "lr_d=fast"])
    assert "lr_d" in capsys.readouterr().err
    assert parse_overrides(["loss=hinge", "d_steps=3", "lr_g=1e-4"]) == {
        "loss": "hinge", "d_steps": 3, "lr_g": 1e-4,
    }  # fmt: skip

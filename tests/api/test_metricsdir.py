"""The folder `gan serve --processes N` shares its processes' metrics in."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from api.metricsdir import ENV, shared_metrics_dir


def test_one_process_keeps_its_metrics_in_memory(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(ENV, raising=False)
    with shared_metrics_dir(1) as folder:
        assert folder is None and ENV not in os.environ


def test_a_folder_of_its_own_is_made_for_the_processes_and_removed(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.delenv(ENV, raising=False)
    with shared_metrics_dir(2) as folder:
        assert folder is not None and folder.is_dir() and os.environ[ENV] == str(folder)
    assert not folder.exists() and ENV not in os.environ


def test_the_operators_folder_is_emptied_of_an_earlier_run_and_kept(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    (tmp_path / "histogram_123.db").write_bytes(b"an earlier run's counts")
    (tmp_path / "notes.txt").write_text("not ours")
    monkeypatch.setenv(ENV, str(tmp_path))
    with shared_metrics_dir(3) as folder:
        assert folder == tmp_path
        assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert tmp_path.is_dir() and os.environ[ENV] == str(tmp_path)

"""The report is a public contract: the same model gives the same report wherever it lies."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import write_pipeline
from tfbound.pipeline import estimate
from tfbound.report import to_json


def test_the_same_model_in_two_checkouts_gives_the_same_report(tmp_path: Path) -> None:
    first = write_pipeline(tmp_path / "a" / "model")
    data = first.parent / "data.npz"
    shared = tmp_path / "a" / "data"
    shared.mkdir()
    shutil.move(data, shared / "data.npz")  # data outside the config's folder
    text = first.read_text().replace("data.npz", "../data/data.npz")
    first.write_text(text)
    shutil.copytree(tmp_path / "a", tmp_path / "b" / "deeper")
    second = tmp_path / "b" / "deeper" / "model" / first.name
    one, two = to_json(estimate(first).to_dict()), to_json(estimate(second).to_dict())
    assert one == two
    assert str(tmp_path) not in one
    assert '"../data/data.npz"' in one

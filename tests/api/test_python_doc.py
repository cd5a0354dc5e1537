"""docs/python.md: every ```python block runs, in order, in one namespace (a notebook)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

DOC = REPO_ROOT / "docs" / "python.md"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def test_the_walk_through_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = BLOCK.findall(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 8
    (tmp_path / "sample_models").symlink_to(REPO_ROOT / "sample_models")
    monkeypatch.chdir(tmp_path)  # outputs (bounds.png, ce_mlp.json) land here
    namespace: dict[str, object] = {"__name__": "python_md"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice on workers and log intervals
        for i, code in enumerate(blocks):
            exec(compile(code, f"{DOC.name}[block {i}]", "exec"), namespace)  # noqa: S102
    assert (tmp_path / "bounds.png").stat().st_size > 1000
    assert (tmp_path / "ce_mlp.json").is_file()
    callback = namespace["callback"]
    assert [p.epoch for p in callback.monitor.checkpoints] == [1, 2]  # type: ignore[attr-defined]

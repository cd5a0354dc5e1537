"""The built wheel ships ``tfbound/py.typed`` (PEP 561), so type checkers read tfbound's hints."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

ROOT = REPO_ROOT


def test_the_wheel_ships_py_typed(tmp_path: Path) -> None:
    pytest.importorskip("setuptools", reason="the build backend is not installed")
    src = tmp_path / "src"  # a copy: building in place would write build/ into the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "tfbound", src / "tfbound", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "dist"
    build = "import sys; from setuptools import build_meta as b; b.build_wheel(sys.argv[1])"
    subprocess.run(
        [sys.executable, "-c", build, str(out)], cwd=src, check=True, capture_output=True
    )
    (wheel,) = out.glob("tfbound-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    assert "tfbound/py.typed" in names
    assert "tfbound/measures/rirc.py" in names

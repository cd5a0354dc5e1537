"""The public surface: what ``tfbound/__init__`` lists resolves, lazily, without torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tfbound
from tests.helpers import REPO_ROOT


def _run(code: str) -> None:
    env_path = str(REPO_ROOT)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={"PYTHONPATH": env_path, "PATH": ""},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr


def test_import_tfbound_loads_neither_torch_nor_numpy() -> None:
    _run(
        "import tfbound, sys; assert 'torch' not in sys.modules; assert 'numpy' not in sys.modules"
    )


def test_reading_a_report_loads_no_torch(tmp_path: Path) -> None:
    """``check`` and ``compare`` read reports: Report.read, repr and to_json stay torch-free."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(60, 3))
    y = (z[:, 0] > 0).astype(float)
    path = tmp_path / "r.json"
    tfbound.certify(z, y, [1.0, 0.0, 0.0], 0.0, n_draws=200).write(path)
    _run(
        "import tfbound, sys\n"
        f"r = tfbound.Report.read({str(path)!r})\n"
        "assert 'certified_test_error_bound' in repr(r) or r.bounds, repr(r)\n"
        "r.to_json()\n"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )


@pytest.mark.parametrize("name", tfbound.__all__)
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(tfbound, name) is not None
    assert name in dir(tfbound)


def test_unknown_names_are_attribute_errors() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        tfbound.nope  # noqa: B018


def test_the_package_ships_its_type_hints() -> None:
    assert (REPO_ROOT / "tfbound" / "py.typed").is_file()


def test_tfbound_inspect_is_the_module_and_the_function() -> None:
    import tfbound.inspect as ti
    from tfbound.api import inspect

    assert tfbound.inspect is ti and callable(ti)
    assert ti.inspect_module is not None  # still the module
    assert inspect is not ti

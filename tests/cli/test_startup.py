"""Commands that read JSON (check, compare, schema) and --help/--version start without torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

REPORT = REPO_ROOT / "tests" / "golden" / "inputs" / "ce_mlp.json"
OTHER = REPO_ROOT / "tests" / "golden" / "inputs" / "mae_vit.json"

PROBE = """
import runpy, sys
sys.argv = ["tfbound", *{args!r}]
try:
    runpy.run_module("tfbound", run_name="__main__")
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in ("torch", "numpy", "safetensors", "matplotlib") if m in sys.modules)
print("CODE", code, "HEAVY", ",".join(heavy) or "-")
"""


def _heavy_imports(*args: str) -> tuple[str, str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(args=list(args))],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("CODE"))
    _, code, _, heavy = line.split()
    return code, heavy


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        ("--version",),
        ("schema",),
        ("compare", str(REPORT), str(OTHER)),
        ("check", str(REPORT), "--gates", "GATES"),
        ("estimate", "--help"),
    ],
)
def test_json_commands_and_help_do_not_import_torch(args: tuple[str, ...], tmp_path: Path) -> None:
    gates = tmp_path / "gates.yaml"
    gates.write_text('gates:\n  best_certified_test_error_bound: "<= 0.6"\n')
    code, heavy = _heavy_imports(*(str(gates) if a == "GATES" else a for a in args))
    assert code in ("0", "None"), code
    assert heavy == "-", f"{args[0]} imported {heavy}"

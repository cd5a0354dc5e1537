"""The one typed reader of saved reports (``tfbound.report.read_report``): every term is checked,
so ``check`` refuses a malformed report even where no gate looks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import write_pipeline
from tests.helpers import run_cli
from tfbound.errors import InputError
from tfbound.pipeline import estimate
from tfbound.report import Report, read_report, to_json


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("reader")
    return to_json(estimate(write_pipeline(folder / "p")).to_dict())


def test_a_saved_report_reads_back_to_the_same_report(saved: str, tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text(saved)
    report = Report.read(path)
    assert to_json(report.to_dict()) == saved
    best = report.get("best_certified_test_error_bound")
    assert best is not None and str(best.role) == "headline"


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda t: t.replace('"value": 0.', '"value": NaN, "x": 0.', 1), "NaN"),
        (lambda t: t.replace('"stderr": ', '"stderr": Infinity, "y": ', 1), "Infinity"),
        (lambda t: t.replace('"value": 0.', '"value": 1e400, "x": 0.', 1), "out of range"),
        (lambda t: t.replace('"status": "estimated"', '"status": "sure"', 1), "status or role"),
        (lambda t: re.sub(r'"formula": "[^"]*"', '"formula": 3', t, count=1), "formula"),
        (
            lambda t: "[" * 100_000 + "]" * 100_000,
            "nested (too deeply|more than)|not a tfbound report",
        ),
    ],
)
def test_malformed_reports_are_refused_with_one_line(
    saved: str,
    tmp_path: Path,
    edit,
    needle: str,  # type: ignore[no-untyped-def]
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(edit(saved))
    with pytest.raises(InputError, match=needle):
        read_report(path)
    gates = tmp_path / "gates.toml"
    gates.write_text("[tool.tfbound.gates]\ncertified_test_error_bound = '<= 10'\n")
    code, out, err = run_cli("check", str(path), "--gates", str(gates))
    assert code == 3 and out == "" and len(err.strip().splitlines()) == 1


def test_a_bad_value_in_an_ungated_term_still_fails_check(saved: str, tmp_path: Path) -> None:
    data = json.loads(saved)
    data["terms"]["capacity_ratio"]["interval"] = ["a", 1]  # a term no gate reads
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    gates = tmp_path / "gates.toml"
    gates.write_text("[tool.tfbound.gates]\ntest_set_bound = '<= 10'\n")
    code, _, err = run_cli("check", str(path), "--gates", str(gates))
    assert code == 3 and "capacity_ratio" in err

"""``tfbound plot``: PNG/SVG written complete, several reports, usage and input errors, and the
hint when matplotlib is missing."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import run_cli as run
from tfbound.keys import role_of


def term(key: str, value: float | None, status: str, quantity: str) -> dict[str, Any]:
    return {"key": key, "value": value, "status": status, "role": str(role_of(key)),
            "quantity": quantity, "formula": "f", "source": "s"}  # fmt: skip


def report(scale: float = 1.0, gap: float = 0.02, bound: bool = True) -> dict[str, Any]:
    err = "downstream_test_error"
    parts = {"downstream_empirical_risk": 0.3 * scale, "rirc_term": 2e-4 * scale,
             "confidence_finetune": 0.2}  # fmt: skip
    terms = {k: term(k, v, "certified", err) for k, v in parts.items()}
    terms["test_set_bound"] = term("test_set_bound", 0.35, "certified", err)
    terms["observed_test_error"] = term("observed_test_error", 0.3, "diagnostic", err)
    terms["capacity_ratio"] = term("capacity_ratio", 12.0 * scale, "estimated", "complexity")
    terms["pretext_generalization_gap"] = term("pretext_generalization_gap", gap, "estimated",
                                                "gap")  # fmt: skip
    terms["rirc_head"] = term("rirc_head", None, "proxy", "complexity")
    total = term("certified_test_error_bound", sum(parts.values()), "certified", err)
    total["components"] = list(parts)
    bounds = {
        "certified_test_error_bound": total,
        "pac_bayes_deterministic_bound": term(
            "pac_bayes_deterministic_bound", 0.4, "certified", err
        ),  # fmt: skip
        "best_certified_test_error_bound": term(
            "best_certified_test_error_bound", 0.4, "certified", err
        ),  # fmt: skip
    }
    return {
        "schema_version": "2.0",
        "tfbound_version": "test",
        "kind": "estimate",
        "terms": terms,
        "bounds": bounds if bound else {},
    }


@pytest.fixture
def reports(tmp_path: Path) -> list[str]:
    out = []
    for name, rep in [("a", report()), ("b", report(1.5, gap=-0.01)), ("c", report(bound=False))]:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(rep))
        out.append(str(path))
    return out


def test_plot_png_one_and_several(reports: list[str], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    one = tmp_path / "one.png"
    code, out, err = run("plot", reports[0], "-o", str(one))
    assert code == 0 and out == "" and "wrote" in err
    assert one.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    many = tmp_path / "many.svg"
    code, _, err = run("plot", *reports, "-o", str(many), "--label", "epoch 1", "--label",
                       "epoch 2", "--label", "no bound", "--title", "checkpoints")  # fmt: skip
    assert code == 0, err
    svg = many.read_text()
    assert svg.lstrip().startswith("<?xml") and "</svg>" in svg
    assert not list(tmp_path.glob(".*.tmp"))


def test_layout_keeps_other_certificates_and_checks_apart() -> None:
    from tfbound.render.plot import _layout

    lay = _layout([("a", report()), ("c", report(bound=False))])
    assert lay["components"] == ["downstream_empirical_risk", "rirc_term", "confidence_finetune"]
    assert lay["certs"] == ["pac_bayes_deterministic_bound"]
    assert lay["best"] == ["best_certified_test_error_bound"]
    assert lay["checks"] == ["test_set_bound", "observed_test_error"]
    assert "capacity_ratio" in lay["other"] and "rirc_term" not in lay["other"]


def test_plot_usage_and_input_errors(reports: list[str], tmp_path: Path) -> None:
    out = tmp_path / "x.png"
    code, _, err = run("plot", reports[0], "-o", str(tmp_path / "x.gif"))
    assert code == 2 and ".png" in err
    code, _, err = run("plot", *reports[:2], "--label", "only one", "-o", str(out))
    assert code == 2 and "--label" in err
    assert run("plot")[0] == 2
    bad = tmp_path / "bad.json"
    bad.write_text('{"hello": 1}')
    code, _, err = run("plot", str(bad), "-o", str(out))
    assert code == 3 and "not a tfbound report" in err
    inspect = tmp_path / "inspect.json"
    inspect.write_text('{"kind": "tfbound.inspect", "schema_version": "2.0", "layers": []}')
    code, _, err = run("plot", str(inspect), "-o", str(out))
    assert code == 3 and "no terms to draw" in err
    code, _, err = run("plot", reports[0], "-o", str(tmp_path / "none" / "x.png"))
    assert code == 3 and "folder does not exist" in err
    assert not out.exists()


def test_plot_without_matplotlib_says_what_to_install(
    reports: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes "import matplotlib" fail
    out = tmp_path / "x.png"
    code, _, err = run("plot", reports[0], "-o", str(out))
    assert code == 3 and "tfbound[plot]" in err and not out.exists()

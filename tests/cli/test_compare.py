"""Reading saved reports (versions, non-reports) and ``tfbound compare``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.conftest import write_pipeline
from tests.helpers import run_cli as run
from tfbound.compare import compare_reports, read_report
from tfbound.errors import InputError
from tfbound.report import SCHEMA_VERSION


@pytest.fixture(autouse=True)
def _no_step_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


def term(key: str, value: float | None, status: str = "certified") -> dict[str, Any]:
    return {"key": key, "value": value, "status": status, "role": "capacity", "quantity": "q",
            "formula": "f", "source": "s"}  # fmt: skip


def report(values: dict[str, float | None], **extra: Any) -> dict[str, Any]:
    bound_keys = {"certified_test_error_bound"}
    return {
        "schema_version": SCHEMA_VERSION,
        "tfbound_version": "0",
        "kind": "estimate",
        "config": extra.pop("config", {"bound": {"delta": 0.05}}),
        "model": {},
        "data": {},
        "deltas": {},
        "terms": {k: term(k, v) for k, v in values.items() if k not in bound_keys},
        "bounds": {k: term(k, v) for k, v in values.items() if k in bound_keys},
        "warnings": [],
        **extra,
    }


# ---------------------------------------------------------------------------------------------
# reading


def write(tmp_path: Path, name: str, data: Any) -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ("{not json", "not a JSON file"),
        ([1, 2, 3], "not a tfbound report"),
        ({"terms": {}}, "not a tfbound report"),
        ({"schema_version": "2.0", "terms": {}}, "no 'bounds' object"),
        ({"schema_version": "2.0", "terms": {"a": {"value": "x"}}, "bounds": {}}, "'terms.a'"),
        ({"schema_version": "2.0", "terms": {"a": {}}, "bounds": {}}, "numeric 'value'"),
        ({"schema_version": 1, "terms": {}, "bounds": {}}, "unreadable schema_version"),
        ({"schema_version": "2.0", "terms": {}, "bounds": {}, "layers": [{"x": 1}]}, "'layers'"),
    ],
)
def test_non_reports_are_refused_clearly(tmp_path: Path, data: Any, needle: str) -> None:
    with pytest.raises(InputError, match=needle):
        read_report(write(tmp_path, "r.json", data))


def test_schema_versions(tmp_path: Path) -> None:
    major = SCHEMA_VERSION.split(".")[0]
    newer_minor = report({"a": 1.0}, schema_version=f"{major}.99", future_key={"x": 1})
    assert read_report(write(tmp_path, "new.json", newer_minor))["future_key"] == {"x": 1}
    older_minor = report({"a": 1.0}, schema_version=f"{major}.0")
    assert read_report(write(tmp_path, "old.json", older_minor))["terms"]["a"]["value"] == 1.0
    other = report({"a": 1.0}, schema_version=f"{int(major) + 1}.0")
    with pytest.raises(InputError, match=f"schema version {int(major) + 1}.0 cannot be read"):
        read_report(write(tmp_path, "other.json", other))
    old_major = report({"a": 1.0}, schema_version="0.3")
    path = write(tmp_path, "zero.json", old_major)
    code, out, err = run("compare", str(path), str(path))
    assert code == 3 and out == "" and "0.3 cannot be read" in err and "re-run" in err
    code, _, err = run("check", str(path), "--gates", str(path))
    assert code == 3 and "cannot be read" in err


# ---------------------------------------------------------------------------------------------
# comparison


def test_rows_sorted_by_impact_with_one_sided_and_null_rows_last() -> None:
    base = report({"a": 1.0, "b": 2.0, "c": 0.0, "gone": 1.0, "nul": None,
                   "certified_test_error_bound": 0.5})  # fmt: skip
    cand = report({"a": 1.1, "b": 1.0, "c": 0.0, "new": 3.0, "nul": 1.0,
                   "certified_test_error_bound": 0.55})  # fmt: skip
    comp = compare_reports(base, cand)
    keys = [d.key for d in comp.deltas]
    assert keys[0] == "b" and set(keys[1:3]) == {"a", "certified_test_error_bound"}
    assert keys[3] == "c"
    assert keys[-2:] == ["gone", "new"]  # present on one side only, listed last
    assert keys[-3] == "nul"  # null on one side: before the one-sided rows
    by = {d.key: d for d in comp.deltas}
    assert by["b"].absolute == -1.0 and by["b"].relative == -0.5
    assert by["a"].relative == pytest.approx(0.1)
    assert by["c"].relative == 0.0
    assert by["gone"].to_dict()["note"] == "only in the baseline"
    assert by["new"].to_dict()["note"] == "only in the candidate"
    assert by["nul"].to_dict()["note"] == "null in the baseline"
    assert by["certified_test_error_bound"].section == "bounds"


def test_change_from_zero_sorts_first_and_is_null_in_json() -> None:
    comp = compare_reports(report({"z": 0.0, "a": 1.0}), report({"z": 0.2, "a": 5.0}))
    assert comp.deltas[0].key == "z" and math.isinf(comp.deltas[0].relative or 0.0)
    row = comp.to_dict()["deltas"][0]
    assert row["relative"] is None and row["note"] == "from 0" and row["absolute"] == 0.2
    json.dumps(comp.to_dict(), allow_nan=False)


def test_layers_compared_when_both_reports_have_them() -> None:
    base = report({}, layers=[{"name": "enc.0", "spectral_norm": 2.0, "kind": "linear"},
                              {"name": "enc.1", "spectral_norm": 1.0}])  # fmt: skip
    cand = report({}, layers=[{"name": "enc.0", "spectral_norm": 3.0},
                              {"name": "enc.2", "spectral_norm": 1.0}])  # fmt: skip
    comp = compare_reports(base, cand)
    by = {d.key: d for d in comp.deltas}
    assert by["layers.enc.0.spectral_norm"].relative == 0.5
    assert by["layers.enc.1.spectral_norm"].present == "base"
    assert by["layers.enc.2.spectral_norm"].present == "cand"
    assert not any("kind" in k for k in by)  # text columns are not compared
    only_one = compare_reports(base, report({}))
    assert not only_one.deltas and "only the baseline has per-layer rows" in only_one.notes[0]


def test_inspect_json_is_read_as_layer_rows(tmp_path: Path) -> None:
    def inspect(v: float) -> dict[str, Any]:
        norm = {"value": v, "status": "certified", "method": "gram_eigvalsh"}
        row = {"name": "net.0", "kind": "linear", "n_params": 8, "spectral_norm": norm}
        return {"kind": "tfbound.inspect", "schema_version": SCHEMA_VERSION, "layers": [row]}

    a = read_report(write(tmp_path, "a.json", inspect(2.0)))
    b = read_report(write(tmp_path, "b.json", inspect(3.0)))
    assert a["terms"] == {} and a["bounds"] == {}
    by = {d.key: d for d in compare_reports(a, b).deltas}
    assert by["layers.net.0.spectral_norm"].relative == 0.5
    assert by["layers.net.0.n_params"].relative == 0.0
    assert "layers.net.0.kind" not in by


def test_notes_on_config_changes_and_a_moved_grid_cell() -> None:
    base = report({"certified_test_error_bound": 0.5})
    cand = report({"certified_test_error_bound": 0.5}, config={"bound": {"delta": 0.1}})
    base["bounds"]["certified_test_error_bound"]["details"] = {"k_star": 3}
    cand["bounds"]["certified_test_error_bound"]["details"] = {"k_star": 4}
    notes = compare_reports(base, cand).notes
    assert any("bound.delta" in n for n in notes)
    assert any("k* 3 -> 4" in n and "rirc_term jump" in n for n in notes)


# ---------------------------------------------------------------------------------------------
# the command on two real (tiny) models


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Reports of the tiny model and of a copy whose head is scaled and perturbed."""
    root = tmp_path_factory.mktemp("compare")
    cfg = write_pipeline(root / "tiny")
    base = root / "base.json"
    assert run("estimate", str(cfg), "-q", "--json", str(base))[0] == 0
    head = cfg.parent / "head.safetensors"
    sd = load_file(str(head))
    gen = torch.Generator().manual_seed(3)
    sd = {k: (2.0 * v + 0.3 * torch.randn(v.shape, generator=gen)).contiguous() for k, v in
          sd.items()}  # fmt: skip
    save_file(sd, str(head))
    cand = root / "cand.json"
    assert run("estimate", str(cfg), "-q", "--json", str(cand))[0] == 0
    return base, cand


def test_compare_table_json_markdown(pair: tuple[Path, Path], tmp_path: Path) -> None:
    base, cand = pair
    code, out, _ = run("compare", str(base), str(cand))
    assert code == 0
    assert "certified_test_error_bound:" in out and "changes by impact" in out
    js, md = tmp_path / "c.json", tmp_path / "c.md"
    code, out, _ = run("compare", str(base), str(cand), "-f", "json", "--json", str(js),
                       "--markdown", str(md))  # fmt: skip
    assert code == 0
    data = json.loads(out)
    assert data == json.loads(js.read_text()) and data["kind"] == "compare"
    rels = [abs(d["relative"]) for d in data["deltas"] if d["relative"] is not None]
    assert rels == sorted(rels, reverse=True)
    b, c = json.loads(base.read_text()), json.loads(cand.read_text())
    row = next(d for d in data["deltas"] if d["key"] == "rirc_head")
    assert row["base"] == b["terms"]["rirc_head"]["value"]
    assert row["absolute"] == pytest.approx(c["terms"]["rirc_head"]["value"] - row["base"])
    text = md.read_text()
    assert text.startswith("## tfbound compare: ")
    assert "| `certified_test_error_bound` |" in text
    assert run("compare", str(base), str(cand), "-f", "markdown")[1] == text


def test_compare_lists_terms_missing_on_one_side(pair: tuple[Path, Path], tmp_path: Path) -> None:
    base, cand = pair
    b = json.loads(base.read_text())
    del b["terms"]["tightness"]
    b["terms"]["old_term"] = term("old_term", 0.5, "proxy")
    bp = write(tmp_path, "b.json", b)
    code, out, _ = run("compare", str(bp), str(cand), "-f", "json")
    assert code == 0
    rows = json.loads(out)["deltas"]
    assert [(r["key"], r["present"]) for r in rows[-2:]] == [
        ("old_term", "base"),
        ("tightness", "cand"),
    ]
    code, out, _ = run("compare", str(bp), str(cand))
    assert "only in the baseline" in out and "only in the candidate" in out


def test_compare_errors_and_step_summary(pair: tuple[Path, Path], tmp_path: Path) -> None:
    base, cand = pair
    code, _, err = run("compare", str(base), str(tmp_path / "none.json"))
    assert code == 3 and "report file not found" in err
    assert run("compare", str(base))[0] == 2
    never = tmp_path / "never.md"
    code, _, _ = run("compare", str(base), str(write(tmp_path, "x.json", "[]")),
                     "--markdown", str(never))  # fmt: skip
    assert code == 3 and not never.exists()
    summary = tmp_path / "summary.md"
    code, _, _ = run("compare", str(base), str(cand), "-f", "json",
                     env={"GITHUB_STEP_SUMMARY": str(summary)})  # fmt: skip
    assert code == 0 and summary.read_text().startswith("## tfbound compare: ")

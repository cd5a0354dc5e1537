"""Gates: the grammar, verdicts at and around thresholds, sources, and every exit code of
``tfbound check`` and ``tfbound estimate --gate`` (in-process, fixed console width)."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import write_pipeline
from tests.helpers import run_cli as run
from tests.tolerances import FLOAT64_EXACT
from tfbound.config import load_config
from tfbound.errors import ConfigError, InputError, UsageError
from tfbound.gates import (
    LayerTarget,
    Mode,
    Op,
    TermTarget,
    evaluate_gates,
    load_gates_file,
    parse_gate,
    parse_gates,
)


@pytest.fixture(autouse=True)
def _no_step_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


# ---------------------------------------------------------------------------------------------
# grammar


@pytest.mark.parametrize(
    ("text", "op", "number", "mode"),
    [
        ("<= 0.3", Op.LE, 0.3, Mode.ABSOLUTE),
        ("<0.5", Op.LT, 0.5, Mode.ABSOLUTE),
        (" >= 0.9 ", Op.GE, 0.9, Mode.ABSOLUTE),
        ("> 2", Op.GT, 2.0, Mode.ABSOLUTE),
        ("== 0", Op.EQ, 0.0, Mode.ABSOLUTE),
        ("<= 1e-3", Op.LE, 1e-3, Mode.ABSOLUTE),
        ("<= .5", Op.LE, 0.5, Mode.ABSOLUTE),
        ("<= +10%", Op.LE, 0.1, Mode.RELATIVE),
        ("<= -5%", Op.LE, -0.05, Mode.RELATIVE),
        (">= -2.5 %", Op.GE, -0.025, Mode.RELATIVE),
        ("<= +0.02", Op.LE, 0.02, Mode.DELTA),
        ("< -0.01", Op.LT, -0.01, Mode.DELTA),
    ],
)
def test_parse_conditions(text: str, op: Op, number: float, mode: Mode) -> None:
    gate = parse_gate("certified_test_error_bound", text)
    assert (gate.op, gate.mode) == (op, mode)
    assert gate.number == pytest.approx(number, rel=FLOAT64_EXACT)
    assert gate.target == TermTarget("certified_test_error_bound")
    assert gate.expression == text


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("<=", "cannot read condition"),
        ("0.3", "cannot read condition"),
        ("=< 0.3", "cannot read condition"),
        ("<== 0.3", "cannot read condition"),
        ("<= 0.3 0.4", "cannot read condition"),
        ("<= abc", "cannot read condition"),
        ("<= 10%", "a percentage is a change against a baseline"),
        ("<= nan", "cannot read condition"),
        ("<= inf", "cannot read condition"),
        ("<= 1e999", "not finite"),
        ("", "cannot read condition"),
    ],
)
def test_malformed_conditions_name_the_gate(text: str, needle: str) -> None:
    with pytest.raises(InputError) as exc:
        parse_gate("rirc_head", text)
    assert "gate 'rirc_head'" in str(exc.value) and needle in str(exc.value)


def test_non_string_condition_and_bad_layer_target() -> None:
    with pytest.raises(InputError, match='quote it: "<= 0.3"'):
        parse_gate("capacity_ratio", 0.3)
    with pytest.raises(InputError, match="layers.<name pattern>.<measure>"):
        parse_gate("layers.spectral_norm", "<= 1")
    with pytest.raises(InputError, match="must be a mapping"):
        parse_gates(["<= 1"])
    gate = parse_gate("layers.encoder.*.spectral_norm", "<= 40")
    assert gate.target == LayerTarget("encoder.*", "spectral_norm")


# ---------------------------------------------------------------------------------------------
# verdicts


def report(values: dict[str, float | None], layers: list[dict[str, Any]] | None = None) -> dict:
    terms = {k: {"key": k, "value": v, "status": "certified"} for k, v in values.items()}
    out: dict[str, Any] = {
        "schema_version": "2.0",
        "terms": {k: t for k, t in terms.items() if k != "bound"},
        "bounds": {k: t for k, t in terms.items() if k == "bound"},
    }
    if layers is not None:
        out["layers"] = layers
    return out


def verdict(condition: str, value: float | None, base: float | None = None) -> bool:
    gate = parse_gate("x", condition)
    baseline = None if base is None else report({"x": base})
    (result,) = evaluate_gates((gate,), report({"x": value}), baseline).results
    return result.passed


def up(x: float) -> float:
    return math.nextafter(x, math.inf)


def down(x: float) -> float:
    return math.nextafter(x, -math.inf)


@pytest.mark.parametrize(
    ("condition", "at", "below", "above"),
    [
        ("<= 0.3", True, True, False),
        ("< 0.3", False, True, False),
        (">= 0.3", True, False, True),
        ("> 0.3", False, False, True),
        ("== 0.3", True, False, False),
    ],
)
def test_absolute_gates_at_just_below_and_just_above(
    condition: str, at: bool, below: bool, above: bool
) -> None:
    assert verdict(condition, 0.3) is at
    assert verdict(condition, down(0.3)) is below
    assert verdict(condition, up(0.3)) is above


@pytest.mark.parametrize(
    ("condition", "base", "limit"),
    [
        ("<= +50%", 0.5, 0.75),
        ("<= -50%", 0.5, 0.25),
        ("<= +50%", -0.5, -0.25),  # relative to |b|: a 50% rise from -0.5
        ("<= +0.25", 0.5, 0.75),
        ("<= -0.25", 0.5, 0.25),
        ("<= +10%", 0.0, 0.0),  # from zero, any rise fails
        (">= -50%", 0.5, 0.25),
    ],
)
def test_baseline_gates_at_just_below_and_just_above(
    condition: str, base: float, limit: float
) -> None:
    gate = parse_gate("x", condition)
    assert gate.limit(base) == limit
    upward = gate.op is Op.LE
    assert verdict(condition, limit, base)
    assert verdict(condition, down(limit), base) is upward
    assert verdict(condition, up(limit), base) is not upward


def test_null_value_fails_with_a_reason() -> None:
    gates = parse_gates({"capacity_ratio": "<= 10", "tightness": "<= +5%"})
    rep = report({"capacity_ratio": None, "tightness": None})
    results = evaluate_gates(gates, rep, report({"tightness": 1.0})).results
    assert [r.passed for r in results] == [False, False]
    assert all("null" in r.reason for r in results)


def test_baseline_with_missing_or_null_terms_fails_the_gate() -> None:
    gates = parse_gates({"a": "<= +10%", "b": "<= +0.1", "c": "<= 1"})
    rep = report({"a": 1.0, "b": 1.0, "c": 0.5})
    base = report({"b": None})
    r = evaluate_gates(gates, rep, base).results
    assert not r[0].passed and "baseline report has no term 'a'" in r[0].reason
    assert not r[1].passed and "baseline value of b is null" in r[1].reason
    assert r[2].passed  # an absolute gate ignores the baseline


def test_missing_term_is_an_input_error_not_a_pass() -> None:
    with pytest.raises(InputError, match="no term 'rirc_termm'.*certified_test_error_bound"):
        evaluate_gates(
            parse_gates({"rirc_termm": "<= 1"}), report({"certified_test_error_bound": 0.1})
        )


def test_baseline_gate_without_baseline_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="--baseline"):
        evaluate_gates(parse_gates({"x": "<= +1%"}), report({"x": 1.0}))


def test_bounds_are_targets() -> None:
    (r,) = evaluate_gates(parse_gates({"bound": "<= 0.5"}), report({"bound": 0.4})).results
    assert r.passed and r.value == 0.4 and r.threshold == 0.5


LAYERS: list[dict[str, Any]] = [
    {"name": "encoder.net.0", "spectral_norm": 3.0, "frobenius_norm": 5.0},
    {"name": "encoder.net.2", "spectral_norm": 7.0, "frobenius_norm": 9.0},
    {"name": "decoder.net.0", "spectral_norm": 50.0},
    {"name": "head.linear", "frobenius_norm": None},
]


def test_layer_gates_match_globs_and_report_the_closest_layer() -> None:
    rep = report({}, LAYERS)
    ok, bad = evaluate_gates(
        parse_gates({"layers.encoder.*.spectral_norm": "<= 7", "layers.*.spectral_norm": "<= 40"}),
        rep,
    ).results
    assert ok.passed and ok.subject == "encoder.net.2" and ok.value == 7.0
    assert not bad.passed and bad.subject == "decoder.net.0" and "1 of 3" in bad.reason
    (null,) = evaluate_gates(parse_gates({"layers.head.*.frobenius_norm": "<= 1"}), rep).results
    assert not null.passed and "null" in null.reason


def test_layer_gates_against_a_baseline() -> None:
    base = report({}, [{"name": "encoder.net.0", "spectral_norm": 2.0}])
    rep = report({}, LAYERS[:2])
    gates = parse_gates({"layers.encoder.*.spectral_norm": "<= +50%"})
    (r,) = evaluate_gates(gates, rep, base).results
    assert not r.passed and "no layer 'encoder.net.2'" in r.reason


@pytest.mark.parametrize(
    ("gate", "rep", "needle"),
    [
        ("layers.encoder.*.spectral_norm", report({"x": 1.0}), "no 'layers' section"),
        ("layers.vit.*.spectral_norm", report({}, LAYERS), "no layer matches 'vit.*'"),
        ("layers.encoder.*.stable_rank", report({}, LAYERS), "'stable_rank' column"),
    ],
)
def test_layer_gate_input_errors(gate: str, rep: dict, needle: str) -> None:
    with pytest.raises(InputError, match=needle):
        evaluate_gates(parse_gates({gate: "<= 1"}), rep)


# ---------------------------------------------------------------------------------------------
# sources


def test_gates_from_yaml_and_pyproject(tmp_path: Path) -> None:
    y = tmp_path / "gates.yaml"
    y.write_text('gates:\n  capacity_ratio: "<= 20"\n  "layers.enc.*.spectral_norm": "<= 4"\n')
    assert [g.name for g in load_gates_file(y)] == ["capacity_ratio", "layers.enc.*.spectral_norm"]
    t = tmp_path / "pyproject.toml"
    t.write_text('[project]\nname = "x"\n\n[tool.tfbound.gates]\nrirc_head = "<= +10%"\n')
    (g,) = load_gates_file(t)
    assert g.name == "rirc_head" and g.mode is Mode.RELATIVE
    t.write_text('[project]\nname = "x"\n')
    with pytest.raises(InputError, match=r"no \[tool.tfbound.gates\] section"):
        load_gates_file(t)
    y.write_text("gates:\n  capacity_ratio: '<= 20 %'\n")
    with pytest.raises(InputError, match="gates.yaml: gate 'capacity_ratio'"):
        load_gates_file(y)
    y.write_text("gates: [unclosed\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_gates_file(y)
    y.write_text("other: 1\n")
    with pytest.raises(InputError, match="no 'gates' section"):
        load_gates_file(y)
    with pytest.raises(InputError, match="gates file not found"):
        load_gates_file(tmp_path / "none.yaml")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny pipeline, written once; tests add config variants beside its tfbound.yaml."""
    return write_pipeline(tmp_path_factory.mktemp("gates") / "tiny")


def config_with(pipeline: Path, name: str, gates: Any) -> Path:
    cfg = yaml.safe_load(pipeline.read_text())
    cfg["gates"] = gates
    path = pipeline.parent / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_config_gates_are_validated_and_recorded(pipeline: Path) -> None:
    cfg = load_config(config_with(pipeline, "ok.yaml", {"capacity_ratio": "<= 20"}))
    assert dict(cfg.gates) == {"capacity_ratio": "<= 20"}
    assert cfg.to_dict()["gates"] == {"capacity_ratio": "<= 20"}
    assert "gates" not in load_config(pipeline).to_dict()
    with pytest.raises(ConfigError, match="condition string"):
        load_config(config_with(pipeline, "num.yaml", {"capacity_ratio": 20}))
    with pytest.raises(ConfigError, match="gate 'capacity_ratio': cannot read"):
        load_config(config_with(pipeline, "bad.yaml", {"capacity_ratio": "<< 20"}))
    with pytest.raises(ConfigError, match="'gates' must be a mapping"):
        load_config(config_with(pipeline, "list.yaml", ["<= 1"]))


# ---------------------------------------------------------------------------------------------
# the command line


@pytest.fixture(scope="module")
def saved(pipeline: Path) -> dict[str, Any]:
    """One estimate of a config with gates; its report saved as JSON."""
    gates = {"certified_test_error_bound": "<= 1.5", "test_set_bound": "<= 0.9"}
    cfg = config_with(pipeline, "gated.yaml", gates)
    path = pipeline.parent / "report.json"
    code, _, err = run("estimate", str(cfg), "-q", "--json", str(path))
    assert code == 0, err
    return {"path": path, "report": json.loads(path.read_text()), "config": cfg}


def gates_file(tmp_path: Path, gates: dict[str, str]) -> str:
    path = tmp_path / "gates.yaml"
    path.write_text(yaml.safe_dump({"gates": gates}))
    return str(path)


def value(saved: dict[str, Any], key: str) -> float:
    rep = saved["report"]
    return float({**rep["terms"], **rep["bounds"]}[key]["value"])


def test_check_uses_the_gates_recorded_in_the_report(saved: dict[str, Any]) -> None:
    code, out, err = run("check", str(saved["path"]))
    assert code == 0, err
    assert "all 2 gates passed" in out
    assert "certified_test_error_bound" in out and "test_set_bound" in out


def test_check_passes_at_the_threshold_and_fails_just_above(
    saved: dict[str, Any], tmp_path: Path
) -> None:
    v = value(saved, "certified_test_error_bound")
    at = gates_file(tmp_path, {"certified_test_error_bound": f"<= {v!r}"})
    assert run("check", str(saved["path"]), "--gates", at)[0] == 0
    below = gates_file(tmp_path, {"certified_test_error_bound": f"<= {down(v)!r}"})
    code, out, _ = run("check", str(saved["path"]), "--gates", below)
    assert code == 1
    assert "1 of 1 gate failed" in out and "FAIL" in out and "is not <=" in out


def test_a_tightened_gate_exits_1_with_a_readable_list(
    saved: dict[str, Any], tmp_path: Path
) -> None:
    gates = {"certified_test_error_bound": "<= 0.01", "test_set_bound": "<= 0.99"}
    code, out, _ = run("check", str(saved["path"]), "--gates", gates_file(tmp_path, gates))
    assert code == 1
    lines = out.splitlines()
    assert "1 of 2 gates failed" in lines[0]
    row = next(line for line in lines if "certified_test_error_bound" in line)
    assert "<= 0.01" in row and "FAIL" in row
    assert "pass" in next(line for line in lines if "test_set_bound" in line)


def test_check_json_markdown_and_junit(saved: dict[str, Any], tmp_path: Path) -> None:
    gates = gates_file(tmp_path, {"certified_test_error_bound": "<= 0.01", "tightness": "> 0"})
    junit, js, md = tmp_path / "g.xml", tmp_path / "g.json", tmp_path / "g.md"
    code, out, _ = run(
        "check", str(saved["path"]), "--gates", gates, "-f", "json",
        "--junit", str(junit), "--json", str(js), "--markdown", str(md),
    )  # fmt: skip
    assert code == 1
    data = json.loads(out)
    assert data == json.loads(js.read_text())
    assert data["n_gates"] == 2 and data["n_failed"] == 1 and data["passed"] is False
    assert [g["passed"] for g in data["gates"]] == [False, True]
    assert md.read_text().startswith("## tfbound check: ❌ 1 of 2 gates failed")
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "2" and suite.get("failures") == "1"
    cases = suite.findall("testcase")
    assert [c.find("failure") is not None for c in cases] == [True, False]
    assert "is not <=" in (cases[0].find("failure").get("message") or "")  # type: ignore[union-attr]
    code, out, _ = run("check", str(saved["path"]), "--gates", gates, "-f", "markdown")
    assert code == 1 and "| `tightness` | `> 0` |" in out


def test_check_against_a_baseline(saved: dict[str, Any], tmp_path: Path) -> None:
    base = json.loads(saved["path"].read_text())
    base["bounds"]["certified_test_error_bound"]["value"] /= 1.2  # the candidate is 20% worse
    del base["terms"]["tightness"]
    bp = tmp_path / "base.json"
    bp.write_text(json.dumps(base))
    args = ["check", str(saved["path"]), "--baseline", str(bp), "-f", "json", "--gates"]
    code, out, _ = run(*args, gates_file(tmp_path, {"certified_test_error_bound": "<= +25%"}))
    assert code == 0 and json.loads(out)["gates"][0]["baseline"] is not None
    code, out, _ = run(*args, gates_file(tmp_path, {"certified_test_error_bound": "<= +15%"}))
    assert code == 1
    code, out, _ = run(*args, gates_file(tmp_path, {"tightness": "<= +1%"}))
    assert code == 1 and "baseline report has no term 'tightness'" in out


def test_check_usage_errors_exit_2(saved: dict[str, Any], tmp_path: Path) -> None:
    rel = gates_file(tmp_path, {"certified_test_error_bound": "<= +5%"})
    code, _, err = run("check", str(saved["path"]), "--gates", rel)
    assert code == 2 and "--baseline" in err
    bare = tmp_path / "bare.json"
    rep = json.loads(saved["path"].read_text())
    del rep["config"]["gates"]
    bare.write_text(json.dumps(rep))
    code, _, err = run("check", str(bare))
    assert code == 2 and "no gates to evaluate" in err
    assert run("check")[0] == 2
    assert run("check", str(saved["path"]), "--no-such-option")[0] == 2
    assert run("check", str(saved["path"]), "-f", "xml")[0] == 2


@pytest.mark.parametrize(
    ("gates", "needle"),
    [
        ({"no_such_term": "<= 1"}, "no term 'no_such_term'"),
        ({"capacity_ratio": "≤ 1"}, "gate 'capacity_ratio': cannot read condition"),
        ({"layers.encoder.*.spectral_norm": "<= 40"}, "no 'layers' section"),
    ],
)
def test_check_bad_input_exits_3_and_writes_nothing(
    saved: dict[str, Any], tmp_path: Path, gates: dict[str, str], needle: str
) -> None:
    junit = tmp_path / "out" / "g.xml"
    junit.parent.mkdir()
    code, out, err = run(
        "check", str(saved["path"]), "--gates", gates_file(tmp_path, gates), "--junit", str(junit)
    )
    assert code == 3 and needle in err and out == ""
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 3
    assert list(junit.parent.iterdir()) == []


def test_check_missing_files_exit_3(saved: dict[str, Any], tmp_path: Path) -> None:
    code, _, err = run("check", str(tmp_path / "none.json"))
    assert code == 3 and "report file not found" in err
    code, _, err = run("check", str(saved["path"]), "--gates", str(tmp_path / "none.yaml"))
    assert code == 3 and "gates file not found" in err
    code, _, err = run(
        "check", str(saved["path"]), "--junit", str(tmp_path / "no" / "dir" / "g.xml")
    )
    assert code == 3 and "folder does not exist" in err


def test_estimate_gate_exit_codes(saved: dict[str, Any], pipeline: Path, tmp_path: Path) -> None:
    cfg = saved["config"]
    code, out, _ = run("estimate", str(cfg), "-q", "--gate")
    assert code == 0 and "all 2 gates passed" in out and "certified_test_error_bound" in out
    out_json = tmp_path / "r.json"
    tight = gates_file(tmp_path, {"certified_test_error_bound": "<= 0.01"})
    code, out, err = run(
        "estimate", str(cfg), "-q", "-f", "json", "--gates", tight, "--json", str(out_json)
    )
    assert code == 1
    assert json.loads(out) == json.loads(out_json.read_text())  # stdout: the report only
    assert "1 of 1 gate failed" in err  # the verdicts: on stderr
    code, _, err = run("estimate", str(pipeline), "-q", "--gate")
    assert code == 2 and "no gates to evaluate" in err
    assert run("estimate", str(cfg), "-q", "--junit", str(tmp_path / "j.xml"))[0] == 2
    missing = config_with(pipeline, "missing.yaml", {"rirc_termm": "<= 1"})
    never = tmp_path / "never.json"
    code, _, err = run("estimate", str(missing), "-q", "--gate", "--json", str(never))
    assert code == 3 and "no term 'rirc_termm'" in err
    assert not never.exists() and not list(tmp_path.glob(".never.json*"))


def test_estimate_gate_markdown_and_junit(saved: dict[str, Any], tmp_path: Path) -> None:
    junit, md = tmp_path / "g.xml", tmp_path / "r.md"
    code, out, _ = run(
        "estimate", str(saved["config"]), "-q", "--gate", "-f", "markdown",
        "--junit", str(junit), "--markdown", str(md),
    )  # fmt: skip
    assert code == 0
    assert out == md.read_text()
    assert (
        out.startswith("## tfbound estimate") and "## tfbound gates: ✅ all 2 gates passed" in out
    )
    assert ET.parse(junit).getroot().find("testsuite").get("failures") == "0"  # type: ignore[union-attr]


def test_step_summary_is_appended(saved: dict[str, Any], tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("# earlier step\n")
    env = {"GITHUB_STEP_SUMMARY": str(summary)}
    assert run("check", str(saved["path"]), env=env)[0] == 0
    assert run("estimate", str(saved["config"]), "-q", "--gate", "-f", "json", env=env)[0] == 0
    text = summary.read_text()
    assert text.startswith("# earlier step\n## tfbound check: ✅")
    assert "## tfbound estimate" in text and "## tfbound gates: ✅" in text
    code, _, err = run("check", str(saved["path"]), env={"GITHUB_STEP_SUMMARY": str(tmp_path)})
    assert code == 0 and "cannot append" in err  # a summary that cannot be written only warns


def inspect_json(spectral: dict[str, float | None]) -> dict[str, Any]:
    """The shape of ``tfbound inspect --format json``: measures as {value, status, method}."""
    return {
        "kind": "tfbound.inspect",
        "schema_version": "2.0",
        "layers": [
            {
                "name": name,
                "kind": "linear",
                "n_params": 10,
                "spectral_norm": None
                if v is None
                else {"value": v, "status": "certified", "method": "gram_eigvalsh"},
            }
            for name, v in spectral.items()
        ],
    }


def test_layer_gates_on_an_inspect_json(tmp_path: Path) -> None:
    path = tmp_path / "inspect.json"
    path.write_text(json.dumps(inspect_json({"encoder.net.0": 3.19, "encoder.net.2": 2.0})))
    ok = gates_file(tmp_path, {"layers.encoder.*.spectral_norm": "<= 3.19"})
    code, out, _ = run("check", str(path), "--gates", ok)
    assert code == 0 and "closest: encoder.net.0" in out
    tight = gates_file(tmp_path, {"layers.encoder.*.spectral_norm": "< 3.19"})
    code, out, _ = run("check", str(path), "--gates", tight, "-f", "json")
    assert code == 1 and json.loads(out)["gates"][0]["subject"] == "encoder.net.0"
    term_gate = gates_file(tmp_path, {"capacity_ratio": "<= 1"})
    code, _, err = run("check", str(path), "--gates", term_gate)
    assert code == 3 and "no term 'capacity_ratio'" in err
    path.write_text(json.dumps({**inspect_json({}), "schema_version": "3.0"}))
    code, _, err = run("check", str(path), "--gates", ok)
    assert code == 3 and "inspect schema version 3.0 cannot be read" in err

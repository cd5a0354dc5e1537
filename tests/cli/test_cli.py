"""The command line in-process: exit codes, JSON on stdout, every bad input of issue 2."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file
from typer.testing import CliRunner

from tests.conftest import write_pipeline
from tests.tolerances import FLOAT64_EXACT
from tfbound.cli import app
from tfbound.keys import HEADLINE_SHARES
from tfbound.report import report_schema

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def edit_yaml(path: Path, fn) -> None:  # type: ignore[no-untyped-def]
    cfg = yaml.safe_load(path.read_text())
    fn(cfg)
    path.write_text(yaml.safe_dump(cfg))


def test_estimate_json_matches_schema_and_is_deterministic(tiny: Path, tmp_path: Path) -> None:
    code, out, _ = run("estimate", str(tiny.parent), "--format", "json", "-q")
    assert code == 0
    report = json.loads(out)
    jsonschema.validate(report, report_schema())
    code2, out2, _ = run("estimate", str(tiny), "--format", "json", "-q")
    assert code2 == 0 and out2 == out
    bound = report["bounds"]["certified_test_error_bound"]
    parts = [report["terms"][k]["value"] for k in bound["components"]]
    assert bound["value"] == pytest.approx(sum(parts), rel=FLOAT64_EXACT)
    assert all(report["terms"][k]["status"] == "certified" for k in bound["components"])
    headline = [k for k in HEADLINE_SHARES if k in report["deltas"]]
    assert sum(report["deltas"][k] for k in headline) == pytest.approx(report["deltas"]["delta"])


def test_json_and_markdown_files(tiny: Path, tmp_path: Path) -> None:
    j, m = tmp_path / "r.json", tmp_path / "r.md"
    code, out, _ = run("estimate", str(tiny), "--json", str(j), "--markdown", str(m), "-q")
    assert code == 0
    assert "certified_test_error_bound" in out
    assert json.loads(j.read_text())["kind"] == "estimate"
    assert m.read_text().startswith("## tfbound estimate")


def test_schema_command_prints_the_schema() -> None:
    code, out, _ = run("schema")
    assert code == 0 and json.loads(out) == report_schema()


def test_overrides_and_usage_errors(tiny: Path) -> None:
    code, out, _ = run(
        "estimate", str(tiny), "-f", "json", "-q", "--delta", "0.1", "--n-draws", "50"
    )
    assert code == 0
    rep = json.loads(out)
    assert rep["deltas"]["delta"] == 0.1 and rep["config"]["bound"]["n_draws"] == 50
    assert run("estimate", str(tiny), "--format", "xml")[0] == 2
    assert run("estimate")[0] == 2
    assert run("nonsense")[0] == 2


def _expect_bad_input(args: list[str], needle: str, tmp_path: Path | None = None) -> str:
    out_file = (tmp_path / "never.json") if tmp_path else None
    extra = ["--json", str(out_file)] if out_file else []
    code, out, err = run(*args, *extra, "-q")
    assert code == 3, (code, out, err)
    assert "Traceback" not in err and needle in err, err
    assert len(err.strip().splitlines()) <= 3
    if out_file is not None:
        assert not out_file.exists()
        assert not list(out_file.parent.glob(".never.json*"))
    return err


def test_missing_config(tmp_path: Path) -> None:
    _expect_bad_input(["estimate", str(tmp_path / "nope.yaml")], "config file not found")


def test_missing_weights(tiny: Path, tmp_path: Path) -> None:
    (tiny.parent / "encoder.safetensors").unlink()
    _expect_bad_input(["estimate", str(tiny)], "checkpoint file not found", tmp_path)


def test_truncated_safetensors(tiny: Path, tmp_path: Path) -> None:
    p = tiny.parent / "encoder.safetensors"
    p.write_bytes(p.read_bytes()[:100])
    _expect_bad_input(["estimate", str(tiny)], "truncated or corrupt", tmp_path)


def test_garbage_safetensors(tiny: Path, tmp_path: Path) -> None:
    (tiny.parent / "head.safetensors").write_bytes(b"\x00" * 64)
    _expect_bad_input(["estimate", str(tiny)], "head.safetensors", tmp_path)


class _Evil:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (print, ("pwned",))


def test_pickle_that_needs_code_is_refused(tiny: Path, tmp_path: Path) -> None:
    p = tiny.parent / "head.pt"
    torch.save({"linear.weight": torch.zeros(1, 8), "linear.bias": _Evil()}, p)
    edit_yaml(tiny, lambda c: c["head"].update(weights="head.pt"))
    err = _expect_bad_input(["estimate", str(tiny)], "unpickle code", tmp_path)
    assert "pwned" not in err


def test_weights_only_state_dict_loads(tiny: Path) -> None:
    from safetensors.torch import load_file

    sd = load_file(str(tiny.parent / "head.safetensors"))
    torch.save(sd, tiny.parent / "head.pt")
    code_st, out_st, _ = run("estimate", str(tiny), "-f", "json", "-q")
    edit_yaml(tiny, lambda c: c["head"].update(weights="head.pt"))
    code_pt, out_pt, _ = run("estimate", str(tiny), "-f", "json", "-q")
    assert code_st == code_pt == 0
    a, b = json.loads(out_st), json.loads(out_pt)
    assert a["bounds"] == b["bounds"] and a["terms"] == b["terms"]


def test_shape_mismatch(tiny: Path, tmp_path: Path) -> None:
    edit_yaml(tiny, lambda c: c["encoder"].update(hidden=[10]))
    _expect_bad_input(["estimate", str(tiny)], "shape mismatch", tmp_path)


def test_nan_weights(tiny: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    p = tiny.parent / "encoder.safetensors"
    sd = load_file(str(p))
    sd["net.0.weight"][0, 0] = float("nan")
    save_file(sd, str(p))
    _expect_bad_input(["estimate", str(tiny)], "NaN or Inf", tmp_path)


def _rewrite_data(tiny: Path, **changes: np.ndarray) -> None:
    p = tiny.parent / "data.npz"
    arrays = dict(np.load(p))
    arrays.update(changes)
    np.savez(p, **arrays)


def test_inf_in_data(tiny: Path, tmp_path: Path) -> None:
    x = np.load(tiny.parent / "data.npz")["test_x"].copy()
    x[5, 3] = np.inf
    _rewrite_data(tiny, test_x=x)
    _expect_bad_input(["estimate", str(tiny)], "NaN or Inf", tmp_path)


def test_empty_data(tiny: Path, tmp_path: Path) -> None:
    _rewrite_data(tiny, train_x=np.zeros((0, 16), np.float32), train_y=np.zeros(0, np.int64))
    _expect_bad_input(["estimate", str(tiny)], "empty", tmp_path)


def test_feature_dimension_mismatch(tiny: Path, tmp_path: Path) -> None:
    save_file(
        {"linear.weight": torch.zeros(1, 5), "linear.bias": torch.zeros(1)},
        str(tiny.parent / "head.safetensors"),
    )
    _expect_bad_input(["estimate", str(tiny)], "feature dimension mismatch", tmp_path)


@pytest.mark.parametrize("labels", [[0, 1, 2], [0.5, 1.0, 0.0], [-1, 0, 1]])
def test_non_binary_labels(tiny: Path, tmp_path: Path, labels: list[float]) -> None:
    y = np.resize(np.array(labels), 120)
    _rewrite_data(tiny, train_y=y)
    _expect_bad_input(["estimate", str(tiny)], "binary", tmp_path)


def test_yaml_not_a_mapping(tmp_path: Path) -> None:
    p = tmp_path / "tfbound.yaml"
    p.write_text("- just\n- a list\n")
    _expect_bad_input(["estimate", str(p)], "must be a mapping")


def test_yaml_unknown_key(tiny: Path, tmp_path: Path) -> None:
    edit_yaml(tiny, lambda c: c["bound"].update(rho_zero=1.0))
    _expect_bad_input(["estimate", str(tiny)], "unknown key(s) 'rho_zero'", tmp_path)


def test_yaml_syntax_error(tmp_path: Path) -> None:
    p = tmp_path / "tfbound.yaml"
    p.write_text("encoder: [unclosed\n")
    _expect_bad_input(["estimate", str(p)], "not valid YAML")


def test_delta_shares_must_sum_to_one(tiny: Path) -> None:
    edit_yaml(tiny, lambda c: c["bound"].update(delta_shares={"finetune": 0.9}))
    _expect_bad_input(["estimate", str(tiny)], "sum to 1")


def test_debug_shows_traceback(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--debug", "estimate", str(tmp_path / "none.yaml")])
    assert result.exit_code == 3
    assert "Traceback" in result.stderr and "config file not found" in result.stderr


def test_internal_error_exits_4_with_and_without_debug(
    tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tfbound.errors import EXIT_INTERNAL

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("tfbound.pipeline.estimate", boom)
    plain = runner.invoke(app, ["estimate", str(tiny), "-q"])
    assert plain.exit_code == EXIT_INTERNAL == 4
    assert "Traceback" not in plain.stderr and "RuntimeError: a bug" in plain.stderr
    debug = runner.invoke(app, ["--debug", "estimate", str(tiny), "-q"])
    assert debug.exit_code == 4 and "Traceback" in debug.stderr and "a bug" in debug.stderr


def test_mlp_head_pipeline(tmp_path: Path) -> None:
    cfg = write_pipeline(tmp_path / "mlp", head="mlp", with_pretext=False)
    code, out, _ = run("estimate", str(cfg), "-f", "json", "-q")
    assert code == 0
    rep = json.loads(out)
    rirc = rep["terms"]["rirc"]
    details = rirc["details"]
    # ReLU path-norm ball: rirc = 2 rho U / n, rirc_term = 2 rirc.
    assert rirc["value"] == pytest.approx(2 * details["rho_k"] * details["u_sigma"] / details["n"])
    assert rep["terms"]["rirc_term"]["value"] == pytest.approx(2 * rirc["value"])
    assert any("pretext" in w for w in rep["warnings"])

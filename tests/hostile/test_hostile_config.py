"""Hostile configurations: every bad value is one line on stderr and exit 3, checked before any
model is built or data read (the hostile-input issue, config part)."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tfbound.cli import app
from tfbound.yaml_input import load_yaml

runner = CliRunner()
Edit = Callable[[dict[str, Any]], None]


def _set(section: str, key: str, value: Any) -> Edit:
    def edit(cfg: dict[str, Any]) -> None:
        cfg[section][key] = value

    return edit


def _bound(key: str, value: Any) -> Edit:
    return _set("bound", key, value)


CASES: dict[str, Edit] = {
    "rho0 inf": _bound("rho0", float("inf")),
    "bias_const inf": _bound("bias_const", float("inf")),
    "metric_eps inf": _bound("metric_eps", float("inf")),
    "prior_lam nan": _bound("prior_lam", float("nan")),
    "seed 2**80": _bound("seed", 2**80),
    "split_seed -3": _bound("split_seed", -3),
    "n_draws 10**9": _bound("n_draws", 10**9),
    "batch_size bool": _bound("batch_size", True),
    "delta_shares inf": _bound("delta_shares", {"finetune": float("inf")}),
    "old share name": _bound("delta_shares", {"a": 0.1}),
    "box inf": _set("pretext", "box", [0.0, float("inf")]),
    "pretext seed -1": _set("pretext", "seed", -1),
    "image_shape 0": _set("pretext", "image_shape", [0, 4, 4]),
    "feature_dim -5": _set("encoder", "feature_dim", -5),
    "input_dim string": _set("encoder", "input_dim", "64"),
    "hidden float": _set("encoder", "hidden", [128.5]),
    "hidden bool": _set("encoder", "hidden", [True]),
    "hidden huge": _set("encoder", "hidden", [10_000_000]),
    "hidden wide": _set("encoder", "hidden", [900_000, 900_000]),
    "activation list": _set("encoder", "activation", ["relu"]),
    "unknown keys": lambda c: c["encoder"].update({f"k{i}" * 50: i for i in range(40)}),
    "arch long": _set("encoder", "arch", "x" * 100_000),
}


def _one_line_exit_3(result: Any) -> str:
    assert result.exit_code == 3, (result.exit_code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert len(lines[0]) < 600  # the path and a bounded message: no unbounded value echoed
    return str(lines[0])


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_bad_config_value_exits_3_with_one_short_line(name: str, tiny: Path) -> None:
    cfg = yaml.safe_load(tiny.read_text())
    CASES[name](cfg)
    tiny.write_text(yaml.safe_dump(cfg))
    start = time.perf_counter()
    result = runner.invoke(app, ["estimate", str(tiny.parent), "-q"])
    line = _one_line_exit_3(result)
    assert time.perf_counter() - start < 20
    assert "error" in line.lower()


def test_the_vit_patch_size_zero_is_refused(tiny: Path) -> None:
    cfg = yaml.safe_load(tiny.read_text())
    cfg["encoder"] = {
        "arch": "vit",
        "weights": "encoder.safetensors",
        "image_size": 4,
        "patch_size": 0,
        "dim": 8,
        "depth": 1,
        "heads": 2,
    }
    tiny.write_text(yaml.safe_dump(cfg))
    line = _one_line_exit_3(runner.invoke(app, ["estimate", str(tiny.parent), "-q"]))
    assert "patch_size" in line


def test_a_yaml_alias_bomb_is_refused_without_expanding(tiny: Path) -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        refs = ", ".join([f"*a{i - 1}"] * 10)
        levels.append(f"a{i}: &a{i} [{refs}]")
    bomb = "\n".join(levels) + "\nencoder: *a8\n"
    tiny.write_text(bomb)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    line = _one_line_exit_3(runner.invoke(app, ["estimate", str(tiny.parent), "-q"]))
    assert "alias" in line
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 200_000  # the 10^9-element expansion never happens


def test_yaml_without_aliases_still_reads_anchors_free_documents() -> None:
    assert load_yaml("a: [1, 2]\nb: {c: 3}") == {"a": [1, 2], "b": {"c": 3}}
    with pytest.raises(yaml.YAMLError, match="aliases"):
        load_yaml("a: &x 1\nb: *x")


def test_a_gates_file_with_aliases_is_refused(tiny: Path, tmp_path: Path) -> None:
    from tfbound.pipeline import estimate
    from tfbound.report import to_json

    report = tmp_path / "r.json"
    report.write_text(to_json(estimate(tiny).to_dict()))
    gates = tmp_path / "gates.yaml"
    gates.write_text('c: &c "<= 1"\ngates:\n  test_set_bound: *c\n')
    line = _one_line_exit_3(runner.invoke(app, ["check", str(report), "--gates", str(gates)]))
    assert "alias" in line

"""Fuzzed configurations: random mutations of the tiny pipeline's config (new keys, wrong types,
huge integers, inf, nan, strings, nested lists) through ``tfbound estimate`` in-process.

Whatever the config, the exit code is 0, 1, 2 or 3 (never 4, a bug), stderr holds no traceback
and at most one line, and the pipeline folder gains no file. Derandomized: the same examples on
every run, so a failure here reproduces.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import write_pipeline
from tests.helpers import run_cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

#: 40 derandomized examples per test: the same inputs on every run.
FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_text = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=0, max_size=12)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=40),
    st.sampled_from([0, -1, 2**31, 2**63, 10**30, -(10**18)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.inf, -math.inf, math.nan, 1e308, 5e-324, 0.5, -0.0]),
    _text,
    st.sampled_from(["mlp", "linear", "vit", "bert", "factory", "ce", "mae", "data.npz", ""]),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_text, inner, max_size=3)),
    max_leaves=8,
)
_key = st.one_of(
    st.sampled_from(
        [
            "arch",
            "weights",
            "input_dim",
            "hidden",
            "feature_dim",
            "path",
            "x",
            "y",
            "n_draws",
            "seed",
            "delta",
            "kind",
            "image_shape",
            "block",
            "box",
            "batch_size",
            "factory",
            "encoder_candidates",
            "delta_shares",
            "gates",
            "reference",
            "output_dim",
        ]
    ),  # fmt: skip
    _text,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value in a nested dict/list (the root included)."""
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        node = node[p]
    return node


@st.composite
def _mutated(draw: st.DrawFn, base: dict[str, Any]) -> Any:
    cfg: Any = copy.deepcopy(base)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = _paths(cfg)
        path = draw(st.sampled_from(paths))
        how = draw(st.sampled_from(["replace", "add_key", "delete"]))
        value = draw(_values)
        if not path:
            if how == "replace":
                cfg = value
            continue
        parent = _get(cfg, path[:-1])
        if how == "replace":
            parent[path[-1]] = value
        elif how == "delete":
            del parent[path[-1]]
        else:
            target = parent[path[-1]]
            if isinstance(target, dict):
                target[draw(_key)] = value
            elif isinstance(target, list):
                target.append(value)
            else:
                parent[path[-1]] = value
    return cfg


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    yaml_path = write_pipeline(tmp_path_factory.mktemp("fuzz") / "tiny", bound={"n_draws": 200})
    return yaml_path, yaml.safe_load(yaml_path.read_text())


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


@FUZZ
@given(data=st.data())
def test_estimate_on_a_mutated_config_fails_cleanly(
    pipeline: tuple[Path, dict[str, Any]], data: st.DataObject
) -> None:
    yaml_path, base = pipeline
    cfg = data.draw(_mutated(base), label="config")
    try:
        text = yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)
    except yaml.YAMLError:
        return  # not every Python value has a YAML form; nothing to test
    yaml_path.write_text(text, encoding="utf-8")
    before = _files(yaml_path.parent)
    code, _, err = run_cli("estimate", str(yaml_path))
    assert code in (0, 1, 2, 3), err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) <= 1, err
    assert _files(yaml_path.parent) == before


# ---------------------------------------------------------------------------------------------
# Reports and gates files as a pull request may bring them, through `tfbound check`


@pytest.fixture(scope="module")
def saved_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    import json

    from tfbound.pipeline import estimate

    folder = tmp_path_factory.mktemp("reports")
    model = write_pipeline(tmp_path_factory.mktemp("report_model") / "tiny", bound={"n_draws": 200})
    data = estimate(model).to_dict()
    path = folder / "good.json"
    path.write_text(json.dumps(data))
    return folder, data


def _check_cleanly(args: list[str], folder: Path) -> None:
    import resource

    before = _files(folder)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code, out, err = run_cli("check", *args)
    assert code in (0, 1, 2, 3), (code, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 1, err
    assert _files(folder) == before
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert grown_kib < 1_000_000  # under 1 GB for a tiny input


@FUZZ
@given(data=st.data())
def test_check_on_a_mutated_report_fails_cleanly(
    saved_report: tuple[Path, dict[str, Any]], data: st.DataObject
) -> None:
    import json

    folder, base = saved_report
    report = data.draw(_mutated(base), label="report")
    path = folder / "mutated.json"
    try:
        path.write_text(json.dumps(report))
    except (TypeError, ValueError):  # a drawn value JSON cannot hold as such
        path.write_text(json.dumps(report, default=str))
    gates = folder / "gates.yaml"
    gates.write_text('gates:\n  test_set_bound: "<= 1"\n  rirc: "<= 10"\n')
    _check_cleanly([str(path), "--gates", str(gates)], folder)


@FUZZ
@given(gates=st.dictionaries(_key, _values, max_size=4), toml=st.booleans())
def test_check_with_a_random_gates_file_fails_cleanly(
    saved_report: tuple[Path, dict[str, Any]], gates: dict[str, Any], toml: bool
) -> None:
    folder, _ = saved_report
    if toml:
        lines = ["[tool.tfbound.gates]"] + [
            f"{json_key(k)} = {json_value(v)}" for k, v in gates.items()
        ]
        path = folder / "pyproject.toml"
        path.write_text("\n".join(lines) + "\n")
    else:
        path = folder / "gates.yaml"
        path.write_text(yaml.safe_dump({"gates": gates}))
    _check_cleanly([str(folder / "good.json"), "--gates", str(path)], folder)


def json_key(key: str) -> str:
    import json

    return json.dumps(key)


def json_value(value: Any) -> str:
    """A TOML-ish value: strings quoted, anything else as JSON text (TOML may refuse it)."""
    import json

    return json.dumps(value if isinstance(value, str) else str(value))

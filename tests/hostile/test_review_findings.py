"""Inputs found by a hostile review: each is one line on stderr with exit 3 (or 2), never an
internal error, and never minutes of parsing."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file

import tfbound
from tests.helpers import run_cli
from tfbound.errors import DataError, UsageError
from tfbound.features import encode
from tfbound.io.datasets import labels_with_positive
from tfbound.json_input import loads, nesting_depth
from tfbound.yaml_input import load_yaml


def test_deep_yaml_is_refused_quickly_and_a_repeated_key_is_refused() -> None:
    start = time.perf_counter()
    with pytest.raises(yaml.YAMLError, match="nested more than"):
        load_yaml("encoder: " + "[" * 100_000 + "]" * 100_000)
    assert time.perf_counter() - start < 5  # was minutes, then a RecursionError
    with pytest.raises(yaml.YAMLError, match="given twice"):
        load_yaml('gates:\n  a: "<= 1"\n  a: ">= 2"\n')
    assert load_yaml("a: {b: [1, {c: 2}]}") == {"a": {"b": [1, {"c": 2}]}}


def test_deep_json_is_refused_before_parsing() -> None:
    assert nesting_depth('{"a": "[[[[", "b": [[1]]}') == 3  # brackets in strings do not count
    with pytest.raises(ValueError, match="nested more than"):
        loads("[" * 100_000 + "]" * 100_000)
    assert loads('{"a": [1, 2]}') == {"a": [1, 2]}


def test_a_checkpoint_with_a_deep_json_header_is_bad_input(tmp_path: Path) -> None:
    header = ("[" * 200_000 + "]" * 200_000).encode()
    path = tmp_path / "deep.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    code, _, err = run_cli("inspect", str(path))
    assert code == 3 and len(err.strip().splitlines()) == 1, err


def test_a_head_whose_bias_does_not_fit_its_weight(tiny: Path) -> None:
    save_file(
        {"weight": torch.zeros(1, 8), "bias": torch.zeros(5)}, str(tiny.parent / "head.safetensors")
    )
    code, _, err = run_cli("estimate", str(tiny), "-q")
    assert code == 3 and "bias has shape (5,)" in err, err


def test_inputs_the_encoder_cannot_take_are_a_data_error() -> None:
    conv = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten())
    with pytest.raises(DataError, match="cannot take these inputs .* 3x8x8"):
        encode(conv, np.zeros((4, 3, 8, 8), dtype=np.float32))


def test_a_huge_integer_label_is_not_a_label() -> None:
    with pytest.raises(DataError, match="binary"):
        labels_with_positive(np.array([10**400, 0], dtype=object), 2, None, "y", None)
    assert labels_with_positive(
        np.array([10**5000, 0], dtype=object), 2, 0, "y", None
    ).tolist() == [
        -1.0,
        1.0,
    ]


def test_delta_out_of_range_on_the_command_line_is_a_usage_error(tiny: Path) -> None:
    code, _, err = run_cli("estimate", str(tiny), "--delta", "0")
    assert code == 2 and "--delta must lie in (0, 1)" in err


def test_certify_takes_a_size_one_bias_and_refuses_more() -> None:
    rng = np.random.default_rng(0)
    z, y = rng.normal(size=(60, 3)), rng.choice([-1.0, 1.0], size=60)
    w = np.array([1.0, 0.0, 0.0])
    a = tfbound.certify(z, y, w, 0.1, n_draws=50)
    b = tfbound.certify(z, y, w, np.array([0.1]), n_draws=50)
    assert json.dumps(a.to_dict()["bounds"]) == json.dumps(b.to_dict()["bounds"])
    with pytest.raises(UsageError, match="one bias"):
        tfbound.certify(z, y, w, np.array([0.1, 0.2]), n_draws=50)


def test_a_fifo_or_folder_is_not_called_missing(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "report.json"
    os.mkfifo(fifo)
    code, _, err = run_cli("check", str(fifo), "--gates", str(tmp_path / "g.yaml"))
    assert code == 3 and "not a regular file" in err  # read without blocking on the FIFO
    code, _, err = run_cli("check", str(tmp_path), "--gates", str(tmp_path / "g.yaml"))
    assert code == 3 and "not a regular file" in err
    code, _, err = run_cli("check", str(tmp_path / "none.json"), "--gates", str(tmp_path / "g"))
    assert code == 3 and "not found" in err


def test_compare_of_a_report_with_itself_says_nothing_changed() -> None:
    from tests.helpers import REPO_ROOT

    report = REPO_ROOT / "tests" / "golden" / "inputs" / "ce_mlp.json"
    code, out, _ = run_cli("compare", str(report), str(report))
    assert code == 0 and "no term or layer changed" in out and "key" not in out.split("\n")[3]

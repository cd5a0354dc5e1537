"""The one checkpoint reader (tfbound.io.checkpoints): the same bad file reads the same way
from ``estimate``'s loader and from ``inspect``; ``estimate`` reads sharded and folder
checkpoints; an index cannot point outside its folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn
from typer.testing import CliRunner

from tfbound.cli import app
from tfbound.errors import CheckpointError
from tfbound.inspect import inspect_checkpoint
from tfbound.io.checkpoints import load_module_weights, load_tensors, resolve_checkpoint

runner = CliRunner()


def _message(fn) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(CheckpointError) as info:
        fn()
    return str(info.value)


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("junk.safetensors", b"\x00\x01 not a safetensors file at all"),
        ("junk.pt", b"garbage"),
        ("junk.bin", b"PK\x03\x04 broken zip"),
        ("model.safetensors.index.json", b"{}"),
        ("model.safetensors.index.json", b'{"weight_map": {"a": "../../etc/passwd"}}'),
    ],
)
def test_same_bad_file_same_message_from_estimate_loader_and_inspect(
    tmp_path: Path, name: str, body: bytes
) -> None:
    bad = tmp_path / name
    bad.write_bytes(body)
    from_estimate = _message(lambda: load_module_weights(nn.Linear(2, 1), bad, "head"))
    from_inspect = _message(lambda: inspect_checkpoint(bad))
    assert from_estimate == from_inspect
    assert from_estimate.startswith(str(bad))


def test_missing_and_needs_code_messages_agree(tmp_path: Path) -> None:
    absent = tmp_path / "absent.pt"
    assert _message(lambda: load_tensors(absent)) == _message(lambda: inspect_checkpoint(absent))
    assert "checkpoint file not found" in _message(lambda: load_tensors(absent))
    code = tmp_path / "code.pt"
    torch.save({"model": nn.Linear(2, 2)}, code)
    msg = _message(lambda: load_tensors(code))
    assert "unpickle code" in msg and msg == _message(lambda: inspect_checkpoint(code))


def _shard(state: dict[str, torch.Tensor], folder: Path) -> Path:
    names = sorted(state)
    weight_map = {}
    for i, part in enumerate((names[::2], names[1::2])):
        fname = f"model-{i + 1:05d}-of-00002.safetensors"
        save_file({n: state[n].contiguous() for n in part}, str(folder / fname))
        weight_map.update(dict.fromkeys(part, fname))
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return index


def test_estimate_reads_an_encoder_saved_as_a_sharded_index(tiny: Path) -> None:
    base = runner.invoke(app, ["estimate", str(tiny), "-f", "json", "-q"])
    assert base.exit_code == 0, base.stderr
    state = load_file(str(tiny.parent / "encoder.safetensors"))
    assert len(state) >= 2
    shards = tiny.parent / "enc"
    shards.mkdir()
    index = _shard(state, shards)
    (tiny.parent / "encoder.safetensors").unlink()
    cfg = yaml.safe_load(tiny.read_text())
    for weights in ("enc/model.safetensors.index.json", "enc"):  # the index, then its folder
        cfg["encoder"]["weights"] = weights
        tiny.write_text(yaml.safe_dump(cfg))
        result = runner.invoke(app, ["estimate", str(tiny), "-f", "json", "-q"])
        assert result.exit_code == 0, result.stderr
        a, b = json.loads(base.stdout), json.loads(result.stdout)
        assert a["terms"] == b["terms"] and a["bounds"] == b["bounds"]
    assert resolve_checkpoint(shards).path == index


def test_index_shards_must_stay_in_the_index_folder(tiny: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(tiny.parent / "encoder.safetensors", outside / "enc.safetensors")
    state = load_file(str(outside / "enc.safetensors"))
    index = tiny.parent / "model.safetensors.index.json"
    for shard in ("../../etc/passwd", str(outside / "enc.safetensors"), "../outside/x"):
        index.write_text(json.dumps({"weight_map": dict.fromkeys(state, shard)}))
        with pytest.raises(CheckpointError, match="outside the index's folder"):
            resolve_checkpoint(index)
    index.write_text(json.dumps({"weight_map": {"a": "../../etc/passwd"}}))
    cfg = yaml.safe_load(tiny.read_text())
    cfg["encoder"]["weights"] = index.name
    tiny.write_text(yaml.safe_dump(cfg))
    for args in (["estimate", str(tiny)], ["inspect", str(index)]):
        result = runner.invoke(app, [*args, "-q"])
        assert result.exit_code == 3, (result.stdout, result.stderr)
        assert "outside the index's folder" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1

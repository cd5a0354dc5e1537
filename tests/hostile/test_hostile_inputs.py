"""Hostile inputs other than the config's values: output folders, code named by a config, forged
array and checkpoint headers, bad dtypes, training that diverges, output files, checkpoint paths
that leave their folder, labeled splits too small. Each is exit 3 with one line, nothing lost."""

from __future__ import annotations

import io
import json
import os
import stat
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from tfbound.cli import app

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py
runner = CliRunner()


def _invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(app, list(args), env={"COLUMNS": "200", **(env or {})})


def _exit_3_one_line(result: Any) -> str:
    assert result.exit_code == 3, result.output
    err = result.stderr.strip()
    assert "Traceback" not in result.output and len(err.splitlines()) == 1, err
    return err


def _pretrain_data(path: Path, *, nan: bool = False) -> Path:
    gen = np.random.default_rng(0)

    def x(n: int) -> np.ndarray:
        return gen.random((n, 64), dtype=np.float32)

    pre = x(40)
    if nan:
        pre[3, 5] = np.nan
    np.savez(
        path,
        pretrain_train_x=pre,
        pretrain_val_x=x(10),
        downstream_train_x=x(30),
        downstream_train_y=gen.integers(0, 2, 30),
    )
    return path


def _pretrain(data: Path, out: Path, *extra: str) -> Any:
    return _invoke(
        "pretrain", "ce", "--epochs", "1", "--data", str(data), "--out-dir", str(out), "-q", *extra
    )


def _edit(yaml_path: Path, edit: Any) -> None:
    cfg = yaml.safe_load(yaml_path.read_text())
    edit(cfg)
    yaml_path.write_text(yaml.safe_dump(cfg, sort_keys=False))


# 1. --force replaces only a folder tfbound wrote, never an input of the run -----------------------


def test_pretrain_force_refuses_a_folder_tfbound_did_not_write(tmp_path: Path) -> None:
    data = _pretrain_data(tmp_path / "data.npz")
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    err = _exit_3_one_line(_pretrain(data, out, "--force"))
    assert "not a folder written by tfbound" in err
    assert (out / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npz", "precious"]  # no leftovers


def test_pretrain_force_refuses_when_the_data_lies_inside_the_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    data = tmp_path / "data.npz"
    _pretrain_data(data)
    assert _pretrain(data, out).exit_code == 0
    inside = _pretrain_data(out / "data.npz")  # now a tfbound folder that holds the run's input
    err = _exit_3_one_line(_pretrain(inside, out, "--force"))
    assert "input of this run" in err and inside.is_file()


def test_pretrain_force_replaces_its_own_folder_with_the_marker(tmp_path: Path) -> None:
    data = _pretrain_data(tmp_path / "data.npz")
    out = tmp_path / "out"
    assert _pretrain(data, out).exit_code == 0
    assert json.loads((out / "pretrain.json").read_text())["written_by"] == "tfbound pretrain"
    assert _pretrain(data, out, "--force", "--seed", "3").exit_code == 0
    assert json.loads((out / "pretrain.json").read_text())["seed"] == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_pretrain_force_refuses_a_forged_marker_in_a_link(tmp_path: Path) -> None:
    data = _pretrain_data(tmp_path / "data.npz")
    real = tmp_path / "real"
    real.mkdir()
    (real / "keep.txt").write_text("keep")
    out = tmp_path / "link"
    out.symlink_to(real, target_is_directory=True)
    _exit_3_one_line(_pretrain(data, out, "--force"))
    assert (real / "keep.txt").is_file() and out.is_symlink()


# 2. arch: factory imports code only with an opt-in outside the config ----------------------------


def _factory_module(tiny: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A module on sys.path whose import writes one file and whose factory writes another and
    returns no module; the config names it (arch: factory)."""
    on_import, on_call = tiny.parent / f"{name}.imported", tiny.parent / f"{name}.called"
    (tiny.parent / f"{name}.py").write_text(
        f"open({str(on_import)!r}, 'w').write('ran')\n"
        f"def make(**kw):\n    open({str(on_call)!r}, 'w').write('ran')\n    return None\n"
    )
    monkeypatch.syspath_prepend(str(tiny.parent))
    monkeypatch.delenv("TFBOUND_ALLOW_CODE", raising=False)
    _edit(tiny, lambda c: c.update(encoder={"arch": "factory", "factory": f"{name}:make"}))
    return on_import


def test_factory_refused_without_the_opt_in(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    marker = _factory_module(tiny, "evil_factory_a", monkeypatch)
    err = _exit_3_one_line(_invoke("estimate", str(tiny)))
    assert "--allow-code" in err and "TFBOUND_ALLOW_CODE" in err
    assert not marker.exists() and not marker.with_suffix(".called").exists()
    assert "evil_factory_a" not in sys.modules


def test_factory_with_the_opt_in_still_needs_an_nn_module(
    tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tfbound.models import build

    marker = _factory_module(tiny, "evil_factory_b", monkeypatch)
    result = _invoke("estimate", str(tiny), env={"TFBOUND_ALLOW_CODE": "1"})
    assert "not an nn.Module" in _exit_3_one_line(result) and marker.exists()
    assert not build.code_allowed()
    build.allow_code(True)  # the library side of --allow-code
    try:
        assert build.code_allowed()
    finally:
        build.allow_code(False)
    assert not build.code_allowed()


def test_the_allow_code_flag_is_the_command_line_opt_in(
    tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tfbound.models import build

    marker = _factory_module(tiny, "evil_factory_c", monkeypatch)
    try:
        result = _invoke("--allow-code", "estimate", str(tiny))
        assert "not an nn.Module" in _exit_3_one_line(result) and marker.exists()
    finally:
        build.allow_code(False)


# 3. forged headers, bad dtypes, a text file as .pt ---------------------------------------------


def _npy_bytes(shape: tuple[int, ...], descr: str = "<f8", payload: bytes = b"") -> bytes:
    from numpy.lib import format as npy_format

    buf = io.BytesIO()
    npy_format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue() + payload


def _point_train_at(tiny: Path, path: Path, x: str = "train_x", y: str = "train_y") -> None:
    _edit(
        tiny,
        lambda c: c["data"].update(downstream_train={"path": str(path), "x": x, "y": y}),
    )


def test_npz_member_claiming_a_huge_shape_is_refused(tiny: Path) -> None:
    bomb = tiny.parent / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("train_x.npy", _npy_bytes((10**12, 10**3), payload=b"\0" * 64))
        zf.writestr("train_y.npy", _npy_bytes((3,), "<i8", b"\0" * 24))
    _point_train_at(tiny, bomb)
    err = _exit_3_one_line(_invoke("estimate", str(tiny)))
    assert "train_x" in err and "forged header" in err


def test_array_over_the_memory_budget_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tfbound.config import ArraySource
    from tfbound.errors import DataError
    from tfbound.io import datasets

    np.savez(tmp_path / "d.npz", x=np.zeros((64, 16), np.float32))
    np.save(tmp_path / "d.npy", np.zeros((64, 16), np.float32))
    monkeypatch.setattr(datasets, "MEMORY_BUDGET_BYTES", 1024)
    with pytest.raises(DataError, match="memory budget"):
        datasets.load_inputs(ArraySource(tmp_path / "d.npz", "x"))
    # a memory-mapped .npy is not read whole: only its header's claim against the file size
    assert datasets.load_inputs(ArraySource(tmp_path / "d.npy", "x")).shape == (64, 16)
    header = (tmp_path / "d.npy").read_bytes()[:128]
    (tmp_path / "short.npy").write_bytes(header.replace(b"(64, 16)", b"(99, 16)"))
    with pytest.raises(DataError, match="forged header"):
        datasets.load_inputs(ArraySource(tmp_path / "short.npy", "x"))


def test_safetensors_header_claiming_a_huge_tensor_is_refused(tiny: Path) -> None:
    header = json.dumps(
        {"w": {"dtype": "F32", "shape": [10**12, 10**3], "data_offsets": [0, 4 * 10**15]}}
    ).encode()
    (tiny.parent / "encoder.safetensors").write_bytes(
        len(header).to_bytes(8, "little") + header + b"\0" * 16
    )
    err = _exit_3_one_line(_invoke("estimate", str(tiny)))
    assert "encoder.safetensors" in err and "forged header" in err


def test_safetensors_over_the_memory_budget_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import save_file

    from tfbound.errors import CheckpointError
    from tfbound.io import checkpoints

    save_file({"w": torch.zeros(64, 64)}, str(tmp_path / "w.safetensors"))
    monkeypatch.setattr(checkpoints, "MEMORY_BUDGET_BYTES", 1024)
    with pytest.raises(CheckpointError, match="memory budget"):
        checkpoints.load_tensors(tmp_path / "w.safetensors")


@pytest.mark.parametrize("dtype", ["float16", "int64", "bool", "uint8"])
def test_inputs_of_a_non_float_dtype_are_refused(tiny: Path, dtype: str) -> None:
    data = tiny.parent / "typed.npz"
    np.savez(data, train_x=np.ones((20, 16)).astype(dtype), train_y=np.arange(20) % 2)
    _point_train_at(tiny, data)
    err = _exit_3_one_line(_invoke("estimate", str(tiny)))
    assert dtype in err and "float32" in err


def test_bfloat16_tensor_inputs_are_refused(tiny: Path) -> None:
    data = tiny.parent / "typed.pt"
    x = torch.ones(20, 16, dtype=torch.bfloat16)
    torch.save({"train_x": x, "train_y": torch.ones(20)}, data)
    _point_train_at(tiny, data)
    assert "bfloat16" in _exit_3_one_line(_invoke("estimate", str(tiny)))


def test_int_labels_are_accepted(tiny: Path) -> None:
    from tfbound.config import ArraySource
    from tfbound.io.datasets import load_labeled

    data = tiny.parent / "ints.npz"
    np.savez(data, x=np.ones((4, 16), np.float32), y=np.array([0, 1, 1, 0], np.int32))
    assert load_labeled(ArraySource(data, "x", "y")).y.tolist() == [-1.0, 1.0, 1.0, -1.0]


@pytest.mark.parametrize("where", ["data", "weights"])
def test_a_text_file_given_as_pt_is_one_line(tiny: Path, where: str) -> None:
    fake = tiny.parent / "notes.pt"
    fake.write_text("these are not tensors\n" * 20)
    if where == "data":
        _point_train_at(tiny, fake)
    else:
        _edit(tiny, lambda c: c["encoder"].update(weights=str(fake)))
    _exit_3_one_line(_invoke("estimate", str(tiny)))


# 4. training that diverges is an error, and no JSON holds NaN -----------------------------------


def test_pretrain_on_nan_data_is_exit_3_and_writes_nothing(tmp_path: Path) -> None:
    data = _pretrain_data(tmp_path / "data.npz", nan=True)
    out = tmp_path / "out"
    err = _exit_3_one_line(_pretrain(data, out))
    assert "diverged" in err and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npz"]


def test_pretrain_with_a_huge_learning_rate_is_exit_3(tmp_path: Path) -> None:
    data = _pretrain_data(tmp_path / "data.npz")
    out = tmp_path / "out"
    err = _exit_3_one_line(_pretrain(data, out, "--lr", "1e12", "--epochs", "3"))
    assert "diverged" in err and not out.exists()


def test_training_error_is_an_input_error_exit_3() -> None:
    from tfbound.errors import EXIT_BAD_INPUT, InputError, TrainingError

    assert issubclass(TrainingError, InputError) and TrainingError.exit_code == EXIT_BAD_INPUT


# 5. output files: the umask's mode, through links, onto devices and pipes -----------------------


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_write_respects_the_umask(tmp_path: Path, umask: int) -> None:
    from tfbound.io.atomic import write_text_atomic

    old = os.umask(umask)
    try:
        write_text_atomic(tmp_path / "r.json", "{}\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o666 & ~umask


def test_atomic_write_through_a_symlink_replaces_the_target(tmp_path: Path) -> None:
    from tfbound.io.atomic import write_text_atomic

    real = tmp_path / "sub" / "real.json"
    real.parent.mkdir()
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    write_text_atomic(link, "new")
    assert link.is_symlink() and real.read_text() == "new"
    assert not [p for p in real.parent.iterdir() if p.name.startswith(".")]


def test_atomic_write_to_a_fifo_writes_directly(tmp_path: Path) -> None:
    import threading

    from tfbound.io.atomic import write_text_atomic

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    write_text_atomic(fifo, "through the pipe")
    reader.join(timeout=10)
    assert got == ["through the pipe"] and stat.S_ISFIFO(fifo.stat().st_mode)


def test_atomic_write_to_dev_null_keeps_the_device() -> None:
    from tfbound.io.atomic import write_bytes_atomic

    write_bytes_atomic("/dev/null", b"nothing")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_pretrain_folder_respects_the_umask(tmp_path: Path) -> None:
    data = _pretrain_data(tmp_path / "data.npz")
    old = os.umask(0o002)
    try:
        assert _pretrain(data, tmp_path / "out").exit_code == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o775
    assert stat.S_IMODE((tmp_path / "out" / "encoder.safetensors").stat().st_mode) == 0o664


# 6. transfer checkpoints that leave their folder --------------------------------------------------


def test_checkpoint_index_entry_outside_its_folder_is_refused(tmp_path: Path) -> None:
    from tfbound.errors import ConfigError
    from tfbound.transfer.family import scan_checkpoint_root

    root = tmp_path / "ckpt"
    root.mkdir()
    outside = tmp_path / "secret.safetensors"
    outside.write_bytes(b"x")
    index = {"pipelines": {"p": {"checkpoints": [{"encoder": "../secret.safetensors", "seed": 0}]}}}
    (root / "index.json").write_text(json.dumps(index))
    with pytest.raises(ConfigError, match="outside the index's folder"):
        scan_checkpoint_root(root, "p")
    index["pipelines"]["p"]["checkpoints"][0]["encoder"] = str(outside)
    (root / "index.json").write_text(json.dumps(index))
    with pytest.raises(ConfigError, match="outside the index's folder"):
        scan_checkpoint_root(root, "p")


def test_checkpoint_seed_folder_linked_outside_the_root_is_refused(tmp_path: Path) -> None:
    from tfbound.errors import ConfigError
    from tfbound.transfer.family import scan_checkpoint_root

    elsewhere = tmp_path / "elsewhere" / "epoch0"
    elsewhere.mkdir(parents=True)
    (elsewhere / "encoder.safetensors").write_bytes(b"x")
    root = tmp_path / "ckpt"
    root.mkdir()
    (root / "seed0").symlink_to(elsewhere.parent, target_is_directory=True)
    with pytest.raises(ConfigError, match="outside"):
        scan_checkpoint_root(root)


# 7. a labeled split of n <= 1 -----------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1])
def test_labeled_split_of_n_at_most_1_is_refused(tiny: Path, n: int) -> None:
    data = tiny.parent / "small.npz"
    np.savez(data, train_x=np.ones((n, 16), np.float32), train_y=np.ones(n, np.int64))
    _point_train_at(tiny, data)
    err = _exit_3_one_line(_invoke("estimate", str(tiny)))
    assert "train_x" in err


def test_estimate_json_onto_a_symlink_writes_its_target(tiny: Path) -> None:
    real = tiny.parent / "reports" / "r.json"
    real.parent.mkdir()
    real.write_text("old")
    link = tiny.parent / "r.json"
    link.symlink_to(real)
    assert _invoke("estimate", str(tiny), "--json", str(link)).exit_code == 0
    assert link.is_symlink() and json.loads(real.read_text())["schema_version"].startswith("2.")


def test_npz_member_without_the_npy_suffix_is_checked_too(tiny: Path) -> None:
    bomb = tiny.parent / "bare.npz"
    with zipfile.ZipFile(bomb, "w") as zf:  # np.load also reads a member named plainly 'train_x'
        zf.writestr("train_x", _npy_bytes((10**12, 10**3), payload=b"\0" * 64))
        zf.writestr("train_y.npy", _npy_bytes((3,), "<i8", b"\0" * 24))
    _point_train_at(tiny, bomb)
    assert "forged header" in _exit_3_one_line(_invoke("estimate", str(tiny)))


def test_a_test_split_of_one_example_is_refused(tiny: Path) -> None:
    data = tiny.parent / "one.npz"
    np.savez(data, test_x=np.ones((1, 16), np.float32), test_y=np.ones(1, np.int64))
    split = {"path": str(data), "x": "test_x", "y": "test_y"}
    _edit(tiny, lambda c: c["data"].update(downstream_test=split))
    assert "at least 2" in _exit_3_one_line(_invoke("estimate", str(tiny)))


def test_the_labeled_loader_of_every_encoder_refuses_one_example(
    tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tfbound.config import ArraySource, load_config
    from tfbound.errors import DataError
    from tfbound.io.datasets import LabeledArrays
    from tfbound.pipeline import stages

    cfg = load_config(tiny)
    source = ArraySource(tiny.parent / "data.npz", "train_x", "train_y")
    one = LabeledArrays(np.ones((1, 16), np.float32), np.ones(1), source)
    monkeypatch.setattr(stages, "load_labeled", lambda s: one)  # a loader that lets n = 1 by
    load_lab, _ = stages.data_loaders(cfg)
    with pytest.raises(DataError, match="at least 2"):
        load_lab(source)


# 8. one line on stderr for every error, outputs checked before any work --------------------------


def _subprocess(*args: str, cwd: Path) -> Any:
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "tfbound", *args], cwd=cwd, capture_output=True, text=True
    )


@pytest.mark.parametrize(
    "args",
    [("estimate", "--nope"), ("estimate",), ("nope",), ("check", "r.json", "--format", "xml")],
)
def test_usage_errors_are_one_line_with_exit_2(args: tuple[str, ...], tmp_path: Path) -> None:
    done = _subprocess(*args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "╭" not in done.stderr


def test_a_path_with_a_newline_stays_on_one_line(tmp_path: Path) -> None:
    done = _subprocess("estimate", "bad\nname", cwd=tmp_path)
    assert done.returncode == 3
    assert len(done.stderr.strip().splitlines()) == 1 and "\\n" in done.stderr


def test_an_output_that_is_a_folder_is_refused_before_any_work(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tfbound.pipeline

    def must_not_run(*_: Any, **__: Any) -> None:
        raise AssertionError("estimate ran before the output path was checked")

    monkeypatch.setattr(tfbound.pipeline, "estimate", must_not_run)
    (tmp_path / "out").mkdir()
    err = _exit_3_one_line(_invoke("estimate", str(tiny), "--json", str(tmp_path / "out")))
    assert "is a folder" in err


def test_memory_error_is_one_line_and_exit_3(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tfbound.pipeline

    def exhaust(*_: Any, **__: Any) -> None:
        raise MemoryError

    monkeypatch.setattr(tfbound.pipeline, "estimate", exhaust)
    assert "out of memory" in _exit_3_one_line(_invoke("estimate", str(tiny)))


def test_a_reference_without_shared_layers_gives_no_distance(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from tfbound.inspect import inspect_checkpoint

    save_file({"a.weight": torch.ones(3, 4)}, str(tmp_path / "m.safetensors"))
    save_file({"b.weight": torch.ones(2, 2)}, str(tmp_path / "r.safetensors"))
    result = inspect_checkpoint(tmp_path / "m.safetensors", reference=tmp_path / "r.safetensors")
    assert result.totals.distance_to_reference_sq_total is None
    assert any("shares no layer" in n for n in result.notes)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.int8])
def test_integer_or_bool_weights_are_refused(dtype: torch.dtype, tiny: Path) -> None:
    from safetensors.torch import load_file, save_file

    path = tiny.parent / "encoder.safetensors"
    tensors = load_file(str(path))
    tensors = {k: v.to(dtype) for k, v in tensors.items()}
    save_file(tensors, str(path))
    err = _exit_3_one_line(_invoke("estimate", str(tiny)))
    assert "integer or bool weights" in err

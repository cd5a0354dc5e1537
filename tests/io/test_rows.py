"""Large input arrays read rows at a time (``tfbound.io.rows``) against numpy's own reading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tfbound.io.rows as rows_mod
from tfbound.config import ArraySource
from tfbound.errors import DataError
from tfbound.io.datasets import load_inputs, load_labeled
from tfbound.io.rows import FileRows


@pytest.fixture
def small_lazy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rows_mod, "LAZY_BYTES", 1024)  # every test array is "large"


@pytest.mark.usefixtures("small_lazy")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rows_equal_numpy_for_npy_and_stored_npz(tmp_path: Path, dtype: type) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 3, 4)).astype(dtype)
    y = rng.integers(0, 2, 500)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "d.npz", inputs=x, y=y)
    for arr in (
        load_inputs(ArraySource(tmp_path / "x.npy", "x")),
        load_labeled(ArraySource(tmp_path / "d.npz", "inputs", "y")).x,
    ):
        assert isinstance(arr, FileRows) and arr.shape == x.shape and arr.dtype == x.dtype
        assert np.array_equal(arr[0:7], x[0:7]) and np.array_equal(arr[495:900], x[495:])
        assert np.array_equal(arr[10:40:3], x[10:40:3])
        dense = np.sort(rng.choice(500, 100, replace=False))
        sparse = np.array([0, 250, 499])
        assert np.array_equal(arr[dense], x[dense]) and np.array_equal(arr[sparse], x[sparse])
        assert np.array_equal(arr[-1], x[-1]) and np.array_equal(np.asarray(arr), x)


@pytest.mark.usefixtures("small_lazy")
def test_compressed_fortran_and_small_arrays_are_read_whole(tmp_path: Path) -> None:
    x = np.arange(600, dtype=np.float32).reshape(200, 3)
    np.savez_compressed(tmp_path / "c.npz", x=x, y=np.arange(200) % 2)
    np.save(tmp_path / "f.npy", np.asfortranarray(x))
    assert isinstance(load_labeled(ArraySource(tmp_path / "c.npz", "x", "y")).x, np.ndarray)
    assert np.array_equal(np.asarray(load_inputs(ArraySource(tmp_path / "f.npy", "x"))), x)
    rows_mod.LAZY_BYTES = 1 << 40
    np.savez(tmp_path / "s.npz", x=x, y=np.arange(200) % 2)
    assert isinstance(load_labeled(ArraySource(tmp_path / "s.npz", "x", "y")).x, np.ndarray)


@pytest.mark.usefixtures("small_lazy")
def test_a_truncated_file_is_refused_in_one_line(tmp_path: Path) -> None:
    x = np.ones((400, 8), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    data = (tmp_path / "x.npy").read_bytes()
    (tmp_path / "x.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated or forged header"):
        load_inputs(ArraySource(tmp_path / "x.npy", "x"))
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(400) % 2)
    raw = (tmp_path / "d.npz").read_bytes()
    (tmp_path / "d.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError):
        load_labeled(ArraySource(tmp_path / "d.npz", "x", "y"))


def test_a_negative_shape_is_refused(tmp_path: Path) -> None:
    x = np.ones((64, 8), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    raw = (tmp_path / "x.npy").read_bytes().replace(b"(64, 8)", b"(-64, -8)", 1)
    (tmp_path / "x.npy").write_bytes(raw)
    with pytest.raises(DataError, match="negative shape"):
        load_inputs(ArraySource(tmp_path / "x.npy", "x"))


@pytest.mark.usefixtures("small_lazy")
def test_an_npz_member_claiming_the_next_members_bytes_is_not_read_by_rows(
    tmp_path: Path,
) -> None:
    """A stored member whose header claims 100 rows more than it holds (its zip sizes inflated
    to match, so the claim stays inside the file): the lazy reader must not hand out the next
    member's bytes as rows."""
    import zipfile

    x = np.arange(2000 * 4, dtype=np.float32).reshape(2000, 4)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(2000) % 2)
    raw = bytearray((tmp_path / "d.npz").read_bytes())
    raw[: raw.index(b"PK\x01\x02")] = raw[: raw.index(b"PK\x01\x02")].replace(
        b"(2000, 4)", b"(2100, 4)", 1
    )
    (tmp_path / "d.npz").write_bytes(bytes(raw))
    with zipfile.ZipFile(tmp_path / "d.npz") as zf:
        assert zf.getinfo("x.npy").compress_type == zipfile.ZIP_STORED
    try:
        split = load_labeled(ArraySource(tmp_path / "d.npz", "x", "y"))
    except DataError:
        return  # refused in one line: fine
    assert not isinstance(split.x, FileRows)

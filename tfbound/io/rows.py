"""Large input arrays read rows at a time from their file, never held in memory.

:class:`FileRows` reads the rows a pass asks for (a slice, or sorted row indices) with plain file
reads into a fresh buffer: neither the array nor a memory map of it stays resident, so a pass
over a 1M-row split holds one batch of it. It serves ``.npy`` files and ``.npz`` members stored
without compression (``numpy.savez``), in C order; anything else is read whole as before
(``tfbound.io.datasets``). Arrays under :data:`LAZY_BYTES` are read whole too: a small split costs
nothing to hold.
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from tfbound.errors import DataError

#: Arrays of at least this many bytes are read rows at a time.
LAZY_BYTES = 32 << 20

_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # a zip member's local file header (30 bytes)


class FileRows:
    """An ``(n, ...)`` array stored at ``offset`` of ``path`` (C order), read by rows."""

    is_text = False

    def __init__(self, path: Path, offset: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path = path
        self.offset = int(offset)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)
        self._row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def _read(self, start: int, stop: int, fh: Any = None) -> np.ndarray:
        count = max(0, stop - start)
        out = np.empty((count, *self.shape[1:]), dtype=self.dtype)
        if not count:
            return out
        if fh is None:
            with self._open() as own:
                return self._read(start, stop, own)
        fh.seek(self.offset + start * self._row_bytes)
        view = memoryview(out.reshape(-1).view(np.uint8).data)
        if fh.readinto(view) != view.nbytes:
            raise DataError(f"the file ended before row {stop} (changed after it was read?)",
                            path=self.path)  # fmt: skip
        return out

    def _open(self) -> Any:
        try:
            return self.path.open("rb")
        except OSError as exc:
            msg = f"cannot read the inputs any more: {exc.strerror}"
            raise DataError(msg, path=self.path) from exc

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(self.shape[0])
            rows = self._read(start, max(start, stop))
            return rows if step == 1 else rows[::step]
        if isinstance(key, int | np.integer):
            i = int(key) + (self.shape[0] if key < 0 else 0)
            if not 0 <= i < self.shape[0]:
                raise IndexError(f"row {key} of {self.shape[0]}")
            return self._read(i, i + 1)[0]
        index = np.asarray(key, dtype=np.int64).reshape(-1)
        if index.size == 0:
            return np.empty((0, *self.shape[1:]), dtype=self.dtype)
        if index.min() < 0 or index.max() >= self.shape[0]:
            raise IndexError(f"rows out of range for {self.shape[0]} rows")
        lo, hi = int(index.min()), int(index.max()) + 1
        if hi - lo <= 4 * index.size:  # a dense set of rows: one read of the span
            return self._read(lo, hi)[index - lo]
        with self._open() as fh:  # a sparse set: one read per row, one open file
            return np.stack([self._read(int(i), int(i) + 1, fh)[0] for i in index])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        from tfbound.io.datasets import MEMORY_BUDGET_BYTES

        if self.shape[0] * self._row_bytes > MEMORY_BUDGET_BYTES:
            raise DataError(
                f"reading these inputs whole needs {self.shape[0] * self._row_bytes} bytes, over "
                f"the memory budget of {MEMORY_BUDGET_BYTES} bytes (this command reads them "
                "whole; estimate reads them by rows)",
                path=self.path,
            )
        whole = self._read(0, self.shape[0])
        return whole if dtype is None else whole.astype(dtype)


def npy_rows(
    path: Path, header_len: int, shape: tuple[int, ...], dtype: np.dtype, fortran: bool
) -> FileRows | None:
    """Rows of a ``.npy`` file whose data starts at ``header_len``, when it is large enough."""
    return _lazy(path, header_len, shape, dtype, fortran)


def npz_member_rows(path: Path, member: str) -> FileRows | None:
    """Rows of an ``.npz`` member stored without compression, when it is large enough; None for
    a compressed or small member (read whole)."""
    from numpy.lib import format as npy_format

    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
        if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
            return None
        # where the member's bytes must end: the next member's header or the central directory
        starts = sorted(
            i.header_offset for i in zf.infolist() if i.header_offset > info.header_offset
        )
        limit = min([*starts, zf.start_dir])
    with path.open("rb") as fh:
        fh.seek(info.header_offset)
        fields = _LOCAL_HEADER.unpack(fh.read(_LOCAL_HEADER.size))
        if fields[0] != b"PK\x03\x04":
            return None
        name_len, extra_len = fields[-2], fields[-1]
        start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
        fh.seek(start)
        version = npy_format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = npy_format.read_array_header_2_0(fh)
        data = fh.tell()
    end = data + int(np.prod(shape, dtype=object)) * np.dtype(dtype).itemsize
    if any(int(s) < 0 for s in shape) or end > start + info.compress_size or end > limit:
        return None  # read whole: numpy's own checks (sizes, CRC) name what is wrong
    return _lazy(path, data, tuple(shape), np.dtype(dtype), bool(fortran))


def _lazy(
    path: Path, offset: int, shape: tuple[int, ...], dtype: np.dtype, fortran: bool
) -> FileRows | None:
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if fortran or len(shape) < 2 or dtype.hasobject or nbytes < LAZY_BYTES:
        return None
    return FileRows(path, offset, shape, dtype)


__all__ = ["LAZY_BYTES", "FileRows", "npy_rows", "npz_member_rows"]

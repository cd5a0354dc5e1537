"""Data files: ``.npz`` (a key per array), ``.npy`` (memory-mapped), ``.pt`` tensors (weights-only).

Inputs are checked here for emptiness and dtype, and for NaN/Inf batch by batch where they are
used (one pass). Labels must be binary, in {0, 1} or {-1, +1}; they are returned in {-1, +1}.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tfbound.config import ArraySource
from tfbound.errors import DataError, first_line, missing

#: the most bytes one array may claim (its header's shape x itemsize) before it is read
MEMORY_BUDGET_BYTES = 8 * 2**30
#: input arrays: what an encoder reads (float16/bfloat16 lose too much; ints and bools are codes)
INPUT_DTYPES = ("float32", "float64")
#: label arrays: binary values in any of these kinds
LABEL_KINDS = "biuf"


def _npy_header(fh: object, path: Path, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from an .npy header (the data is not read)."""
    from numpy.lib import format as npy_format

    try:
        version = npy_format.read_magic(fh)  # type: ignore[arg-type]
        if version == (1, 0):
            shape, _, dtype = npy_format.read_array_header_1_0(fh)  # type: ignore[arg-type]
        elif version in ((2, 0), (3, 0)):
            shape, _, dtype = npy_format.read_array_header_2_0(fh)  # type: ignore[arg-type]
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as exc:
        msg = first_line(exc)
        raise DataError(f"cannot read array '{key}': bad .npy header: {msg}", path=path) from exc
    dims = tuple(int(s) for s in shape)
    if any(s < 0 for s in dims):
        raise DataError(f"cannot read array '{key}': negative shape {dims[:8]}", path=path)
    return dims, np.dtype(dtype)


def _check_claim(
    shape: tuple[int, ...],
    dtype: np.dtype,
    available: int,
    path: Path,
    key: str,
    *,
    budget: bool = True,
) -> None:
    """Refuse a header whose shape x itemsize exceeds the bytes present or (``budget``) the
    memory budget."""
    if dtype.hasobject:
        raise DataError(f"array '{key}' holds Python objects (refused)", path=path)
    claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if claimed > available:
        raise DataError(
            f"array '{key}' claims shape {shape[:8]} ({claimed} bytes) but the file holds "
            f"{available} bytes (truncated or forged header)",
            path=path,
        )
    if budget and claimed > MEMORY_BUDGET_BYTES:
        raise DataError(
            f"array '{key}' needs {claimed} bytes, over the memory budget of "
            f"{MEMORY_BUDGET_BYTES} bytes",
            path=path,
        )


def _check_npz_member(path: Path, key: str) -> None:
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        member = f"{key}.npy" if f"{key}.npy" in names else key  # np.load reads either
        if member not in names:
            return  # np.load names the missing key
        info = zf.getinfo(member)
        with zf.open(info) as fh:
            shape, dtype = _npy_header(fh, path, key)
            header_len = fh.tell()
        _check_claim(shape, dtype, info.file_size - header_len, path, key)


def _check_npy(path: Path, key: str) -> None:
    with path.open("rb") as fh:
        shape, dtype = _npy_header(fh, path, key)
        header_len = fh.tell()
    # memory-mapped, not read whole: the bytes must be on disk, the budget does not apply
    _check_claim(shape, dtype, path.stat().st_size - header_len, path, key, budget=False)


@dataclass(frozen=True)
class LabeledArrays:
    x: np.ndarray
    y: np.ndarray  # float64 in {-1, +1}
    source: ArraySource | None = None  # None: arrays given in memory (``tfbound.api``)


def _load_array(path: Path, key: str) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"data file {missing(path)}", path=path)
    suffix = path.suffix
    try:
        if suffix == ".npy":
            _check_npy(path, key)
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        elif suffix == ".npz":
            _check_npz_member(path, key)
            with np.load(path, allow_pickle=False) as npz:
                if key not in npz.files:
                    raise DataError(f"no array '{key}' (has: {', '.join(npz.files)})", path=path)
                arr = npz[key]
        elif suffix in (".pt", ".pth"):
            try:
                obj = torch.load(path, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError:
                raise
            except Exception as exc:  # torch raises many types for a foreign or truncated file
                raise DataError(
                    f"cannot read array '{key}': not a readable PyTorch file (truncated or "
                    f"corrupt): {type(exc).__name__}",
                    path=path,
                ) from exc
            if isinstance(obj, dict):
                if key not in obj:
                    raise DataError(
                        f"no tensor '{key}' (has: {', '.join(map(str, obj))})", path=path
                    )
                obj = obj[key]
            if not isinstance(obj, torch.Tensor):
                raise DataError(f"'{key}' is not a tensor", path=path)
            if obj.dtype in (torch.bfloat16, torch.float16) or obj.is_complex():
                raise DataError(
                    f"array '{key}' has dtype {str(obj.dtype).removeprefix('torch.')}; "
                    "save it as float32 or float64",
                    path=path,
                )
            arr = obj.detach().cpu().numpy()
        else:
            raise DataError(
                f"unsupported data format '{suffix}' (use .npz, .npy or .pt)", path=path
            )
    except DataError:
        raise
    except pickle.UnpicklingError as exc:
        msg = str(exc).strip()
        if "weights_only" in msg or "Weights only" in msg:
            raise DataError("refused: loading this file would unpickle code", path=path) from exc
        raise DataError(f"cannot read array '{key}': not a PyTorch file", path=path) from exc
    except (
        ValueError,
        OSError,
        EOFError,
        RuntimeError,
        IndexError,
        KeyError,
        TypeError,
        AttributeError,
        SyntaxError,
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
    ) as exc:
        msg = first_line(exc)
        raise DataError(f"cannot read array '{key}': {msg}", path=path) from exc
    if arr.dtype.kind not in "biuf":
        raise DataError(f"array '{key}' has non-numeric dtype {arr.dtype}", path=path)
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise DataError(f"array '{key}' is empty (shape {arr.shape})", path=path)
    return arr


def _check_input_dtype(arr: np.ndarray, path: Path, key: str) -> np.ndarray:
    if arr.dtype.name not in INPUT_DTYPES:
        raise DataError(
            f"inputs '{key}' have dtype {arr.dtype}; tfbound reads float32 or float64 inputs "
            "(convert them, e.g. x.astype('float32'))",
            path=path,
        )
    return arr


def _load_input_array(path: Path, key: str) -> Any:
    """An input array: read rows at a time from its file when it is a large C-order ``.npy`` or
    uncompressed ``.npz`` member (``tfbound.io.rows.FileRows``), else read as ``_load_array``."""
    if path.is_file() and path.suffix in (".npy", ".npz"):
        lazy = _lazy_rows(path, key)
        if lazy is not None:
            if lazy.dtype.kind not in "biuf":
                raise DataError(f"array '{key}' has non-numeric dtype {lazy.dtype}", path=path)
            if lazy.shape[0] == 0:
                raise DataError(f"array '{key}' is empty (shape {lazy.shape})", path=path)
            return lazy
    return _load_array(path, key)


def _lazy_rows(path: Path, key: str) -> Any:
    from numpy.lib import format as npy_format

    from tfbound.io.rows import npy_rows, npz_member_rows

    try:
        if path.suffix == ".npy":
            _check_npy(path, key)
            with path.open("rb") as fh:
                version = npy_format.read_magic(fh)
                read = (
                    npy_format.read_array_header_1_0
                    if version == (1, 0)
                    else npy_format.read_array_header_2_0
                )
                shape, fortran, dtype = read(fh)
                return npy_rows(path, fh.tell(), tuple(shape), np.dtype(dtype), bool(fortran))
        _check_npz_member(path, key)
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
        member = f"{key}.npy" if f"{key}.npy" in names else key
        return npz_member_rows(path, member) if member in names else None
    except DataError:
        raise
    except (ValueError, OSError, EOFError, KeyError, SyntaxError, zipfile.BadZipFile):
        return None  # read whole: _load_array names what is wrong


def load_inputs(source: ArraySource) -> np.ndarray:
    """The input array ``(n, ...)``, float32 or float64; a large one is read rows at a time
    (``tfbound.io.rows``)."""
    return _check_input_dtype(_load_input_array(source.path, source.x), source.path, source.x)


def load_labeled(source: ArraySource) -> LabeledArrays:
    """Inputs and binary labels mapped to {-1, +1}."""
    if source.y is None:
        raise DataError("a labeled split needs a label key 'y'", path=source.path)
    x = _check_input_dtype(_load_input_array(source.path, source.x), source.path, source.x)
    if x.shape[0] < 2:
        raise DataError(
            f"a labeled split needs at least 2 examples; '{source.x}' has {x.shape[0]}",
            path=source.path,
        )
    y = binary_labels(_load_array(source.path, source.y), x.shape[0], source.y, source.path)
    return LabeledArrays(x=x, y=y, source=source)


def binary_labels(y_raw: np.ndarray, n: int, name: str, path: Path | None) -> np.ndarray:
    """Labels of ``n`` inputs as float64 in {-1, +1} (from {0, 1} or {-1, +1}); anything else is
    a ``DataError`` naming the labels ``name`` (and their file)."""
    y_raw = np.asarray(y_raw)
    if y_raw.dtype.kind not in LABEL_KINDS:
        raise DataError(f"labels '{name}' have dtype {y_raw.dtype}", path=path)
    if y_raw.ndim != 1 or y_raw.shape[0] != n:
        raise DataError(
            f"labels '{name}' have shape {y_raw.shape}, inputs have {n} rows", path=path
        )
    y = y_raw.astype(np.float64)
    if not np.isfinite(y).all():
        raise DataError(f"labels '{name}' contain NaN or Inf", path=path)
    values = set(np.unique(y).tolist())
    if values <= {0.0, 1.0}:
        y = 2.0 * y - 1.0
    elif not values <= {-1.0, 1.0}:
        shown = sorted(values)[:6]
        raise DataError(
            f"labels '{name}' must be binary in {{0, 1}} or {{-1, +1}}, found {shown}", path=path
        )
    return y


def labels_with_positive(
    values: Any, n: int, positive: str | int | None, name: str, path: Path | None
) -> np.ndarray:
    """Labels of ``n`` inputs in {-1, +1}: without ``positive``, numbers in {0, 1} or {-1, +1}
    (:func:`binary_labels`; numeric strings are read as numbers); with it, ``+1`` where the value
    equals ``positive`` (compared as text: ``1`` matches ``"1"``), ``-1`` for the one other value.
    More than two values is a ``DataError`` (a binary head has two classes)."""
    try:
        raw = values if isinstance(values, np.ndarray) else np.asarray(values, dtype=object)
    except (OverflowError, ValueError) as exc:
        raise DataError(
            f"labels '{name}' cannot be read as one value per example", path=path
        ) from exc
    if raw.ndim != 1 or raw.shape[0] != n:
        raise DataError(
            f"labels '{name}' have shape {raw.shape[:4]}, inputs have {n} rows", path=path
        )
    if positive is None:
        if raw.dtype.kind in LABEL_KINDS:
            return binary_labels(raw, n, name, path)
        try:
            numbers = np.asarray([float(v) for v in raw.tolist()], dtype=np.float64)
        except OverflowError as exc:  # an integer too large for a float: not a binary label
            raise DataError(
                f"labels '{name}' must be binary in {{0, 1}} or {{-1, +1}}", path=path
            ) from exc
        except (TypeError, ValueError) as exc:
            raise DataError(
                f"labels '{name}' are not numbers; declare the positive class "
                "(positive: VALUE) for string labels",
                path=path,
            ) from exc
        return binary_labels(numbers, n, name, path)
    text = np.asarray([_label_text(v) for v in raw.tolist()], dtype=object)
    classes = sorted(set(text.tolist()))
    want = _label_text(positive)
    if len(classes) > 2:
        shown = ", ".join(repr(c[:20]) for c in classes[:6])
        raise DataError(
            f"labels '{name}' have {len(classes)} classes ({shown}...); a binary head needs two",
            path=path,
        )
    if want not in classes:
        shown = ", ".join(repr(c[:20]) for c in classes)
        raise DataError(
            f"the positive class {want[:40]!r} is not among the labels '{name}' ({shown})",
            path=path,
        )
    return np.where(text == want, 1.0, -1.0).astype(np.float64)


def _label_text(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return str(bool(value)).lower()
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    try:
        return str(value)
    except ValueError:  # an integer with more digits than Python prints
        return f"<an integer of {int(value).bit_length()} bits>"

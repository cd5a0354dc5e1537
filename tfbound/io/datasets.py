"""Data files: ``.npz`` (a key per array), ``.npy`` (memory-mapped), ``.pt`` tensors (weights-only).

Inputs are checked here for emptiness and dtype, and for NaN/Inf batch by batch where they are
used (one pass). Labels must be binary, in {0, 1} or {-1, +1}; they are returned in {-1, +1}.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tfbound.config import ArraySource
from tfbound.errors import DataError


@dataclass(frozen=True)
class LabeledArrays:
    x: np.ndarray
    y: np.ndarray  # float64 in {-1, +1}
    source: ArraySource


def _load_array(path: Path, key: str) -> np.ndarray:
    if not path.is_file():
        raise DataError("data file not found", path=path)
    suffix = path.suffix
    try:
        if suffix == ".npy":
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                if key not in npz.files:
                    raise DataError(f"no array '{key}' (has: {', '.join(npz.files)})", path=path)
                arr = npz[key]
        elif suffix in (".pt", ".pth"):
            obj = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(obj, dict):
                if key not in obj:
                    raise DataError(
                        f"no tensor '{key}' (has: {', '.join(map(str, obj))})", path=path
                    )
                obj = obj[key]
            if not isinstance(obj, torch.Tensor):
                raise DataError(f"'{key}' is not a tensor", path=path)
            arr = obj.numpy()
        else:
            raise DataError(
                f"unsupported data format '{suffix}' (use .npz, .npy or .pt)", path=path
            )
    except DataError:
        raise
    except pickle.UnpicklingError as exc:
        raise DataError("refused: loading this file would unpickle code", path=path) from exc
    except (ValueError, OSError, EOFError, RuntimeError, zipfile.BadZipFile) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"cannot read array '{key}': {msg}", path=path) from exc
    if arr.dtype.kind not in "biuf":
        raise DataError(f"array '{key}' has non-numeric dtype {arr.dtype}", path=path)
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise DataError(f"array '{key}' is empty (shape {arr.shape})", path=path)
    return arr


def load_inputs(source: ArraySource) -> np.ndarray:
    """The input array ``(n, ...)``; not copied into memory for ``.npy`` files."""
    return _load_array(source.path, source.x)


def load_labeled(source: ArraySource) -> LabeledArrays:
    """Inputs and binary labels mapped to {-1, +1}."""
    if source.y is None:
        raise DataError("a labeled split needs a label key 'y'", path=source.path)
    x = _load_array(source.path, source.x)
    y_raw = np.asarray(_load_array(source.path, source.y))
    if y_raw.ndim != 1 or y_raw.shape[0] != x.shape[0]:
        raise DataError(
            f"labels '{source.y}' have shape {y_raw.shape}, inputs have {x.shape[0]} rows",
            path=source.path,
        )
    y = y_raw.astype(np.float64)
    if not np.isfinite(y).all():
        raise DataError(f"labels '{source.y}' contain NaN or Inf", path=source.path)
    values = set(np.unique(y).tolist())
    if values <= {0.0, 1.0}:
        y = 2.0 * y - 1.0
    elif not values <= {-1.0, 1.0}:
        shown = sorted(values)[:6]
        raise DataError(
            f"labels '{source.y}' must be binary in {{0, 1}} or {{-1, +1}}, found {shown}",
            path=source.path,
        )
    return LabeledArrays(x=x, y=y, source=source)

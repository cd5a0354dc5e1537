"""The one checkpoint reader: every command resolves and reads weights through this module.

A checkpoint is a ``.safetensors`` file, a sharded ``*.safetensors.index.json`` (its shards must
lie inside the index's folder), a folder holding either (``model.safetensors.index.json``, else
``model.safetensors``, else its single ``*.safetensors`` file), or a weights-only PyTorch state
dict (``.pt``/``.pth``/``.bin``/``.ckpt``; a ``{'state_dict': ...}``-style wrapper is opened).
A file whose unpickling would run code is refused.

``resolve_checkpoint`` says which files hold which tensors; ``open_safetensors`` reads them
lazily, one tensor at a time (``tfbound inspect`` streams a large checkpoint this way);
``load_tensors`` reads everything into memory (and refuses NaN/Inf); ``load_module_weights``
loads a module strictly. Each kind of bad file has one message, whoever reads it.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from tfbound.errors import CheckpointError, first_line, missing
from tfbound.json_input import loads as bounded_json

PathLike = str | os.PathLike[str]

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
_FOLDER_CANDIDATES = ("model.safetensors.index.json", "model.safetensors")
#: every tensor of the file (a single safetensors file rather than an index)
ALL = "*"


@dataclass(frozen=True)
class CheckpointFiles:
    """Where a checkpoint's tensors are. ``shards``: ``{tensor name: file}`` for an index, or
    ``{ALL: file}`` for one file. ``folder``: where a ``config.json`` would sit beside it."""

    kind: Literal["safetensors", "torch"]
    path: Path
    folder: Path
    shards: Mapping[str, Path]

    @property
    def files(self) -> tuple[Path, ...]:
        return tuple(dict.fromkeys(self.shards.values()))


def _not_found(path: Path) -> CheckpointError:
    return CheckpointError(f"checkpoint file {missing(path)}", path=path)


def _bad_safetensors(path: Path, exc: BaseException) -> CheckpointError:
    return CheckpointError(
        f"not a readable safetensors file (truncated or corrupt): {first_line(exc)}", path=path
    )


#: the most bytes one tensor may claim, and the largest safetensors header read
MEMORY_BUDGET_BYTES = 8 * 2**30
_MAX_HEADER_BYTES = 100 * 2**20
_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "U16": 2, "I16": 2, "F16": 2,
    "BF16": 2, "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8,
}  # fmt: skip


def check_safetensors_header(path: Path) -> None:
    """Refuse a safetensors file whose header claims bytes it does not hold or over the budget.

    Read before the file is opened: the 8-byte header length, the JSON header, then each tensor's
    ``data_offsets`` against the file size, its shape x dtype size, and ``MEMORY_BUDGET_BYTES``.
    """
    size = path.stat().st_size
    try:
        with path.open("rb") as fh:
            head = fh.read(8)
            if len(head) != 8:
                raise ValueError("shorter than its 8-byte header length")
            n = int.from_bytes(head, "little")
            if n > min(size - 8, _MAX_HEADER_BYTES):
                raise ValueError(f"header length {n} exceeds the file or {_MAX_HEADER_BYTES}")
            header = bounded_json(fh.read(n).decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise _bad_safetensors(path, exc) from exc
    data_bytes = size - 8 - n
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, end = (int(v) for v in entry["data_offsets"])
            shape = [int(d) for d in entry["shape"]]
            item = _DTYPE_BYTES.get(str(entry["dtype"]), 0)  # 0: a dtype this table lacks
        except (KeyError, TypeError, ValueError) as exc:
            bad = ValueError(f"bad entry for tensor {str(name)[:80]!r}")
            raise _bad_safetensors(path, bad) from exc
        if any(d < 0 for d in shape):
            raise _bad_safetensors(path, ValueError(f"negative shape in {str(name)[:80]!r}"))
        claimed = 0 if 0 in shape else max(item, 1)
        for d in shape if claimed else ():
            claimed *= d
            if claimed > 1 << 64:  # already more than any file; stop multiplying
                break
        shown = str(name)[:80]
        if not 0 <= begin <= end <= data_bytes:
            raise CheckpointError(
                f"tensor {shown!r} claims bytes [{begin}, {end}) but the file holds {data_bytes} "
                "data bytes (truncated or forged header)",
                path=path,
            )
        if item == 0:
            claimed = end - begin  # a sub-byte or new dtype: safetensors checks its size
        elif claimed != end - begin:
            raise CheckpointError(
                f"tensor {shown!r} claims shape {tuple(shape[:8])} ({claimed} bytes) but its data "
                f"range holds {end - begin} bytes (truncated or forged header)",
                path=path,
            )
        if claimed > MEMORY_BUDGET_BYTES:
            raise CheckpointError(
                f"tensor {shown!r} needs {claimed} bytes, over the memory budget of "
                f"{MEMORY_BUDGET_BYTES} bytes",
                path=path,
            )


def _index_shards(index: Path) -> dict[str, Path]:
    try:
        data = bounded_json(index.read_text(encoding="utf-8"))
        weight_map = data["weight_map"]
        items = list(weight_map.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(
            f"not a safetensors index (needs a 'weight_map' of tensor -> shard): {first_line(exc)}",
            path=index,
        ) from exc
    folder = index.parent.resolve()
    shards: dict[str, Path] = {}
    for name, shard in items:
        if not isinstance(name, str) or not isinstance(shard, str) or not shard:
            raise CheckpointError(
                "not a safetensors index (needs a 'weight_map' of tensor -> shard): "
                f"entry {name!r}: {shard!r}",
                path=index,
            )
        target = (folder / shard).resolve()
        if Path(shard).is_absolute() or not target.is_relative_to(folder):
            raise CheckpointError(
                f"refused: shard {shard!r} of tensor {name!r} lies outside the index's folder",
                path=index,
            )
        shards[name] = target
    return shards


def resolve_checkpoint(path: PathLike) -> CheckpointFiles:
    """The files of a checkpoint path (see the module doc); ``CheckpointError`` if none fit."""
    p = Path(path)
    if p.is_dir():
        for candidate in _FOLDER_CANDIDATES:
            if (p / candidate).is_file():
                return resolve_checkpoint(p / candidate)
        found = sorted(p.glob("*.safetensors"))
        if len(found) == 1:
            return CheckpointFiles("safetensors", found[0], p, {ALL: found[0]})
        raise CheckpointError(
            "no model.safetensors(.index.json) and not exactly one *.safetensors file", path=p
        )
    if not p.is_file():
        raise _not_found(p)
    if p.name.endswith(".json"):
        shards = _index_shards(p)
        for shard in dict.fromkeys(shards.values()):
            if not shard.is_file():
                raise CheckpointError("shard listed in the index does not exist", path=shard)
        return CheckpointFiles("safetensors", p, p.parent, shards)
    if p.suffix.lower() in TORCH_SUFFIXES:
        return CheckpointFiles("torch", p, p.parent, {ALL: p})
    return CheckpointFiles("safetensors", p, p.parent, {ALL: p})


class SafetensorsReader:
    """The tensors of a resolved safetensors checkpoint, read lazily one at a time.

    Open with ``open_safetensors`` (a context manager: the memory-mapped files are closed on
    exit). ``entries()``: ``(name, shape, dtype)`` of every tensor, read from the headers only.
    """

    def __init__(self, files: CheckpointFiles, stack: contextlib.ExitStack) -> None:
        from safetensors import safe_open

        self.files = files
        self._where: dict[str, Path] = {}
        self._handles: dict[Path, Any] = {}
        self._entries: list[tuple[str, tuple[int, ...], str]] = []
        shards = files.shards
        for path in files.files:
            check_safetensors_header(path)
            try:
                handle = stack.enter_context(safe_open(str(path), framework="pt"))
                names = list(handle.keys())
                entries = []
                for n in names:
                    sl = handle.get_slice(n)
                    entries.append((n, tuple(int(s) for s in sl.get_shape()), sl.get_dtype()))
            except Exception as exc:  # safetensors raises its own error types
                raise _bad_safetensors(path, exc) from exc
            self._handles[path] = handle
            for name, shape, dtype in entries:
                if ALL not in shards and shards.get(name) != path:
                    continue  # an index decides which shard holds a tensor
                self._where[name] = path
                self._entries.append((name, shape, str(dtype)))
        missing = [n for n in shards if n != ALL and n not in self._where]
        if missing:
            raise CheckpointError(
                f"the index lists tensors not in their shards: {missing[:5]}", path=files.path
            )

    def entries(self) -> list[tuple[str, tuple[int, ...], str]]:
        return list(self._entries)

    def names(self) -> list[str]:
        return [e[0] for e in self._entries]

    def has(self, name: str) -> bool:
        return name in self._where

    def get(self, name: str) -> torch.Tensor:
        path = self._where[name]
        try:
            tensor: torch.Tensor = self._handles[path].get_tensor(name)
        except Exception as exc:
            raise CheckpointError(
                f"cannot read tensor {name}: {first_line(exc)}", path=path
            ) from exc
        return tensor


@contextlib.contextmanager
def open_safetensors(path: PathLike | CheckpointFiles) -> Iterator[SafetensorsReader]:
    """A lazy reader of a safetensors checkpoint (file, index or folder)."""
    files = path if isinstance(path, CheckpointFiles) else resolve_checkpoint(path)
    if files.kind != "safetensors":
        raise CheckpointError("not a safetensors checkpoint", path=files.path)
    with contextlib.ExitStack() as stack:
        yield SafetensorsReader(files, stack)


def load_torch_state_dict(path: PathLike) -> dict[str, torch.Tensor]:
    """Name -> tensor of a weights-only PyTorch file (``torch.load(..., weights_only=True)``)."""
    p = Path(path)
    if not p.is_file():
        raise _not_found(p)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            "refused: loading this file would unpickle code (only weights-only state dicts and "
            "safetensors are read; save `model.state_dict()` or use safetensors)",
            path=p,
        ) from exc
    except Exception as exc:  # torch raises many types for a truncated or foreign file
        raise CheckpointError(
            "not a readable PyTorch checkpoint (truncated or corrupt): "
            f"{type(exc).__name__}: {first_line(exc)}",
            path=p,
        ) from exc
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    what = "not a state dict (a mapping of names to tensors)"
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{what}: a {type(obj).__name__}", path=p)
    if not obj:
        raise CheckpointError(f"{what}: it is empty", path=p)
    bad = [
        str(k) for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))
    ]
    if bad:
        raise CheckpointError(f"{what}: entries that are not tensors: {bad[:5]}", path=p)
    return dict(obj)


def load_tensors(path: PathLike) -> dict[str, torch.Tensor]:
    """Name -> tensor of any checkpoint ``resolve_checkpoint`` accepts, NaN/Inf refused."""
    files = resolve_checkpoint(path)
    if files.kind == "torch":
        tensors = load_torch_state_dict(files.path)
    else:
        with open_safetensors(files) as reader:
            tensors = {name: reader.get(name) for name in reader.names()}
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"tensor '{name}' contains NaN or Inf", path=files.path)
    return tensors


def load_module_weights(module: nn.Module, path: PathLike, role: str) -> None:
    """Load a checkpoint into ``module`` strictly; a mismatch is a ``CheckpointError``."""
    tensors = load_tensors(path)
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    mismatched = [
        f"{k}: checkpoint {tuple(tensors[k].shape)} vs {role} {tuple(v.shape)}"
        for k, v in expected.items()
        if k in tensors and tensors[k].shape != v.shape
    ]
    not_float = [
        f"{k[:80]} ({str(tensors[k].dtype).removeprefix('torch.')})"
        for k, v in expected.items()
        if k in tensors and v.is_floating_point() and not tensors[k].is_floating_point()
    ]
    problems = []
    if not_float:
        problems.append("integer or bool weights for float parameters " + ", ".join(not_float[:3]))
    if mismatched:
        problems.append("shape mismatch " + "; ".join(mismatched[:3]))
    if missing:
        problems.append(f"missing {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    if unexpected:
        more = " ..." if len(unexpected) > 5 else ""
        problems.append(f"unexpected {', '.join(unexpected[:5])}{more}")
    if problems:
        raise CheckpointError(
            f"weights do not fit the {role} architecture: {'; '.join(problems)}", path=path
        )
    module.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()}, strict=True)

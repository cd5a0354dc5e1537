"""A Hugging Face ``datasets`` folder written by ``save_to_disk`` (the optional ``datasets``:
``pip install 'tfbound[datasets]'``).

Only a folder of Arrow files and their JSON metadata is opened (``datasets.load_from_disk``, which
memory-maps the Arrow files; no script runs, nothing is unpickled): any other file in it is
refused. A ``DatasetDict`` folder (``dataset_dict.json``) needs ``split:``. The columns are read
as in a table (``tfbound.io.tables.from_arrow``); a ``ClassLabel`` label column may name its
positive class by name (``positive: pos``) or by index.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tfbound.config import ArraySource
from tfbound.errors import DataError, first_line
from tfbound.io.tables import MAX_ROWS, MAX_TABLE_BYTES, RawSplit, check_arrow_type, from_arrow
from tfbound.json_input import loads as bounded_json

DATASETS_HINT = "pip install 'tfbound[datasets]' (the 'datasets' package)"
_METADATA = ("dataset_info.json", "state.json", "dataset_dict.json")
MAX_FILES = 10_000


def is_hf_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in _METADATA)


def _check_folder(folder: Path) -> None:
    """Only Arrow files and JSON metadata (and split subfolders of the same), under the size cap."""
    total, count = 0, 0
    for p in folder.rglob("*"):
        count += 1
        if count > MAX_FILES:
            raise DataError(f"more than {MAX_FILES} files", path=folder)
        if p.is_symlink():
            raise DataError(f"'{_rel(p, folder)}' is a link (refused)", path=folder)
        if p.is_dir():
            continue
        if p.suffix not in (".arrow", ".json") and p.name != ".gitattributes":
            raise DataError(
                f"'{_rel(p, folder)}' is not an Arrow or JSON file (a saved dataset holds only "
                "those; refused)",
                path=folder,
            )
        total += p.stat().st_size
    if total > MAX_TABLE_BYTES:
        raise DataError(f"{total} bytes of data, over the limit of {MAX_TABLE_BYTES}", path=folder)


def _rel(p: Path, folder: Path) -> str:
    text = str(p.relative_to(folder))
    return text if len(text) <= 80 else text[:77] + "..."


def read_hf_dataset(source: ArraySource, labeled: bool) -> RawSplit:
    folder = source.path
    if not is_hf_dataset(folder):
        raise DataError(
            "not a saved Hugging Face dataset (no dataset_info.json, state.json or "
            "dataset_dict.json)",
            path=folder,
        )
    _check_folder(folder)
    if (folder / "dataset_dict.json").is_file():
        splits = _dict_splits(folder)
        if source.split is None:
            raise DataError(
                f"a DatasetDict: name the split with 'split:' (one of {', '.join(splits[:10])})",
                path=folder,
            )
        if source.split not in splits:
            raise DataError(
                f"no split '{source.split[:40]}' (has: {', '.join(splits[:10])})", path=folder
            )
        folder = folder / source.split
    elif source.split is not None:
        raise DataError("'split:' names a split of a DatasetDict; this is one dataset", path=folder)
    try:
        import datasets
    except ImportError as exc:
        raise DataError(f"a saved dataset needs the optional 'datasets': {DATASETS_HINT}") from exc
    try:
        ds = datasets.load_from_disk(str(folder), keep_in_memory=False)
    except Exception as exc:  # datasets raises many types for a broken folder
        raise DataError(
            f"not a readable saved dataset: {type(exc).__name__}: {first_line(exc, 120)}",
            path=folder,
        ) from exc
    if not isinstance(ds, datasets.Dataset):
        raise DataError("not a single dataset", path=folder)
    if ds.num_rows > MAX_ROWS:
        raise DataError(f"{ds.num_rows} rows, over the limit of {MAX_ROWS}", path=folder)
    want = list(source.columns) if source.columns else [source.x]
    if labeled and source.y is not None:
        want.append(source.y)
    names = list(ds.column_names)
    for name in want:
        if name not in names:
            from tfbound.io.tables import _missing

            raise _missing(name, names, folder)
    schema = ds.features.arrow_schema
    for name in want:
        check_arrow_type(schema.field(name).type, name, folder)
    positive = source.positive
    if labeled and source.y is not None and positive is not None:
        positive = _class_label_positive(ds.features[source.y], positive, folder)
    try:
        table = ds.select_columns(want).with_format("arrow")[0 : ds.num_rows]
    except Exception as exc:
        raise DataError(
            f"cannot read the dataset: {type(exc).__name__}: {first_line(exc, 120)}", path=folder
        ) from exc
    raw = from_arrow(table, source, labeled, folder)
    return RawSplit(raw.texts, raw.values, raw.labels, positive=positive)


def _class_label_positive(feature: Any, positive: str | int, folder: Path) -> str | int:
    names = getattr(feature, "names", None)
    if isinstance(names, list) and isinstance(positive, str) and positive in names:
        return names.index(positive)
    return positive


def _dict_splits(folder: Path) -> list[str]:
    try:
        raw = bounded_json((folder / "dataset_dict.json").read_text(encoding="utf-8"))
        splits = raw["splits"]
        if not isinstance(splits, list) or not all(isinstance(s, str) for s in splits):
            raise ValueError("splits is not a list of names")
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise DataError(
            f"unreadable dataset_dict.json: {first_line(exc, 80)}", path=folder
        ) from exc
    for s in splits:
        if "/" in s or "\\" in s or s in ("", ".", ".."):
            raise DataError(
                "dataset_dict.json names a split that is not a folder name", path=folder
            )
    return splits


__all__ = ["DATASETS_HINT", "is_hf_dataset", "read_hf_dataset"]

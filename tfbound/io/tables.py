"""Tables: ``.csv`` / ``.tsv`` (by suffix; a header row names the columns) and ``.parquet``
(the optional ``pyarrow``: ``pip install 'tfbound[parquet]'``); the columns of a saved Hugging
Face dataset go through :func:`from_arrow` too.

A split reads ``x`` (a text column) or ``x: [c1, c2, ...]`` (numeric columns, one input row of
``k`` values each; in an Arrow table one column of equal-length numeric lists works too) and, for
a labeled split, the label column ``y``. Sizes are checked before anything is read: the file's
bytes, the row count, the cells of one row.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tfbound.config import ArraySource
from tfbound.errors import DataError, first_line, missing

#: the most bytes a table file (CSV, TSV, JSONL, Parquet) may have before it is read
MAX_TABLE_BYTES = 4 * 2**30
#: the most rows of one split, and bytes of one CSV cell
MAX_ROWS = 50_000_000
MAX_CELL_BYTES = 16 * 2**20
#: the most numeric values of one split read from a table (float64: 8 GiB)
MAX_VALUES = 2**30
PARQUET_HINT = "pip install 'tfbound[parquet]' (the 'pyarrow' package)"


@dataclass(frozen=True)
class RawSplit:
    """A split as read: texts or a numeric ``(n, k)`` float64 array, and the raw labels."""

    texts: list[str] | None
    values: np.ndarray | None
    labels: Any = None  # a sequence of n values, or None (unlabeled)
    #: the positive class as the labels spell it (a ClassLabel's name read as its index)
    positive: str | int | None = None

    @property
    def n(self) -> int:
        return len(self.texts) if self.texts is not None else int(self.values.shape[0])  # type: ignore[union-attr]


def check_file_size(path: Path, limit: int | None = None) -> None:
    """A file that exists, is not empty and has at most ``limit`` bytes (``MAX_TABLE_BYTES``)."""
    limit = MAX_TABLE_BYTES if limit is None else limit
    if not path.is_file():
        raise DataError(f"data file {missing(path)}", path=path)
    size = path.stat().st_size
    if size > limit:
        raise DataError(f"the file has {size} bytes, over the limit of {limit}", path=path)
    if size == 0:
        raise DataError("the file is empty", path=path)


def _short(name: str, limit: int = 60) -> str:
    return name if len(name) <= limit else name[: limit - 3] + "..."


def _missing(name: str, available: Sequence[str], path: Path) -> DataError:
    shown = ", ".join(_short(c, 40) for c in list(available)[:12])
    more = f" and {len(available) - 12} more" if len(available) > 12 else ""
    return DataError(f"no column '{_short(name)}' (has: {shown}{more})", path=path)


def read_delimited(source: ArraySource, labeled: bool) -> RawSplit:
    """A ``.csv`` (comma) or ``.tsv`` (tab) file with a header row, read row by row."""
    path = source.path
    check_file_size(path)
    delimiter = "\t" if path.suffix == ".tsv" else ","
    csv.field_size_limit(MAX_CELL_BYTES)
    want = list(source.columns) if source.columns else [source.x]
    if labeled and source.y is not None:
        want.append(source.y)
    texts: list[str] = []
    values: list[list[float]] = []
    labels: list[str] = []
    numeric = bool(source.columns)
    try:
        with path.open(newline="", encoding="utf-8-sig", errors="strict") as fh:
            reader = csv.reader(fh, delimiter=delimiter, strict=True)
            header = next(reader, None)
            if header is None:
                raise DataError("no header row", path=path)
            if len(set(header)) != len(header):
                raise DataError("the header names a column twice", path=path)
            where = {name: i for i, name in enumerate(header)}
            for name in want:
                if name not in where:
                    raise _missing(name, header, path)
            cols = [where[c] for c in want]
            k = len(source.columns)
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # a blank line
                line = reader.line_num
                if len(row) != len(header):
                    raise DataError(
                        f"line {line}: {len(row)} cells, the header has {len(header)}", path=path
                    )
                if len(texts) + len(values) >= MAX_ROWS:
                    raise DataError(f"more than {MAX_ROWS} rows", path=path)
                cells = [row[c] for c in cols]
                if numeric:
                    values.append(_numbers(cells[:k], want, line, path))
                else:
                    texts.append(cells[0])
                if labeled and source.y is not None:
                    labels.append(cells[-1].strip())
    except UnicodeDecodeError as exc:
        raise DataError("not UTF-8 text", path=path) from exc
    except csv.Error as exc:
        raise DataError(f"not a readable table: {first_line(exc, 100)}", path=path) from exc
    n = len(values) if numeric else len(texts)
    if n == 0:
        raise DataError("the table has no rows", path=path)
    if numeric:
        if n * len(source.columns) > MAX_VALUES:
            raise DataError(f"more than {MAX_VALUES} numeric values", path=path)
        arr = np.asarray(values, dtype=np.float64)
        return RawSplit(None, arr, labels if labeled else None)
    return RawSplit(texts, None, labels if labeled else None)


def _numbers(cells: list[str], names: list[str], line: int, path: Path) -> list[float]:
    out = []
    for name, cell in zip(names, cells, strict=False):
        try:
            v = float(cell)
        except ValueError:
            raise DataError(
                f"line {line}: column '{_short(name)}' holds {_short(repr(cell), 30)}, "
                "not a number",
                path=path,
            ) from None
        if not math.isfinite(v):
            raise DataError(f"line {line}: column '{_short(name)}' is NaN or Inf", path=path)
        out.append(v)
    return out


def read_parquet(source: ArraySource, labeled: bool) -> RawSplit:
    """The named columns of a ``.parquet`` file (``pyarrow``; nothing is unpickled)."""
    path = source.path
    check_file_size(path)
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise DataError(f"a .parquet file needs the optional 'pyarrow': {PARQUET_HINT}") from exc
    want = _wanted(source, labeled)
    try:
        pf = pq.ParquetFile(path)
        meta = pf.metadata
        names = pf.schema_arrow.names
        for name in want:
            if name not in names:
                raise _missing(name, names, path)
        if meta.num_rows > MAX_ROWS:
            raise DataError(f"{meta.num_rows} rows, over the limit of {MAX_ROWS}", path=path)
        claimed = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        if claimed > MAX_TABLE_BYTES:
            raise DataError(f"{claimed} bytes uncompressed, over {MAX_TABLE_BYTES}", path=path)
        for name in want:
            check_arrow_type(pf.schema_arrow.field(name).type, name, path)
        table = pf.read(columns=want, use_pandas_metadata=False)
    except DataError:
        raise
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
        raise DataError(
            f"not a readable Parquet file: {type(exc).__name__}: {first_line(exc, 120)}",
            path=path,
        ) from exc
    return from_arrow(table, source, labeled, path)


def _wanted(source: ArraySource, labeled: bool) -> list[str]:
    want = list(source.columns) if source.columns else [source.x]
    if labeled and source.y is not None:
        want.append(source.y)
    return want


def check_arrow_type(t: Any, name: str, path: Path) -> None:
    """A column may hold strings, numbers, booleans or lists of numbers; anything else (binary,
    structs, extension types: a pickled Python object is one of these) is refused."""
    import pyarrow as pa

    ok = (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_boolean(t)
    )
    if not ok and (
        pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
    ):
        v = t.value_type
        ok = pa.types.is_integer(v) or pa.types.is_floating(v)
    if not ok:
        raise DataError(
            f"column '{_short(name)}' has type {_short(str(t), 60)}; tfbound reads strings, "
            "numbers, booleans and lists of numbers (binary and object columns are refused)",
            path=path,
        )


def from_arrow(table: Any, source: ArraySource, labeled: bool, path: Path) -> RawSplit:
    """Texts or numeric rows (and raw labels) of a ``pyarrow.Table``."""
    import pyarrow as pa

    n = table.num_rows
    if n == 0:
        raise DataError("the table has no rows", path=path)
    labels = None
    if labeled and source.y is not None:
        col = table.column(source.y)
        _no_nulls(col, source.y, path)
        t = col.type
        if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
            raise DataError(f"labels '{_short(source.y)}' are lists", path=path)
        labels = col.to_numpy(zero_copy_only=False)
    if source.columns:
        parts = []
        for name in source.columns:
            col = table.column(name)
            _no_nulls(col, name, path)
            if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
                raise DataError(
                    f"column '{_short(name)}' has type {_short(str(col.type))}, not a number",
                    path=path,
                )
            parts.append(col.to_numpy(zero_copy_only=False).astype(np.float64))
        if n * len(parts) > MAX_VALUES:
            raise DataError(f"more than {MAX_VALUES} numeric values", path=path)
        return RawSplit(None, _finite(np.stack(parts, axis=1), source.x, path), labels)
    col = table.column(source.x)
    _no_nulls(col, source.x, path)
    t = col.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return RawSplit([str(s) for s in col.to_pylist()], None, labels)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return RawSplit(None, _finite(_list_rows(col, source.x, path), source.x, path), labels)
    raise DataError(
        f"column '{_short(source.x)}' has type {_short(str(t))}: name a text column, a column of "
        "numeric lists, or numeric columns as a list (x: [c1, c2, ...])",
        path=path,
    )


def _no_nulls(col: Any, name: str, path: Path) -> None:
    if col.null_count:
        raise DataError(f"column '{_short(name)}' has {col.null_count} missing values", path=path)


def _list_rows(col: Any, name: str, path: Path) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    col = col.combine_chunks() if hasattr(col, "combine_chunks") else col
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
    if lengths.size == 0 or lengths.min() != lengths.max() or lengths[0] == 0:
        raise DataError(f"column '{_short(name)}' holds lists of different lengths", path=path)
    k = int(lengths[0])
    if col.num_chunks if isinstance(col, pa.ChunkedArray) else False:
        col = col.combine_chunks()
    if len(col) * k > MAX_VALUES:
        raise DataError(f"more than {MAX_VALUES} numeric values", path=path)
    flat = pc.list_flatten(col)
    if flat.null_count:
        raise DataError(f"column '{_short(name)}' has missing values", path=path)
    return flat.to_numpy(zero_copy_only=False).astype(np.float64).reshape(len(col), k)


def _finite(x: np.ndarray, name: str, path: Path) -> np.ndarray:
    if not np.isfinite(x).all():
        raise DataError(f"inputs '{_short(name)}' contain NaN or Inf", path=path)
    return x


__all__ = [
    "MAX_ROWS",
    "MAX_TABLE_BYTES",
    "PARQUET_HINT",
    "RawSplit",
    "check_arrow_type",
    "check_file_size",
    "from_arrow",
    "read_delimited",
    "read_parquet",
]

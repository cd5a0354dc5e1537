"""Which reader a split's source needs, by its path: one entry point for every data format.

- a folder with ``transform:``: an image folder (``tfbound.io.images``);
- a folder saved by ``datasets``' ``save_to_disk``: ``tfbound.io.hfdatasets``;
- ``.csv`` / ``.tsv`` / ``.parquet``: a table (``tfbound.io.tables``);
- ``.jsonl``, or ``.npz`` whose ``x`` is a ``<U`` array: texts (``tfbound.io.text``);
- ``.npz`` / ``.npy`` / ``.pt`` numeric arrays (``tfbound.io.datasets``).

Texts are tokenized by the encoder's tokenizer, loaded only when a text split is read.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tfbound.config import ArraySource
from tfbound.errors import DataError
from tfbound.io.datasets import (
    LabeledArrays,
    labels_with_positive,
    load_inputs,
    load_labeled,
)
from tfbound.io.tables import RawSplit

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet")
TEXT_SUFFIXES = (".jsonl",)


def npz_is_text(path: Path, key: str) -> bool:
    """Whether the array ``key`` of an ``.npz`` is fixed-width unicode (its header only)."""
    from tfbound.io.datasets import _npy_header

    if not path.is_file():
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            member = f"{key}.npy" if f"{key}.npy" in names else key
            if member not in names:
                return False
            with zf.open(member) as fh:
                _, dtype = _npy_header(fh, path, key)
    except (zipfile.BadZipFile, OSError, ValueError):
        return False  # the numeric reader names the problem
    return dtype.kind == "U"


def kind_of(source: ArraySource) -> str:
    """``images``, ``hf``, ``table``, ``text`` or ``array``."""
    from tfbound.io.hfdatasets import is_hf_dataset

    path = source.path
    if source.transform is not None:
        return "images"
    if path.is_dir():
        if is_hf_dataset(path):
            return "hf"
        raise DataError(
            "a data folder must be an image folder (with 'transform:') or a dataset saved "
            "with datasets' save_to_disk",
            path=path,
        )
    suffix = path.suffix.lower()
    if suffix in TABLE_SUFFIXES:
        return "table"
    if suffix in TEXT_SUFFIXES or (suffix == ".npz" and npz_is_text(path, source.x)):
        return "text"
    if source.columns:
        raise DataError("a list of columns ('x: [...]') needs a table or a dataset", path=path)
    return "array"


def read_source(source: ArraySource, labeled: bool) -> RawSplit:
    """Texts or numeric rows of a table, a saved dataset or a text file, with labels in
    {-1, +1} (``labels`` of the result) when ``labeled``."""
    kind = kind_of(source)
    if kind == "table":
        from tfbound.io.tables import read_delimited, read_parquet

        parquet = source.path.suffix.lower() == ".parquet"
        raw = read_parquet(source, labeled) if parquet else read_delimited(source, labeled)
    elif kind == "hf":
        from tfbound.io.hfdatasets import read_hf_dataset

        raw = read_hf_dataset(source, labeled)
    elif kind == "text":
        from tfbound.io.text import read_texts

        texts, labels = read_texts(source, labeled)
        raw = RawSplit(texts, None, labels)
    else:
        raise DataError(f"not a table or text source (a {kind} source)", path=source.path)
    if not labeled:
        return RawSplit(raw.texts, raw.values, None)
    if source.y is None:
        raise DataError("a labeled split needs a label key 'y'", path=source.path)
    n = raw.n
    positive = raw.positive if raw.positive is not None else source.positive
    y = labels_with_positive(raw.labels, n, positive, source.y, source.path)
    return RawSplit(raw.texts, raw.values, y)


class DataReader:
    """Loaders of labeled and unlabeled splits of any format; ``text`` makes the tokenizer (called
    once, on the first text split)."""

    def __init__(
        self,
        text: Callable[[], Any] | None = None,
        *,
        labeled: Callable[[ArraySource], LabeledArrays] = load_labeled,
        inputs: Callable[[ArraySource], np.ndarray] = load_inputs,
    ) -> None:
        self._text_factory = text
        self._text: Any = None
        self._labeled = labeled
        self._inputs = inputs

    def text(self) -> Any:
        if self._text is None:
            if self._text_factory is None:
                raise DataError("text data needs an encoder with a tokenizer")
            self._text = self._text_factory()
        return self._text

    def load_inputs(self, source: ArraySource) -> Any:
        kind = kind_of(source)
        if kind == "array":
            return self._inputs(source)
        if kind == "images":
            from tfbound.io.images import load_image_inputs

            return load_image_inputs(source)
        raw = read_source(source, labeled=False)
        if raw.texts is not None:
            return self.text().tokenize(raw.texts)
        assert raw.values is not None
        return raw.values

    def load_labeled(self, source: ArraySource) -> LabeledArrays:
        kind = kind_of(source)
        if kind == "array":
            return self._labeled(source)
        if kind == "images":
            from tfbound.io.images import load_image_labeled

            return load_image_labeled(source)
        raw = read_source(source, labeled=True)
        y = np.asarray(raw.labels, dtype=np.float64)
        x: Any = self.text().tokenize(raw.texts) if raw.texts is not None else raw.values
        return LabeledArrays(x=x, y=y, source=source)


__all__ = ["DataReader", "kind_of", "npz_is_text", "read_source"]

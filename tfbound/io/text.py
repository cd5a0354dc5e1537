"""Text data of a BERT encoder: texts from ``.npz``/``.jsonl`` files, tokenized into arrays.

Text data files: ``.npz`` with a fixed-width unicode array (numpy dtype ``<U``, readable with
``allow_pickle=False``) under the split's ``x`` key and numeric labels under ``y``; or ``.jsonl``,
one JSON object per line with the text under ``x`` and the label under ``y`` (keys from the config,
default ``x``/``y``).

Text is tokenized by the optional ``tokenizers`` package (``pip install 'tfbound[bert]'``) from a
``tokenizer.json`` into a float array ``(n, 2, T)``: row 0 the token ids, row 1 the attention
mask, the input of ``tfbound.models.bert.BertEncoder``. Ids are exact in float32 below ``2^24``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tfbound.config import ArraySource, ModuleSpec
from tfbound.errors import ConfigError, DataError, InputError
from tfbound.io.datasets import LabeledArrays

BERT_EXTRA_HINT = "pip install 'tfbound[bert]' (the 'tokenizers' package)"
_MAX_EXACT_ID = 2**24  # integers are exact in float32 below this


def load_tokenizer(path: Path, max_length: int) -> Any:
    """A ``tokenizers.Tokenizer`` from ``tokenizer.json``: truncating at ``max_length``, no
    padding (``encode_texts`` pads to the longest text of a split)."""
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise InputError(
            f"the BERT encoder needs the optional 'tokenizers' package: {BERT_EXTRA_HINT}"
        ) from exc
    if not path.is_file():
        raise InputError("tokenizer file not found", path=path)
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises its own exception type
        raise InputError(f"not a readable tokenizer.json ({exc})", path=path) from exc
    tok.no_padding()
    tok.enable_truncation(max_length=max_length)
    return tok


def encode_texts(tokenizer: Any, texts: Sequence[str], pad_id: int = 0) -> np.ndarray:
    """``(n, 2, T)`` float32: token ids and attention masks, padded to the longest text."""
    encodings = tokenizer.encode_batch(list(texts))
    t = max((len(e.ids) for e in encodings), default=0)
    out = np.zeros((len(encodings), 2, max(t, 1)), dtype=np.float32)
    out[:, 0, :] = pad_id
    for i, e in enumerate(encodings):
        ids = np.asarray(e.ids, dtype=np.int64)
        if ids.size and int(ids.max()) >= _MAX_EXACT_ID:
            raise InputError(f"token id {int(ids.max())} is not exact in float32")
        out[i, 0, : ids.size] = ids
        out[i, 1, : ids.size] = np.asarray(e.attention_mask, dtype=np.float32)
    return out


def read_texts(source: ArraySource, labeled: bool) -> tuple[list[str], np.ndarray | None]:
    """Texts (and raw labels) of a ``.npz`` with a ``<U`` array or of a ``.jsonl`` file."""
    path = source.path
    if not path.is_file():
        raise DataError("data file not found", path=path)
    labels: Any = None
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                for key in (source.x, *([source.y] if labeled and source.y else [])):
                    if key not in npz.files:
                        raise DataError(
                            f"no array '{key}' (has: {', '.join(npz.files)})", path=path
                        )
                x = npz[source.x]
                if labeled and source.y:
                    labels = npz[source.y]
        except DataError:
            raise
        except (ValueError, OSError) as exc:
            raise DataError(f"cannot read text array '{source.x}': {exc}", path=path) from exc
        if x.dtype.kind != "U" or x.ndim != 1:
            raise DataError(
                f"text array '{source.x}' must be 1-D fixed-width unicode (dtype <U), "
                f"got {x.dtype} of shape {x.shape}",
                path=path,
            )
        texts = [str(s) for s in x]
    elif path.suffix == ".jsonl":
        texts, raw = [], []
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    text = row[source.x]
                    label = row[source.y] if labeled and source.y else None
                except (ValueError, KeyError, TypeError) as exc:
                    raise DataError(
                        f"line {lineno}: not a JSON object with {exc}", path=path
                    ) from exc
                if not isinstance(text, str):
                    raise DataError(f"line {lineno}: '{source.x}' is not a string", path=path)
                texts.append(text)
                raw.append(label)
        labels = np.asarray(raw) if labeled else None
    else:
        raise DataError(
            f"unsupported text data format '{path.suffix}' (use .npz with a <U array or .jsonl)",
            path=path,
        )
    if not texts:
        raise DataError(f"no texts in '{source.x}'", path=path)
    return texts, labels


def _binary_labels(raw: np.ndarray, n: int, source: ArraySource) -> np.ndarray:
    try:
        y = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"labels '{source.y}' are not numbers", path=source.path) from exc
    if y.ndim != 1 or y.shape[0] != n or not np.isfinite(y).all():
        raise DataError(
            f"labels '{source.y}' must be {n} finite numbers, got shape {y.shape}",
            path=source.path,
        )
    values = set(np.unique(y).tolist())
    if values <= {0.0, 1.0}:
        return 2.0 * y - 1.0
    if values <= {-1.0, 1.0}:
        return y
    raise DataError(
        f"labels '{source.y}' must be binary in {{0, 1}} or {{-1, +1}}, found {sorted(values)[:6]}",
        path=source.path,
    )


class TextData:
    """Loaders of the text splits of a BERT config: texts -> ``(n, 2, T)`` token arrays."""

    def __init__(self, tokenizer: Any, pad_id: int = 0) -> None:
        self.tokenizer = tokenizer
        self.pad_id = pad_id

    @classmethod
    def from_spec(cls, spec: ModuleSpec) -> TextData:
        max_length = spec.options.get("max_length")
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 2:
            raise ConfigError(f"'encoder.max_length' must be an integer >= 2, got {max_length!r}")
        path = spec.options.get("tokenizer")
        assert isinstance(path, Path)
        tok = load_tokenizer(path, max_length)
        pad = tok.token_to_id("[PAD]")
        return cls(tok, 0 if pad is None else int(pad))

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return encode_texts(self.tokenizer, texts, self.pad_id)

    def load_inputs(self, source: ArraySource) -> np.ndarray:
        texts, _ = read_texts(source, labeled=False)
        return self.encode(texts)

    def load_labeled(self, source: ArraySource) -> LabeledArrays:
        if source.y is None:
            raise DataError("a labeled split needs a label key 'y'", path=source.path)
        texts, raw = read_texts(source, labeled=True)
        assert raw is not None
        y = _binary_labels(raw, len(texts), source)
        return LabeledArrays(x=self.encode(texts), y=y, source=source)


__all__ = ["BERT_EXTRA_HINT", "TextData", "encode_texts", "load_tokenizer", "read_texts"]

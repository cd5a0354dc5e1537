"""Text inputs of an encoder with a tokenizer: texts tokenized once, padded per batch.

Texts come from any text source (``tfbound.io.sources``: ``.jsonl``, ``.npz`` with a ``<U``
array, a ``.csv``/``.tsv``/``.parquet`` text column, a saved Hugging Face dataset). They are
tokenized by the optional ``tokenizers`` package (``pip install 'tfbound[bert]'``) from a
``tokenizer.json`` (``encoder.tokenizer``: the file or its folder; else the one beside the
encoder's weights), truncated at the encoder's ``max_length`` (a counted warning) and kept as one
flat ``int32`` array of token ids with offsets: memory grows with the number of tokens, never with
``n x`` the longest text.

A batch is the float32 array ``(b, 2, T)`` the text encoders read: row 0 the token ids, row 1 the
attention mask, padded to the longest text *of the batch*. :meth:`TextInputs.sorted_batches`
orders a split by token length first, so a batch holds texts of similar length (little padding);
``tfbound.features.feature_batches`` puts the features back in the split's order. The attention
mask makes the padding irrelevant: the features equal those of any other padding. Ids are exact in
float32 below ``2^24``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tfbound.config import MAX_SIZE, ArraySource, ModuleSpec
from tfbound.errors import ConfigError, DataError, InputError, first_line, missing
from tfbound.io.datasets import LabeledArrays
from tfbound.io.overlap import text_digest
from tfbound.json_input import loads as bounded_json

BERT_EXTRA_HINT = "pip install 'tfbound[bert]' (the 'tokenizers' package)"
TOKENIZER_FILE = "tokenizer.json"
DEFAULT_MAX_LENGTH = 512  # when neither the config nor a config.json beside the weights says
MAX_TOKENIZER_BYTES = 256 * 2**20
_MAX_EXACT_ID = 2**24  # integers are exact in float32 below this
_TOKENIZE_CHUNK = 1024  # texts per encode_batch call


def tokenizer_path(spec: ModuleSpec) -> Path | None:
    """The ``tokenizer.json`` of an encoder: ``tokenizer:`` (a file, or a folder holding one),
    else the one beside the encoder's weights (in the weights folder, or the weights file's)."""
    given = spec.options.get("tokenizer")
    if given is not None:
        path = Path(given)
        return path / TOKENIZER_FILE if path.is_dir() else path
    if spec.weights is None:
        return None
    folder = spec.weights if spec.weights.is_dir() else spec.weights.parent
    found = folder / TOKENIZER_FILE
    return found if found.is_file() else None


def max_length_of(spec: ModuleSpec) -> int:
    """``encoder.max_length``, else ``max_position_embeddings`` of a ``config.json`` beside the
    weights, else 512."""
    value = spec.options.get("max_length")
    if value == "auto":
        value = None
    positions = None
    if spec.weights is not None:
        folder = spec.weights if spec.weights.is_dir() else spec.weights.parent
        positions = _config_max_positions(folder / "config.json")
    if value is None:
        value = positions
    if value is None:
        return DEFAULT_MAX_LENGTH
    if not isinstance(value, int) or isinstance(value, bool) or not 2 <= value <= MAX_SIZE:
        raise ConfigError(f"'encoder.max_length' must be an integer >= 2, got {value!r}"[:200])
    if positions is not None and value > positions:
        raise ConfigError(
            f"'encoder.max_length' is {value}, but the model has {positions} positions "
            "(max_position_embeddings in its config.json)"
        )
    return value


def _config_max_positions(path: Path) -> int | None:
    if not path.is_file() or path.stat().st_size > 2**20:
        return None
    try:
        value = bounded_json(path.read_text(encoding="utf-8")).get("max_position_embeddings")
    except (ValueError, OSError, AttributeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def load_tokenizer(path: Path, max_length: int) -> Any:
    """A ``tokenizers.Tokenizer`` from ``tokenizer.json`` (JSON only: no code runs), truncating
    at ``max_length``, without padding (batches are padded by :class:`TextInputs`)."""
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise InputError(
            f"text data needs the optional 'tokenizers' package: {BERT_EXTRA_HINT}"
        ) from exc
    if not path.is_file():
        raise InputError(f"tokenizer file {missing(path)}", path=path)
    if path.stat().st_size > MAX_TOKENIZER_BYTES:
        raise InputError(f"tokenizer file is over {MAX_TOKENIZER_BYTES} bytes", path=path)
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises its own exception type
        raise InputError(f"not a readable tokenizer.json ({first_line(exc)})", path=path) from exc
    tok.no_padding()
    tok.enable_truncation(max_length=max_length)
    return tok


def _pad_id(tok: Any) -> int:
    for token in ("[PAD]", "<pad>", "<|padding|>"):
        found = tok.token_to_id(token)
        if found is not None:
            return int(found)
    return 0


class TextInputs:
    """A split of texts as token ids: ``(n, 2, T)`` arrays read by slices, padded per slice.

    ``shape[2]`` is the longest tokenized text of the split (what a whole-split padding would
    use; only reported, never allocated). ``n_truncated`` texts were cut at ``max_length``."""

    is_text = True
    dtype = np.dtype(np.float32)
    ndim = 3

    def __init__(
        self,
        ids: np.ndarray,
        offsets: np.ndarray,
        digests: Sequence[bytes],
        *,
        pad_id: int = 0,
        truncated: np.ndarray | None = None,
        max_length: int = 0,
    ) -> None:
        self.ids = ids  # int32, every text's ids back to back
        self.offsets = offsets  # int64 (n + 1,)
        self.digests = list(digests)
        self.pad_id = pad_id
        self.max_length = max_length
        self.lengths = np.diff(offsets)
        n = len(self.lengths)
        self.truncated = np.zeros(n, bool) if truncated is None else truncated  # per text
        longest = int(self.lengths.max()) if n else 0
        self.shape: tuple[int, ...] = (n, 2, max(longest, 1))

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def n_truncated(self) -> int:
        return int(self.truncated.sum())

    def rows(self, index: np.ndarray) -> np.ndarray:
        """The texts ``index`` (in that order) as ``(b, 2, T_b)``, ``T_b`` their longest."""
        lengths = self.lengths[index]
        t = max(int(lengths.max()) if lengths.size else 0, 1)
        out = np.zeros((len(index), 2, t), dtype=np.float32)
        out[:, 0, :] = self.pad_id
        for row, i in enumerate(index):
            a, b = self.offsets[i], self.offsets[i + 1]
            out[row, 0, : b - a] = self.ids[a:b]
            out[row, 1, : b - a] = 1.0
        return out

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice):
            raise TypeError("TextInputs reads slices of rows")
        return self.rows(np.arange(*key.indices(self.shape[0])))

    def batches(self, rows: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
        """The texts ``rows`` in batches, ordered by token length (stable): at most
        ``batch_size`` texts and ``batch_size x`` the median length of ``rows`` in padded tokens
        each, so one long text is padded with few others (not with ``batch_size - 1`` short
        ones)."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return
        lens = self.lengths[rows]
        order = np.argsort(lens, kind="stable")
        lens = lens[order]
        budget = batch_size * max(1, int(np.median(lens)))
        start, n = 0, int(order.shape[0])
        while start < n:
            end = start + 1
            while end < n and end - start < batch_size and (end - start + 1) * lens[end] <= budget:
                end += 1
            yield rows[order[start:end]]
            start = end

    def sorted_batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(index, batch)`` pairs over the whole split (:meth:`batches`)."""
        for index in self.batches(np.arange(self.shape[0]), batch_size):
            yield index, self.rows(index)

    def row_digests(self) -> list[bytes]:
        """The digests of the normalised texts (``tfbound.io.overlap``)."""
        return self.digests

    def subset(self, keep: np.ndarray) -> TextInputs:
        """The texts ``keep`` (indices, in order)."""
        keep = np.asarray(keep, dtype=np.int64)
        parts = [self.ids[self.offsets[i] : self.offsets[i + 1]] for i in keep]
        ids = np.concatenate(parts) if parts else np.zeros(0, np.int32)
        offsets = np.concatenate([[0], np.cumsum(self.lengths[keep])]).astype(np.int64)
        return TextInputs(
            ids.astype(np.int32),
            offsets,
            [self.digests[i] for i in keep],
            pad_id=self.pad_id,
            truncated=self.truncated[keep],
            max_length=self.max_length,
        )

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """The whole split padded to its longest text (a convenience for small splits; the
        pipeline never calls it)."""
        out = self[0 : self.shape[0]]
        return out if dtype is None else out.astype(dtype)


def tokenize(tokenizer: Any, texts: Sequence[str], *, pad_id: int, max_length: int) -> TextInputs:
    """Token ids of ``texts`` (tokenized ``_TOKENIZE_CHUNK`` at a time) and their digests."""
    chunks: list[np.ndarray] = []
    lengths = np.zeros(len(texts), dtype=np.int64)
    truncated = np.zeros(len(texts), dtype=bool)
    digests = [text_digest(t) for t in texts]
    for start in range(0, len(texts), _TOKENIZE_CHUNK):
        chunk = list(texts[start : start + _TOKENIZE_CHUNK])
        for j, enc in enumerate(tokenizer.encode_batch(chunk)):
            ids = np.asarray(enc.ids, dtype=np.int64)
            if ids.size and int(ids.max()) >= _MAX_EXACT_ID:
                raise InputError(f"token id {int(ids.max())} is not exact in float32")
            truncated[start + j] = bool(enc.overflowing)
            chunks.append(ids.astype(np.int32))
            lengths[start + j] = ids.size
    flat = np.concatenate(chunks) if chunks else np.zeros(0, np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return TextInputs(
        flat, offsets, digests, pad_id=pad_id, truncated=truncated, max_length=max_length
    )


def encode_texts(tokenizer: Any, texts: Sequence[str], pad_id: int = 0) -> np.ndarray:
    """``(n, 2, T)`` float32 of ``texts`` padded to their longest (small sets only: the pipeline
    pads per batch, :class:`TextInputs`)."""
    return np.asarray(tokenize(tokenizer, texts, pad_id=pad_id, max_length=0))


def read_texts(source: ArraySource, labeled: bool) -> tuple[list[str], np.ndarray | None]:
    """Texts (and raw labels) of a ``.npz`` with a ``<U`` array or of a ``.jsonl`` file."""
    path = source.path
    if not path.is_file():
        raise DataError(f"data file {missing(path)}", path=path)
    labels: Any = None
    if path.suffix == ".npz":
        from tfbound.io.datasets import _check_npz_member

        try:
            for key in (source.x, *([source.y] if labeled and source.y else [])):
                _check_npz_member(path, key)
            with np.load(path, allow_pickle=False) as npz:
                for key in (source.x, *([source.y] if labeled and source.y else [])):
                    if key not in npz.files:
                        shown = ", ".join(npz.files[:20])
                        raise DataError(f"no array '{key}' (has: {shown})", path=path)
                x = npz[source.x]
                if labeled and source.y:
                    labels = npz[source.y]
        except DataError:
            raise
        except (ValueError, OSError, EOFError) as exc:
            raise DataError(
                f"cannot read text array '{source.x}': {first_line(exc)}", path=path
            ) from exc
        if x.dtype.kind != "U" or x.ndim != 1:
            raise DataError(
                f"text array '{source.x}' must be 1-D fixed-width unicode (dtype <U), "
                f"got {x.dtype} of shape {x.shape[:4]}",
                path=path,
            )
        texts = [str(s) for s in x]
    elif path.suffix == ".jsonl":
        from tfbound.io.tables import check_file_size

        check_file_size(path)
        texts, raw = [], []
        with path.open(encoding="utf-8", errors="strict") as fh:
            try:
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        row = bounded_json(line)
                        text = row[source.x]
                        label = row[source.y] if labeled and source.y else None
                    except (ValueError, KeyError, TypeError) as exc:
                        what = first_line(exc, 60)
                        raise DataError(
                            f"line {lineno}: not a JSON object with {what}", path=path
                        ) from exc
                    if not isinstance(text, str):
                        raise DataError(f"line {lineno}: '{source.x}' is not a string", path=path)
                    texts.append(text)
                    raw.append(label)
            except UnicodeDecodeError as exc:
                raise DataError("not UTF-8 text", path=path) from exc
        labels = np.asarray(raw) if labeled else None
    else:
        raise DataError(
            f"unsupported text data format '{path.suffix}' (use .npz with a <U array or .jsonl)",
            path=path,
        )
    if not texts:
        raise DataError(f"no texts in '{source.x}'", path=path)
    return texts, labels


class TextData:
    """The tokenizer of an encoder and the loaders of its text splits."""

    def __init__(self, tokenizer: Any, pad_id: int = 0, max_length: int = 0) -> None:
        self.tokenizer = tokenizer
        self.pad_id = pad_id
        self.max_length = max_length

    @classmethod
    def from_spec(cls, spec: ModuleSpec) -> TextData:
        """The tokenizer of ``spec`` (``tokenizer:``, or found beside the weights)."""
        max_length = max_length_of(spec)
        path = tokenizer_path(spec)
        if path is None:
            raise ConfigError(
                "text data needs a tokenizer: set 'encoder.tokenizer' (a tokenizer.json or its "
                "folder) or put tokenizer.json beside the encoder's weights"
            )
        tok = load_tokenizer(path, max_length)
        return cls(tok, _pad_id(tok), max_length)

    def tokenize(self, texts: Sequence[str]) -> TextInputs:
        return tokenize(self.tokenizer, texts, pad_id=self.pad_id, max_length=self.max_length)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``texts`` padded to their longest (small sets: tests, the API)."""
        return encode_texts(self.tokenizer, texts, self.pad_id)

    def load_inputs(self, source: ArraySource) -> TextInputs:
        from tfbound.io.sources import read_source

        raw = read_source(source, labeled=False)
        if raw.texts is None:
            raise DataError(f"'{source.x}' is not a text column", path=source.path)
        return self.tokenize(raw.texts)

    def load_labeled(self, source: ArraySource) -> LabeledArrays:
        from tfbound.io.sources import read_source

        raw = read_source(source, labeled=True)
        if raw.texts is None:
            raise DataError(f"'{source.x}' is not a text column", path=source.path)
        y = np.asarray(raw.labels, dtype=np.float64)
        return LabeledArrays(x=self.tokenize(raw.texts), y=y, source=source)  # type: ignore[arg-type]


__all__ = [
    "BERT_EXTRA_HINT",
    "TextData",
    "TextInputs",
    "encode_texts",
    "load_tokenizer",
    "max_length_of",
    "read_texts",
    "tokenize",
    "tokenizer_path",
]

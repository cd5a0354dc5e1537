"""Per-example digests and the pool's disjointness from the other splits (bound-spec 10.3).

The disagreement certificate needs an unlabeled pool disjoint from the labeled split, the test
split and the pre-training inputs. Disjointness is a property of the examples, not of how they are
stored or padded:

- a text is compared after normalisation (:func:`normalise_text`: Unicode NFC, casefolded,
  whitespace runs collapsed to one space, stripped), by the BLAKE2b digest of its UTF-8 bytes;
- a numeric row (an array row, a table row, an image after its declared transform) by the digest
  of its float64 bytes (``-0.0`` read as ``0.0``) and its width.

A text never matches a numeric row. Only the digests are kept (16 bytes an example), the inputs
are read in chunks.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tfbound.errors import DataError

DIGEST_BYTES = 16
_CHUNK = 4096
_CHUNK_VALUES = 1 << 22
_SPACES = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """The form two texts are compared in: NFC, casefolded, whitespace collapsed, stripped.

    >>> normalise_text("  The  CAFE\\u0301\\n is open ")
    'the café is open'
    """
    return _SPACES.sub(" ", unicodedata.normalize("NFC", text).casefold()).strip()


def text_digest(text: str) -> bytes:
    """The digest of a text's normalised form."""
    data = normalise_text(text).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(b"text\0" + data, digest_size=DIGEST_BYTES).digest()


def array_row_digests(x: Any) -> list[bytes]:
    """Digests of the rows of an ``(n, ...)`` array (or an array-like read by slices), each row
    flattened to float64; NaN or Inf is a ``DataError`` (it has no identity to compare)."""
    return list(_iter_row_digests(x))


def _iter_row_digests(x: Any) -> Iterator[bytes]:
    n = int(x.shape[0])
    width = max(int(np.prod(x.shape[1:], dtype=np.int64)), 1)
    chunk = max(1, min(_CHUNK, _CHUNK_VALUES // width))  # about 32 MiB of float64 at a time
    for start in range(0, n, chunk):
        rows = np.asarray(x[start : start + chunk], dtype=np.float64)
        rows = rows.reshape(rows.shape[0], -1) + 0.0  # -0.0 + 0.0 == +0.0
        if not np.isfinite(rows).all():
            raise DataError("inputs contain NaN or Inf: rows cannot be compared")
        prefix = f"rows\0{rows.shape[1]}\0".encode()
        rows = np.ascontiguousarray(rows)
        for r in rows:
            yield hashlib.blake2b(prefix + r.tobytes(), digest_size=DIGEST_BYTES).digest()


def row_width(x: Any) -> int | None:
    """The values per row of a numeric input array; None for texts."""
    if getattr(x, "is_text", False):
        return None
    return int(np.prod(x.shape[1:], dtype=np.int64))


def input_digests(x: Any) -> list[bytes]:
    """The per-example digests of any input: its own (texts, image folders) or its rows'."""
    own = getattr(x, "row_digests", None)
    return list(own()) if callable(own) else array_row_digests(x)


@dataclass(frozen=True)
class Overlap:
    """The pool rows found in another split: their pool indices (sorted) and, per split, how many
    pool rows it shares and the first shared pair ``(pool row, its row)``."""

    pool_rows: tuple[int, ...]
    per_split: tuple[tuple[str, int, tuple[int, int]], ...]

    @property
    def count(self) -> int:
        return len(self.pool_rows)


def pool_overlap(pool: Any, others: Sequence[tuple[str, Any]]) -> Overlap:
    """The pool rows that equal (after normalisation, for texts) an example of one of ``others``
    (``(name, inputs)`` pairs). Numeric inputs whose rows have another width than the pool's are a
    ``DataError``: comparing inputs with, say, features is a mistake."""
    width = row_width(pool)
    index: dict[bytes, int] = {}
    pool_digests = input_digests(pool)
    for i, key in enumerate(pool_digests):
        index.setdefault(key, i)
    shared: set[int] = set()
    per: list[tuple[str, int, tuple[int, int]]] = []
    for name, other in others:
        other_width = row_width(other)
        if width is not None and other_width is not None and other_width != width:
            raise DataError(
                f"cannot compare the pool (rows of {width} values) with {name} "
                f"(rows of {other_width} values)"
            )
        own = getattr(other, "row_digests", None)
        # another split's digests are checked as they are made, never all held
        rows = _shared_rows(index, own() if callable(own) else _iter_row_digests(other))
        if rows:
            hit = {index[k] for k in rows.values()}
            # every pool row with a digest of a shared one (duplicates within the pool too)
            hits = {i for i, k in enumerate(pool_digests) if index[k] in hit}
            first_row = min(rows)
            per.append((name, len(hits), (index[rows[first_row]], first_row)))
            shared |= hits
    return Overlap(tuple(sorted(shared)), tuple(per))


def _shared_rows(index: dict[bytes, int], digests: Iterable[bytes]) -> dict[int, bytes]:
    return {r: k for r, k in enumerate(digests) if k in index}


__all__ = [
    "Overlap",
    "array_row_digests",
    "input_digests",
    "normalise_text",
    "pool_overlap",
    "row_width",
    "text_digest",
]

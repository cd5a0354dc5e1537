"""File digests, read in chunks (a multi-GB checkpoint is never held in memory)."""

from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK = 1 << 20


def sha256_file(path: str | Path | None) -> str | None:
    """The SHA-256 hex digest of a regular file, or None when ``path`` is not one."""
    if path is None or not Path(path).is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


__all__ = ["sha256_file"]

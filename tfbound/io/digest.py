"""File digests, read in chunks (a multi-GB checkpoint is never held in memory), and the digest of
a module's weights in memory."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

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


def state_dict_digest(module: nn.Module) -> str:
    """A BLAKE2b digest of ``module.state_dict()``: every entry's name, dtype, shape and bytes, in
    order. Equal digests mean equal weights (a cache key for norms computed from them)."""
    import torch

    digest = hashlib.blake2b(digest_size=32)
    for name, value in module.state_dict().items():
        digest.update(name.encode())
        if not isinstance(value, torch.Tensor):
            digest.update(repr(value).encode())
            continue
        t = value.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"|{t.dtype}|{tuple(value.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().data)  # the buffer, not a copy
    return digest.hexdigest()


__all__ = ["sha256_file", "state_dict_digest"]

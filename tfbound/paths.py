"""Paths as a report writes them: relative to the configuration's folder, so that the same model
gives the same report in two checkouts."""

from __future__ import annotations

import os
from pathlib import Path


def relative_path(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` in POSIX form (``..`` where it lies outside ``base``).

    >>> relative_path(Path("/a/data/x.npz"), Path("/a/model"))
    '../data/x.npz'
    """
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return Path(os.path.relpath(path.absolute(), base.absolute())).as_posix()


__all__ = ["relative_path"]

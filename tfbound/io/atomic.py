"""The one writer of output files: complete or absent, with the umask's mode.

- a regular file (or an absent one) is written to a temporary file beside it, then renamed onto
  it: a reader sees the old file or the new one, never a part;
- a symlink is followed: its target is replaced (atomically, as above) and the link kept;
- a file that is not regular (``/dev/stdout``, a FIFO, a terminal) is written directly: a rename
  would replace the device node or pipe with a plain file;
- the new file gets mode ``0o666 & ~umask``, as ``open()`` would give it (``mkstemp`` gives 0600).
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from tfbound.errors import InputError


def current_umask() -> int:
    """The process umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open()`` gives a new file: ``0o666 & ~umask``."""
    return 0o666 & ~current_umask()


def folder_mode() -> int:
    """The mode ``mkdir`` gives a new folder: ``0o777 & ~umask``."""
    return 0o777 & ~current_umask()


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` by the rules of the module doc."""
    target = Path(path)
    if target.is_symlink():
        target = Path(os.path.realpath(target))  # write through the link: the target is replaced
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise InputError(f"cannot write: {exc.strerror or exc}", path=target) from exc
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise InputError("cannot write: it is a folder", path=target)
    if st is not None and not stat.S_ISREG(st.st_mode):
        try:
            with open(target, "wb") as fh:  # a device or a pipe: no rename
                fh.write(data)
        except OSError as exc:
            raise InputError(f"cannot write: {exc.strerror or exc}", path=target) from exc
        return
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise InputError("cannot write: the folder does not exist", path=target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise InputError(f"cannot write: {exc.strerror or exc}", path=target) from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, file_mode())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` by the rules of the module doc."""
    write_bytes_atomic(path, text.encode("utf-8"))


__all__ = ["file_mode", "folder_mode", "write_bytes_atomic", "write_text_atomic"]

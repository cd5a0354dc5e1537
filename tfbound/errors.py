"""One family of domain exceptions; the CLI maps each to a one-line message and an exit code."""

from __future__ import annotations

EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_USAGE = 2
EXIT_BAD_INPUT = 3
EXIT_INTERNAL = 4  # an unexpected failure (a bug): one line, or the traceback with --debug


class TfboundError(Exception):
    """Base class of every error tfbound raises on purpose."""

    exit_code: int = EXIT_BAD_INPUT

    def __init__(self, message: str, *, path: object | None = None) -> None:
        self.path = None if path is None else shown_path(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


def first_line(what: object, limit: int = 200) -> str:
    """The first line of a message (or of an exception's text, its type name when empty), cut to
    ``limit`` characters: what a one-line error may quote of another library's message."""
    text = str(what).strip()
    if not text and isinstance(what, BaseException):
        text = type(what).__name__
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def shown_path(path: object, limit: int = 240) -> str:
    """A path as a message shows it: quoted when it holds control characters (a newline must not
    start a second line), shortened in the middle past ``limit`` characters."""
    text = str(path)
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        text = repr(text)
    if len(text) > limit:
        text = text[: limit // 2 - 2] + "..." + text[-(limit // 2 - 1) :]
    return text


class InputError(TfboundError):
    """A file, array, checkpoint or config the user gave cannot be used (exit 3)."""


class ConfigError(InputError):
    """The configuration is malformed: not a mapping, unknown keys, wrong types (exit 3)."""


class CheckpointError(InputError):
    """A checkpoint is missing, corrupt, needs unpickling of code, or does not fit (exit 3)."""


class DataError(InputError):
    """A data file is missing, empty, non-finite, or has labels that are not binary (exit 3)."""


class TrainingError(InputError):
    """Training diverged: a non-finite loss or non-finite weights (exit 3; bad data or settings)."""


class UsageError(TfboundError):
    """The command line itself is wrong (exit 2)."""

    exit_code = EXIT_USAGE


class DeviceError(UsageError):
    """The device asked for (``--device cuda``) is not available on this machine (exit 2)."""


def missing(path: object) -> str:
    """Why ``path`` cannot be read as a file: "not found", or "not a regular file" (a folder, a
    FIFO or a device exists there)."""
    from pathlib import Path

    p = Path(str(path))
    return "is not a regular file (a folder, FIFO or device)" if p.exists() else "not found"

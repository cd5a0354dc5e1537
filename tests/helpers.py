"""Helpers shared by several test files (fixtures that use them are in tests/conftest.py)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

#: The repository root (tests live in subfolders laid out like the package).
REPO_ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """One torch thread (and one BLAS thread where threadpoolctl is installed), restored after:
    small dense problems run faster so, and a busy shared machine does not slow them down."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # optional: only a speed-up
            yield
        else:
            with threadpool_limits(limits=1):
                yield
    finally:
        torch.set_num_threads(old)


def gaussian_task(n: int, d: int, seed: int, noise: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    """A linear-signal binary task with label noise; features not centred."""
    rng = np.random.default_rng(seed)
    w = np.random.default_rng(12345).normal(size=d)
    z = rng.normal(size=(n, d)) + 0.2
    score = z @ w / math.sqrt(d) + 0.1 + noise * rng.normal(size=n)
    return z, np.where(score > 0, 1.0, -1.0)


def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``tfbound ARGS`` in-process at 200 columns: (exit code, stdout, stderr)."""
    from typer.testing import CliRunner

    from tfbound.cli import app

    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200", **(env or {})})
    return result.exit_code, result.stdout, result.stderr

"""One thread policy for torch and the BLAS libraries (``--threads N``; docs/scale.md).

torch runs its own kernels and its bundled BLAS on ``torch.get_num_threads()`` threads; numpy
(every float64 bound: the Newton fits, the metric, the eigendecompositions) calls the BLAS it
ships with (OpenBLAS in the wheels, MKL in some builds), whose pool torch does not set.
``set_threads(n)`` sets both to ``n`` through one call (``threadpoolctl`` for the BLAS pools,
process-wide); ``thread_counts()`` says what each is now. Nothing is changed unless asked:
``set_threads(None)`` leaves both as the environment made them (``OMP_NUM_THREADS`` ...).

torch and numpy are imported only when a function here is called, so ``import tfbound`` stays
light.
"""

from __future__ import annotations

from dataclasses import dataclass

from tfbound.errors import UsageError


@dataclass(frozen=True)
class ThreadCounts:
    """Threads of torch's intra-op pool and of each BLAS pool ``threadpoolctl`` sees."""

    torch: int
    blas: tuple[tuple[str, int], ...]  # (library, threads), e.g. ("openblas", 2)

    def describe(self) -> str:
        blas = ", ".join(f"{name} {n}" for name, n in self.blas) or "none found"
        return f"torch threads {self.torch}; BLAS threads: {blas}"


def _blas_pools() -> tuple[tuple[str, int], ...]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover - a declared dependency
        return ()
    import numpy  # noqa: F401  (loads numpy's BLAS so that threadpoolctl sees it)

    return tuple(
        (str(info.get("internal_api", "blas")), int(info["num_threads"]))
        for info in threadpool_info()
        if info.get("user_api") == "blas"
    )


def thread_counts() -> ThreadCounts:
    """The thread counts torch and the BLAS libraries use now."""
    import torch

    return ThreadCounts(torch=int(torch.get_num_threads()), blas=_blas_pools())


def check_threads(n: int | None) -> None:
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise UsageError(f"threads must be a whole number >= 1, got {n!r}")


def set_threads(n: int | None) -> ThreadCounts:
    """Set torch's and every BLAS pool's threads to ``n`` (``None``: change nothing); returns
    the counts afterwards. Process-wide, like ``torch.set_num_threads``."""
    check_threads(n)
    if n is not None:
        import numpy  # noqa: F401  (loads numpy's BLAS before its pool is limited)
        import torch
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(n)
        threadpool_limits(limits=n, user_api="blas")
    return thread_counts()


__all__ = ["ThreadCounts", "check_threads", "set_threads", "thread_counts"]

"""One thread policy: ``set_threads`` sets torch's pool and every BLAS pool together."""

from __future__ import annotations

import pytest
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from tfbound.errors import UsageError
from tfbound.threads import set_threads, thread_counts


def test_set_threads_sets_torch_and_blas_together() -> None:
    before_torch = torch.get_num_threads()
    with threadpool_limits(limits=None):  # restores the BLAS pools afterwards
        try:
            counts = set_threads(1)
            assert torch.get_num_threads() == 1
            blas = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
            assert blas and all(n == 1 for n in blas)
            assert counts.torch == 1 and all(n == 1 for _, n in counts.blas)
            assert "torch threads 1" in counts.describe()
        finally:
            torch.set_num_threads(before_torch)


def test_none_changes_nothing() -> None:
    before = thread_counts()
    assert set_threads(None) == before


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2"])
def test_rejects_bad_counts(bad: object) -> None:
    with pytest.raises(UsageError):
        set_threads(bad)  # type: ignore[arg-type]

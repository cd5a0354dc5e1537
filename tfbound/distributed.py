"""``torchrun`` support: this process's :class:`~tfbound.pipeline.stream.Shard` and the process
group that sums the streamed statistics.

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) :func:`start` joins the process group
that ``torchrun`` describes (``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``, ``WORLD_SIZE``) with the
``gloo`` backend: the statistics are CPU tensors whatever device the encoder runs on, and gloo
runs on every machine, across nodes too. With a GPU per process, ``LOCAL_RANK`` picks the
process's GPU. Without ``torchrun`` nothing is started and the shard is the whole split.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from tfbound.errors import TfboundError
from tfbound.pipeline.stream import Shard


class DistributedError(TfboundError):
    """This process cannot go on because another torchrun process stopped (exit 3)."""


#: How long a process waits for the others at a reduction before giving up.
TIMEOUT = timedelta(minutes=30)


@contextmanager
def started() -> Iterator[Shard]:
    """This process's shard, inside the process group when run by ``torchrun``."""
    shard = Shard.from_env()
    if shard.world == 1:
        yield shard
        return
    import torch
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    if torch.cuda.is_available() and torch.cuda.device_count() > local:
        torch.cuda.set_device(local)
    own = not dist.is_initialized()
    if own:
        dist.init_process_group("gloo", timeout=TIMEOUT)
    try:
        yield shard
    except (RuntimeError, dist.DistError) as exc:
        if isinstance(exc, dist.DistError) or "gloo" in str(exc).lower():
            raise DistributedError(
                "another torchrun process failed or left (its own message says why)"
            ) from exc
        raise
    finally:
        if own:
            dist.destroy_process_group()


__all__ = ["TIMEOUT", "started"]

"""The Monte Carlo RIRC of the streamed estimate against the torch-stream signs it replaced, and
against the bare ``K x n`` by ``n x (d+1)`` product it is built on.

Usage (from the repository root)::

    python benchmarks/rirc.py [--draws 2000] [--n 20000] [--d 64] [--repeats 3] [--threads N]
    python benchmarks/rirc.py --draws 10000 --n 100000 --d 64 --repeats 1   # the issue's size

Routes, timed alternately in one process (``_common.interleaved``):

- before: the in-memory RIRC of the previous release (every ``K x n`` sign drawn from torch's
  generator in row blocks into one float64 buffer, multiplied by the whole ``Z'``; copied here):
  it needs all ``n`` features at once;
- after: ``tfbound.measures.rirc.RircSums`` fed in batches of 512 rows, as the streamed estimate
  feeds it (counter-based signs by example index, ``K x (d+1)`` sums kept);
- matmul: the bare product of a ``K x n`` sign matrix drawn beforehand with ``Z'``: the floor.

Printed: the three times (wall, user, sys), ``before / after`` (goal >= 1: the stream is not
slower) and ``after / matmul`` (the issue's goal: within 2x of the ``K x n x d`` product).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _common import Result, add_thread_option, interleaved, setup_threads

from tfbound.measures.rirc import RircSums

_BLOCK_ELEMENTS = 1 << 23


def before(z: torch.Tensor, n_draws: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(int(seed))
    n = z.shape[0]
    rows = min(n_draws, max(1, _BLOCK_ELEMENTS // max(n, 1)))
    buffer = torch.empty((rows, n), dtype=torch.float64)
    out = []
    for start in range(0, n_draws, rows):
        block = buffer[: min(n_draws, start + rows) - start]
        block.random_(0, 2, generator=gen).mul_(2).sub_(1)
        out.append(torch.linalg.vector_norm(block @ z, dim=1))
    return torch.cat(out)


def after(z: torch.Tensor, n_draws: int, seed: int, batch: int = 512) -> torch.Tensor:
    acc = RircSums(n_draws, z.shape[1], seed)
    for start in range(0, z.shape[0], batch):
        acc.add(np.arange(start, min(start + batch, z.shape[0])), z[start : start + batch])
    return torch.linalg.vector_norm(acc.sums_t, dim=0)


def run(draws: int, n: int, d: int, repeats: int, threads: int | None) -> list[Result]:
    print(f"RIRC: K={draws} draws, n={n}, d+1={d + 1}; {setup_threads(threads)}")
    z = torch.randn(n, d + 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    signs = torch.randint(0, 2, (draws, n), generator=torch.Generator().manual_seed(1))
    signs = signs.to(torch.float64).mul_(2).sub_(1)
    times, outs = interleaved(
        {
            "before": lambda: before(z, draws, 0),
            "after": lambda: after(z, draws, 0),
            "matmul": lambda: torch.linalg.vector_norm(signs @ z, dim=1),
        },
        repeats,
    )
    for name, t in times.items():
        print(f"  {name:<7} {t.line()}")
    means = {k: float(v.mean()) for k, v in outs.items()}  # type: ignore[union-attr]
    print(
        "  mean norm (different signs, the same distribution): "
        + ", ".join(f"{k} {v:.6g}" for k, v in means.items())
    )
    size = f"K={draws}, n={n}"
    return [
        Result(
            "rirc: before (in memory) / after (streamed)",
            times["before"].wall / times["after"].wall,
            ">= 1",
            f"{size}; sys {times['before'].sys:.2f} s -> {times['after'].sys:.2f} s",
        ),
        Result(
            "rirc: after / bare K x n x (d+1) matmul",
            times["after"].wall / times["matmul"].wall,
            "<= 2",
            f"{size}, d+1={d + 1}",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    add_thread_option(parser)
    args = parser.parse_args()
    for r in run(args.draws, args.n, args.d, args.repeats, args.threads):
        print(r.line())


if __name__ == "__main__":
    main()

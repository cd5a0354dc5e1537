"""The Monte Carlo RIRC: the sign buffer filled in place against a fresh block per row block, and
against the bare ``K x n`` by ``n x (d+1)`` product it is built on.

Usage (from the repository root)::

    python benchmarks/rirc.py [--draws 2000] [--n 20000] [--d 64] [--repeats 3] [--threads N]
    python benchmarks/rirc.py --draws 10000 --n 100000 --d 64 --repeats 1   # the issue's size

Routes, timed alternately in one process (``_common.interleaved``):

- before: the sign generation of ``tfbound.measures.rirc`` before it kept one buffer (a fresh
  ``torch.randint`` int64 block converted to a fresh float64 block per row block; copied here);
- after: ``tfbound.measures.rirc._draw_norms`` (one float64 buffer per call, ``random_(0, 2)``
  in place: the same stream, so the same signs bit for bit);
- matmul: the same row blocks of a sign matrix drawn once, multiplied by ``Z'`` and normed: the
  product's cost without the draw.

Printed: the three times (wall, user, sys), ``before / after`` (goal >= 1: never slower), and
``after / matmul`` (goal <= 3: the draw of ``K n`` signs, one 32-bit generator call each on one
thread, is most of the rest), and that before and after agree bit for bit.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import torch
from _common import Result, add_thread_option, interleaved, setup_threads

from tfbound.measures.rirc import _BLOCK_ELEMENTS, _draw_norms


def _before_blocks(n_draws: int, n: int, seed: int) -> Iterator[torch.Tensor]:
    gen = torch.Generator().manual_seed(int(seed))
    rows = max(1, _BLOCK_ELEMENTS // max(n, 1))
    for start in range(0, n_draws, rows):
        stop = min(n_draws, start + rows)
        block = torch.randint(0, 2, (stop - start, n), generator=gen).to(torch.float64)
        yield block.mul_(2).sub_(1)


def before(z: torch.Tensor, n_draws: int, seed: int) -> torch.Tensor:
    blocks = (
        torch.linalg.vector_norm(signs @ z, dim=1)
        for signs in _before_blocks(n_draws, z.shape[0], seed)
    )
    return torch.cat(list(blocks))


def bare_matmul(z: torch.Tensor, n_draws: int, signs: torch.Tensor) -> torch.Tensor:
    rows = signs.shape[0]
    out = []
    for start in range(0, n_draws, rows):
        block = signs[: min(n_draws, start + rows) - start]
        out.append(torch.linalg.vector_norm(block @ z, dim=1))
    return torch.cat(out)


def run(draws: int, n: int, d: int, repeats: int, threads: int | None) -> list[Result]:
    print(f"RIRC: K={draws} draws, n={n}, d+1={d + 1}; {setup_threads(threads)}")
    z = torch.randn(n, d + 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    rows = min(draws, max(1, _BLOCK_ELEMENTS // n))
    signs = torch.randint(0, 2, (rows, n), generator=torch.Generator().manual_seed(1))
    signs = signs.to(torch.float64).mul_(2).sub_(1)
    times, outs = interleaved(
        {
            "before": lambda: before(z, draws, 0),
            "after": lambda: _draw_norms(z, draws, 0),
            "matmul": lambda: bare_matmul(z, draws, signs),
        },
        repeats,
    )
    for name, t in times.items():
        print(f"  {name:<7} {t.line()}")
    same = torch.equal(outs["before"], outs["after"])  # type: ignore[arg-type]
    print(f"  before and after norms bit-identical: {same}")
    if not same:
        raise SystemExit("the in-place signs changed the estimate")
    size = f"K={draws}, n={n}"
    return [
        Result(
            "rirc signs: before / after",
            times["before"].wall / times["after"].wall,
            ">= 1",
            f"{size}; sys {times['before'].sys:.2f} s -> {times['after'].sys:.2f} s",
        ),
        Result(
            "rirc: after / bare matmul",
            times["after"].wall / times["matmul"].wall,
            "<= 3",
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

"""Every scale benchmark in one command, each ratio with its goal (docs/scale.md).

Usage (from the repository root)::

    python benchmarks/run_all.py [--threads N]          # small sizes: about a minute on 2 cores
    python benchmarks/run_all.py --issue-sizes          # the issue's sizes (minutes to hours)

Runs, in one process each after the imports (start-up excluded), routes interleaved:

- ``estimate.py``: ``tfbound.estimate`` against one bare encoder forward over the same splits
  (n = 10,000 + 2,000; a dim-64 depth-2 ViT by default, dim 256 depth 4 with --issue-sizes);
- ``rirc.py``: the streamed RIRC sums (counter-based signs) against the in-memory draw they
  replaced, and against the bare ``K x n`` by ``n x (d+1)`` product (K = 2,000, n = 20,000 by
  default; K = 10^4, n = 10^5 with --issue-sizes);
- ``binomial.py``: the test-set bound before / after hoisting the binomial coefficients;
- ``pac_bayes.py``: the prior probe and the metric before / after at large d;
- ``transformer_norms.py``: every layer against the rows the terms read, and the cache;
- ``text_padding.py``: one long text among 400 against all short ones (the real MiniLM);
- ``memory.py``: peak RSS at n = 10k, 100k, 1M (fresh processes; the pipeline before streaming
  too with --issue-sizes).

Prints every result line (``ratio``, ``goal``, met or not) at the end, with the thread counts of
torch and the BLAS libraries. The exit status is 0 even when a goal is missed (a benchmark, not
a test); a changed number (bit-identity or round-off checks inside each benchmark) exits 1.
"""

from __future__ import annotations

import argparse
import time

import binomial
import estimate
import memory
import pac_bayes
import rirc
import text_padding
import transformer_norms
from _common import Result, add_thread_option, setup_threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--issue-sizes", action="store_true", help="the issue's sizes")
    parser.add_argument(
        "--only",
        action="append",
        help="run only these (estimate, rirc, binomial, pac_bayes, norms, text, memory)",
    )
    add_thread_option(parser)
    args = parser.parse_args()
    big = args.issue_sizes
    print(setup_threads(args.threads))
    runs = {
        "estimate": lambda: estimate.run(
            10_000, 2_000, 10_000, 1, None, *((256, 4) if big else (64, 2))
        ),
        "rirc": lambda: rirc.run(
            *((10_000, 100_000, 64, 1) if big else (2_000, 20_000, 64, 3)), None
        ),
        "binomial": lambda: binomial.run(
            *((100_000, 10_000, 1) if big else (20_000, 2_000, 3)), None
        ),
        "pac_bayes": lambda: pac_bayes.run(
            [(4_600, 768), (1_000, 4_096)] if big else [(3_000, 768), (600, 1_536)],
            1 if big else 2,
            None,
        ),
        "norms": lambda: transformer_norms.run(30_522, 384, 6 if big else 2, 1 if big else 2, None),
        "text": lambda: text_padding.run(3, None),
        "memory": lambda: memory.run(
            [10_000, 100_000, 1_000_000], "23bdb21" if big else None, None
        ),
    }
    results: list[Result] = []
    start = time.perf_counter()
    for name, fn in runs.items():
        if args.only and name not in args.only:
            continue
        results += fn()
        print()
    print(f"all benchmarks: {time.perf_counter() - start:.1f} s; {setup_threads(None)}")
    for r in results:
        print(r.line())


if __name__ == "__main__":
    main()

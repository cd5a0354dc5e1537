"""What the benchmarks share: thread setup and printing, interleaved timing, one result line.

Every timing runs its routes alternately ``repeats`` times in one process and compares medians,
so a slow phase of a shared machine hits every route. Wall, user and system seconds are all
taken (``os.times``): a route that allocates fresh memory pays mostly in system time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from tfbound.threads import set_threads


@dataclass(frozen=True)
class Timing:
    wall: float
    user: float
    sys: float

    def line(self) -> str:
        return f"wall {self.wall:8.3f} s  user {self.user:8.3f} s  sys {self.sys:7.3f} s"


@dataclass(frozen=True)
class Result:
    """One benchmark's ratio and its goal, the line ``run_all.py`` prints."""

    name: str
    ratio: float
    goal: str  # e.g. "<= 1.5" or ">= 2"
    detail: str

    def met(self) -> bool:
        op, value = self.goal.split()
        return self.ratio <= float(value) if op == "<=" else self.ratio >= float(value)

    def line(self) -> str:
        verdict = "met" if self.met() else "NOT met"
        head = f"{self.name:<34} ratio {self.ratio:8.3f}  goal {self.goal:<7} {verdict}"
        return f"{head}  ({self.detail})"


def add_thread_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads", type=int, default=None, help="torch and BLAS threads (default: as set)"
    )


def setup_threads(threads: int | None) -> str:
    """Apply ``--threads`` to torch and the BLAS pools; the line to print."""
    return set_threads(threads).describe()


def timed(fn: Callable[[], object]) -> tuple[Timing, object]:
    t0, w0 = os.times(), time.perf_counter()
    out = fn()
    w1, t1 = time.perf_counter(), os.times()
    return Timing(w1 - w0, t1.user - t0.user, t1.system - t0.system), out


def interleaved(
    routes: dict[str, Callable[[], object]], repeats: int
) -> tuple[dict[str, Timing], dict[str, object]]:
    """Median wall/user/sys of every route, run alternately ``repeats`` times; last outputs."""
    samples: dict[str, list[Timing]] = {name: [] for name in routes}
    outputs: dict[str, object] = {}
    for _ in range(repeats):
        for name, fn in routes.items():
            timing, outputs[name] = timed(fn)
            samples[name].append(timing)
    medians = {
        name: Timing(
            statistics.median(t.wall for t in ts),
            statistics.median(t.user for t in ts),
            statistics.median(t.sys for t in ts),
        )
        for name, ts in samples.items()
    }
    return medians, outputs

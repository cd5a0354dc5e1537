"""Benchmark: each public Python call (docs/python.md) against a bare forward pass.

On the two sample models, one CPU thread, each call run 7 times interleaved with the others
(after one warm-up run), the median printed with its ratio to the bare pass:

- a bare forward pass of encoder + head over train, test and pool (batches of 512,
  ``torch.inference_mode``);
- ``tfbound.estimate`` in memory (with and without the pretext task) and from the config;
- ``tfbound.certify`` on the encoder's features; ``tfbound.inspect`` of the encoder.

Run from the repository's root: ``python benchmarks/api_cost.py``.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import tfbound  # noqa: E402
from tests.api.conftest import Sample, load_sample  # noqa: E402
from tfbound.features import encode  # noqa: E402

REPEATS = 7


def bare(s: Sample) -> None:
    with torch.inference_mode():
        for k in ("downstream_train_x", "downstream_test_x", "downstream_pool_x"):
            x = torch.from_numpy(s.arrays[k])
            for i in range(0, len(x), 512):
                s.head(s.encoder(x[i : i + 512]))


def calls(s: Sample) -> dict[str, Callable[[], object]]:
    kw = s.kwargs()
    (x, y), (xt, yt) = kw["train"], kw["test"]
    z, zt, zp = encode(s.encoder, x), encode(s.encoder, xt), encode(s.encoder, kw["pool"])
    w = s.head.linear.weight.detach().numpy().reshape(-1)  # type: ignore[union-attr,operator]
    b = float(s.head.linear.bias.detach())  # type: ignore[union-attr,operator]
    return {
        "bare forward (train+test+pool)": lambda: bare(s),
        "estimate in memory (+pretext)": lambda: tfbound.estimate(**kw),
        "estimate in memory (no pretext)": lambda: tfbound.estimate(**{**kw, "pretext": None}),
        "estimate from the config": lambda: tfbound.estimate(ROOT / "sample_models" / s.name),
        "certify on features": lambda: tfbound.certify(
            z, y, w, b, z_test=zt, y_test=yt, z_pool=zp, encoder_candidates=20
        ),
        "inspect the encoder": lambda: tfbound.inspect(s.encoder),
    }


def main() -> None:
    torch.set_num_threads(1)
    for name in ("ce_mlp", "mae_vit"):
        s = load_sample(name)
        todo = calls(s)
        times: dict[str, list[float]] = {k: [] for k in todo}
        for f in todo.values():
            f()
        for _ in range(REPEATS):
            for k, f in todo.items():
                t = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t)
        base = statistics.median(times["bare forward (train+test+pool)"])
        print(f"{name} (n_train 700, m_test 297, pool 75, n_draws 10000; median of {REPEATS})")
        for k, v in times.items():
            m = statistics.median(v)
            print(f"  {k:34s} {m * 1000:8.1f} ms  x{m / base:7.1f}")


if __name__ == "__main__":
    main()

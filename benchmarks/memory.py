"""Peak memory of ``tfbound estimate`` against n: the streamed pipeline and the one before it.

Builds a synthetic task in a temporary folder for each n: an MLP encoder 64 -> 128 -> 64 (ReLU)
with a linear head, ``n`` labeled training rows of 64 float32 inputs (256 MB at n = 1M), a test
split and an unlabeled pool of ``n / 10`` rows each (so PAC-Bayes, the pool certificate and the
disagreement route all run), ``bound.n_draws`` = 1,000. Each estimate runs in a fresh process;
its peak resident set (``VmHWM``, Linux) is printed.

- after: this checkout;
- before: another commit of this repository (default ``23bdb21``, the last one that kept the
  ``n x d`` features), exported with ``git archive`` to a temporary folder and run with the same
  interpreter; ``--no-before`` skips it.

The runs alternate (before, after) at each n. Printed: the peak of each route at each n, their
ratio, and the streamed pipeline's growth from n = 100k to 1M (goal <= 1.5x: memory O(K d + n
scalars); the inputs themselves, 10x larger, are in both).

Run: ``python benchmarks/memory.py`` (``--sizes 10000,100000`` for a quick look; the 1M run of
the old pipeline takes about a minute and 4+ GB).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml
from _common import Result, add_thread_option, setup_threads
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[1]

# The peak is VmHWM of /proc/self/status: the high-water mark of this process's own memory
# (getrusage's ru_maxrss survives exec, so a child would report its parent's peak).
_CHILD = """
import json, sys, time
import tfbound
t = time.perf_counter()
report = tfbound.estimate(sys.argv[1])
wall = time.perf_counter() - t
best = report.to_dict()["bounds"]["best_certified_test_error_bound"]["value"]
status = open("/proc/self/status").read().split("VmHWM:")[1].split()
print(json.dumps({"peak_mb": int(status[0]) / 1024, "wall": wall, "best": best}))
"""


def build(folder: Path, n: int) -> Path:
    from tfbound.models import LinearHead, MLPEncoder

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    encoder = MLPEncoder(64, (128,), 64, "relu")
    head = LinearHead(64)
    save_file(encoder.state_dict(), str(folder / "encoder.safetensors"))
    save_file(head.state_dict(), str(folder / "head.safetensors"))
    w = rng.normal(size=64).astype(np.float32)
    for split, m in (("train", n), ("test", max(100, n // 10)), ("pool", max(100, n // 10))):
        x = rng.random((m, 64), dtype=np.float32)
        y = (x @ w + 0.3 * rng.normal(size=m) > w.sum() / 2).astype(np.int64)
        np.savez(folder / f"{split}.npz", x=x, y=y)
    cfg = {
        "encoder": {
            "arch": "mlp",
            "weights": "encoder.safetensors",
            "input_dim": 64,
            "hidden": [128],
            "feature_dim": 64,
            "activation": "relu",
        },
        "head": {"arch": "linear", "weights": "head.safetensors"},
        "data": {
            "downstream_train": "train.npz",
            "downstream_test": "test.npz",
            "downstream_unlabeled": {"path": "pool.npz", "x": "x"},
        },
        "bound": {"n_draws": 1000},
    }
    path = folder / "tfbound.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def child(config: Path, pythonpath: Path, threads: int | None) -> dict[str, float]:
    code = "" if threads is None else "from tfbound.threads import set_threads\n"
    code += "" if threads is None else f"set_threads({threads})\n"
    out = subprocess.run(
        [sys.executable, "-c", code + _CHILD, str(config)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(pythonpath), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"estimate failed ({pythonpath}): {out.stderr.strip()[-400:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def export(commit: str, folder: Path) -> Path:
    folder.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def run(sizes: list[int], before: str | None, threads: int | None) -> list[Result]:
    print(f"peak RSS of tfbound estimate; {setup_threads(threads)}; n_draws 1000, d = 64")
    rows: dict[int, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        old = export(before, Path(tmp) / "before") if before else None
        for n in sizes:
            folder = Path(tmp) / f"n{n}"
            folder.mkdir()
            config = build(folder, n)
            rows[n] = {}
            if old is not None:
                rows[n]["before"] = child(config, old, threads)
            rows[n]["after"] = child(config, REPO, threads)
            line = f"  n = {n:>9,}: "
            line += "  ".join(
                f"{k} {v['peak_mb']:8.1f} MB ({v['wall']:6.1f} s, best {v['best']:.4f})"
                for k, v in rows[n].items()
            )
            print(line, flush=True)
    results = []
    for n, r in rows.items():
        if "before" in r:
            results.append(
                Result(
                    f"memory: peak before / after at n = {n:,}",
                    r["before"]["peak_mb"] / r["after"]["peak_mb"],
                    ">= 1",
                    f"{r['before']['peak_mb']:.0f} MB -> {r['after']['peak_mb']:.0f} MB",
                )
            )
    if 100_000 in rows and 1_000_000 in rows:
        a, b = rows[100_000]["after"]["peak_mb"], rows[1_000_000]["after"]["peak_mb"]
        results.append(
            Result(
                "memory: streamed peak at n = 1M / at n = 100k",
                b / a,
                "<= 1.5",
                f"{a:.0f} MB -> {b:.0f} MB (inputs 25.6 -> 256 MB)",
            )
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--before", default="23bdb21", help="the commit to compare with")
    parser.add_argument("--no-before", action="store_true")
    add_thread_option(parser)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    for r in run(sizes, None if args.no_before else args.before, args.threads):
        print(r.line())


if __name__ == "__main__":
    main()

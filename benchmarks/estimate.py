"""Benchmark: the whole ``tfbound estimate`` against one bare forward pass of the encoder.

Builds a synthetic ViT encoder (dim 256, depth 4, 16 tokens of 16x16 images) with a linear head,
``--n-train`` training and ``--n-test`` test images in a temporary folder, then times, in one
process and on the same data:

- one bare forward pass of the encoder over train + test (batched, ``torch.inference_mode``);
- ``tfbound.estimate`` on that config (loading, the feature pass, the RIRC with K draws, the bound).

Prints both times and their ratio (the issue's goal: at most 1.2), and the start-up of a
whole ``tfbound estimate`` process. Run: ``python benchmarks/estimate.py``
(``--dim 64 --depth 2`` is the smaller encoder ``run_all.py`` uses by default; ``--threads N``
sets torch's and the BLAS threads; the start-up is excluded: both routes run in this process
after the imports, alternately, ``--repeats`` times).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from _common import Result, add_thread_option, interleaved, setup_threads
from safetensors.torch import save_file

import tfbound
from tfbound.models import LinearHead, ViTEncoder

VIT = {
    "image_size": 16,
    "patch_size": 4,
    "in_chans": 1,
    "dim": 256,
    "depth": 4,
    "heads": 4,
    "mlp_ratio": 4.0,
    "pool": "mean",
}


def build(
    folder: Path, n_train: int, n_test: int, n_draws: int, vit: dict[str, object] | None = None
) -> Path:
    vit = dict(vit or VIT)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    encoder = ViTEncoder(**vit)  # type: ignore[arg-type]
    head = LinearHead(vit["dim"])  # type: ignore[arg-type]
    save_file(encoder.state_dict(), str(folder / "encoder.safetensors"))
    save_file(head.state_dict(), str(folder / "head.safetensors"))
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.random((n, 256), dtype=np.float32)
        np.savez(folder / f"{split}.npz", x=x, y=rng.integers(0, 2, n))
    cfg = {
        "encoder": {"arch": "vit", "weights": "encoder.safetensors", **vit},
        "head": {"arch": "linear", "weights": "head.safetensors"},
        "data": {"downstream_train": "train.npz", "downstream_test": "test.npz"},
        "bound": {"n_draws": n_draws, "batch_size": 512},
    }
    path = folder / "tfbound.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@torch.inference_mode()
def bare_forward(
    folder: Path, batch_size: int = 512, vit: dict[str, object] | None = None
) -> float:
    encoder = ViTEncoder(**dict(vit or VIT)).eval()  # type: ignore[arg-type]
    from safetensors.torch import load_file

    encoder.load_state_dict(load_file(str(folder / "encoder.safetensors")))
    start = time.perf_counter()
    for split in ("train", "test"):
        x = np.load(folder / f"{split}.npz")["x"]
        for i in range(0, x.shape[0], batch_size):
            encoder(torch.from_numpy(x[i : i + batch_size]))
    return time.perf_counter() - start


def run(
    n_train: int,
    n_test: int,
    n_draws: int,
    repeats: int,
    threads: int | None,
    dim: int = 256,
    depth: int = 4,
) -> list[Result]:
    vit = {**VIT, "dim": dim, "depth": depth}
    print(f"estimate vs bare forward: n_train {n_train}, n_test {n_test}, K={n_draws}, ViT {vit}; "
          f"{setup_threads(threads)}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cfg = build(folder, n_train, n_test, n_draws, vit)
        bound: list[float] = []

        def estimate() -> None:
            report = tfbound.estimate(cfg)
            term = report.get("certified_test_error_bound")
            bound.append(float("nan") if term is None else float(term.value))

        times, _ = interleaved(
            {"bare": lambda: bare_forward(folder, vit=vit), "estimate": estimate}, repeats
        )
        process = _whole_process(cfg, threads)
    for name, t in times.items():
        print(f"  {name:<9} {t.line()}")
    startup = process - times["estimate"].wall
    print(
        f"  the whole 'tfbound estimate' process: {process:.2f} s, of which start-up (imports, "
        f"reading the config and the files) about {startup:.2f} s"
    )
    return [
        Result(
            "estimate / bare forward",
            times["estimate"].wall / times["bare"].wall,
            "<= 1.2",
            f"n={n_train}+{n_test}, K={n_draws}, ViT dim {dim} depth {depth}; start-up "
            f"{startup:.1f} s excluded",
        )
    ]


def _whole_process(cfg: Path, threads: int | None) -> float:
    """Wall time of ``python -m tfbound estimate CONFIG`` as a user runs it."""
    import subprocess
    import sys

    args = [sys.executable, "-m", "tfbound", "estimate", str(cfg), "-q", "-f", "json"]
    if threads is not None:
        args += ["--threads", str(threads)]
    start = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=10_000)
    parser.add_argument("--n-test", type=int, default=2_000)
    parser.add_argument("--n-draws", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1)
    add_thread_option(parser)
    args = parser.parse_args()
    for k in args.n_draws:
        for r in run(
            args.n_train, args.n_test, k, args.repeats, args.threads, args.dim, args.depth
        ):
            print(r.line())


if __name__ == "__main__":
    main()

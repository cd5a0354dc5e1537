"""Benchmark: ``tfbound transfer`` against members x one bare encoder forward pass over its data.

For each pipeline, times in one process and on the same data:

- one bare forward pass of the configured encoder over every input the transfer run reads per
  member (pretrain_train + pretrain_val + downstream_train + held-out split; batched,
  ``torch.inference_mode``, eval mode), the median of ``--repeats`` runs;
- ``run_transfer`` on the pipeline's transfer config (family building, two corrupted and two
  clean feature passes, the decoder refit and the probe per member, the fit, heterogeneity).

Prints both times, the number of members J and ``ratio = transfer / (J x forward)``. The ratio
counts every fixed cost (probe steps, ridge solves, bootstrap, MMD permutations), so it is large
for the tiny sample encoders, whose forward pass takes milliseconds, and falls toward the cost of
the extra passes for a larger encoder (``--synthetic``).

Run: ``python benchmarks/transfer.py [--synthetic] [--threads 1]``; on a shared or small machine
set ``OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1`` (thread oversubscription slows both torch and
NumPy's BLAS by an order of magnitude).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors.torch import save_file

from tfbound.io.datasets import load_inputs, load_labeled
from tfbound.models import MLP, LinearHead, ViTEncoder
from tfbound.models.build import build_module
from tfbound.transfer import load_transfer_config, run_transfer

ROOT = Path(__file__).resolve().parent.parent


def forward_time(config: Path, repeats: int) -> tuple[float, int]:
    cfg = load_transfer_config(config)
    base = cfg.base
    assert base.data.pretrain_train and base.data.pretrain_val and cfg.heldout
    xs = [
        load_inputs(base.data.pretrain_train),
        load_inputs(base.data.pretrain_val),
        load_labeled(base.data.downstream_train).x,
        load_labeled(cfg.heldout).x,
    ]
    x = torch.from_numpy(np.concatenate([np.asarray(a, dtype=np.float32) for a in xs]))
    encoder = build_module(base.encoder)
    times = []
    with torch.inference_mode():
        for _ in range(repeats):
            start = time.perf_counter()
            for i in range(0, x.shape[0], base.bound.batch_size):
                encoder(x[i : i + base.bound.batch_size])
            times.append(time.perf_counter() - start)
    return statistics.median(times), int(x.shape[0])


def synthetic(folder: Path, n: int) -> Path:
    """A ViT MAE pipeline (dim 128, depth 2, 16 tokens of 16x16 images) on random images."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    vit = {
        "image_size": 16,
        "patch_size": 4,
        "in_chans": 1,
        "dim": 128,
        "depth": 2,
        "heads": 4,
        "mlp_ratio": 2.0,
    }
    encoder = ViTEncoder(**vit)  # type: ignore[arg-type]
    decoder = MLP(128, [128], 256)
    head = LinearHead(128)
    for name, module in (("encoder", encoder), ("decoder", decoder), ("head", head)):
        save_file(module.state_dict(), str(folder / f"{name}.safetensors"))
    arrays = {
        "pre": rng.random((n, 256), dtype=np.float32),
        "val": rng.random((n // 2, 256), dtype=np.float32),
        "x": rng.random((n, 256), dtype=np.float32),
        "y": rng.integers(0, 2, n),
        "tx": rng.random((n // 2, 256), dtype=np.float32),
        "ty": rng.integers(0, 2, n // 2),
    }
    np.savez(folder / "data.npz", **arrays)  # type: ignore[arg-type]
    cfg = {
        "encoder": {"arch": "vit", "weights": "encoder.safetensors", **vit},
        "decoder": {
            "arch": "mlp",
            "weights": "decoder.safetensors",
            "input_dim": 128,
            "hidden": [128],
            "output_dim": 256,
        },
        "head": {"arch": "linear", "weights": "head.safetensors"},
        "pretext": {"kind": "mae", "mask_ratio": 0.5, "box": [0.0, 1.0], "seed": 0},
        "data": {
            "pretrain_train": {"path": "data.npz", "x": "pre"},
            "pretrain_val": {"path": "data.npz", "x": "val"},
            "downstream_train": {"path": "data.npz", "x": "x", "y": "y"},
            "downstream_test": {"path": "data.npz", "x": "tx", "y": "ty"},
        },
    }
    path = folder / "tfbound.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def bench(name: str, config: Path, repeats: int) -> None:
    fwd, n_inputs = forward_time(config, repeats)
    start = time.perf_counter()
    report = run_transfer(config)
    total = time.perf_counter() - start
    j = len(report.members)
    print(
        f"{name}: {j} members, {n_inputs} inputs per pass; forward {fwd * 1e3:.1f} ms; "
        f"transfer {total:.2f} s; ratio transfer / (J x forward) = {total / (j * fwd):.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", action="store_true", help="also a larger synthetic ViT")
    parser.add_argument("--n", type=int, default=1000, help="synthetic training-split size")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in ("ce_mlp", "mae_vit"):
        bench(name, ROOT / "sample_models" / name, args.repeats)
    if args.synthetic:
        with tempfile.TemporaryDirectory() as tmp:
            bench("synthetic ViT", synthetic(Path(tmp), args.n), args.repeats)


if __name__ == "__main__":
    main()

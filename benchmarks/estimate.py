"""Benchmark: the whole ``tfbound estimate`` against one bare forward pass of the encoder.

Builds a synthetic ViT encoder (dim 256, depth 4, 16 tokens of 16x16 images) with a linear head,
``--n-train`` training and ``--n-test`` test images in a temporary folder, then times, in one
process and on the same data:

- one bare forward pass of the encoder over train + test (batched, ``torch.inference_mode``);
- ``tfbound.estimate`` on that config (loading, the feature pass, the RIRC with K draws, the bound).

Prints both times and their ratio (goal: below 1.5). Run: ``python benchmarks/estimate.py``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
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


def build(folder: Path, n_train: int, n_test: int, n_draws: int) -> Path:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    encoder = ViTEncoder(**VIT)  # type: ignore[arg-type]
    head = LinearHead(VIT["dim"])  # type: ignore[arg-type]
    save_file(encoder.state_dict(), str(folder / "encoder.safetensors"))
    save_file(head.state_dict(), str(folder / "head.safetensors"))
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.random((n, 256), dtype=np.float32)
        np.savez(folder / f"{split}.npz", x=x, y=rng.integers(0, 2, n))
    cfg = {
        "encoder": {"arch": "vit", "weights": "encoder.safetensors", **VIT},
        "head": {"arch": "linear", "weights": "head.safetensors"},
        "data": {"downstream_train": "train.npz", "downstream_test": "test.npz"},
        "bound": {"n_draws": n_draws, "batch_size": 512},
    }
    path = folder / "tfbound.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@torch.inference_mode()
def bare_forward(folder: Path, batch_size: int = 512) -> float:
    encoder = ViTEncoder(**VIT).eval()  # type: ignore[arg-type]
    from safetensors.torch import load_file

    encoder.load_state_dict(load_file(str(folder / "encoder.safetensors")))
    start = time.perf_counter()
    for split in ("train", "test"):
        x = np.load(folder / f"{split}.npz")["x"]
        for i in range(0, x.shape[0], batch_size):
            encoder(torch.from_numpy(x[i : i + batch_size]))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=10_000)
    parser.add_argument("--n-test", type=int, default=2_000)
    parser.add_argument("--n-draws", type=int, nargs="+", default=[1_000, 10_000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(
            f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
            f"n_train {args.n_train}, n_test {args.n_test}, ViT {VIT}"
        )
        for k in args.n_draws:
            cfg = build(folder, args.n_train, args.n_test, k)
            t_bare = bare_forward(folder)
            start = time.perf_counter()
            report = tfbound.estimate(cfg)
            t_est = time.perf_counter() - start
            bound = report.get("certified_test_error_bound")
            print(
                f"K={k:>6}: bare forward {t_bare:7.2f} s   estimate {t_est:7.2f} s   "
                f"ratio {t_est / t_bare:5.2f}   (bound {bound.value if bound else None:.4f})"
            )


if __name__ == "__main__":
    main()

"""Build the two sample models shipped with tfbound: ``ce_mlp`` and ``mae_vit``.

Usage (from the repository root)::

    python sample_models/build.py                  # rebuild splits, weights, heads and configs
    python sample_models/build.py --export-digits  # once: re-export the raw digits (needs sklearn)

Everything is seeded and runs on one CPU thread with deterministic algorithms, so a rebuild on the
same machine reproduces every output file byte for byte (the ``.npz`` archives are written with a
fixed zip timestamp for that reason).

Protocol. The encoder and decoder are pre-trained on ``pretrain_train_x`` only. The encoder is then
frozen (``eval()``), features of ``downstream_train_x`` are computed under ``inference_mode`` and a
linear head is fitted on those raw features as an L2-regularised logistic regression. The
downstream test split and ``downstream_unlabeled_x`` were never used for any choice; the test
accuracy is only printed (the pre-training settings below were compared on ``pretrain_val_x`` and
on ``downstream_train_x``, see README.md).
"""

from __future__ import annotations

import argparse
import io
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tfbound.models import MLP, LinearHead, MLPEncoder, ViTEncoder  # noqa: E402
from tfbound.pretext import (  # noqa: E402
    ContextEncoderTask,
    MaskedAutoencoderTask,
    PretextTask,
    clipped_square_loss,
    pretext_batch,
)

DATA_DIR = HERE / "data"
DIGITS = DATA_DIR / "digits.npz"
SPLITS = DATA_DIR / "digits_splits.npz"

SEED = 0
BOX = (0.0, 1.0)
# (name, size) in the order the splits are carved from the seeded permutation.
SPLIT_SIZES = (
    ("pretrain_train", 500),
    ("pretrain_val", 150),
    ("downstream_unlabeled", 150),
    ("downstream_train", 700),
    ("downstream_test", 297),
)
LABELED = ("downstream_train", "downstream_test")
HEAD_LAMBDA = 1e-3
TRAIN_MASK_OFFSET = 1000
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


# --------------------------------------------------------------------------------------- data


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez`` (uncompressed, loadable by ``np.load``) but with fixed zip timestamps."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for key, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=ZIP_DATE)
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


def export_digits() -> None:
    """Export scikit-learn's bundled 8x8 digits (the UCI optdigits test set) to ``digits.npz``."""
    from sklearn.datasets import load_digits  # not a runtime dependency: only imported here

    digits = load_digits()
    images = digits.images
    if images.shape != (1797, 8, 8) or images.min() < 0 or images.max() > 16:
        lo, hi = images.min(), images.max()
        raise RuntimeError(f"unexpected digits data: shape {images.shape}, range [{lo}, {hi}]")
    if not np.array_equal(images, np.round(images)):
        raise RuntimeError("digits pixels are not integers")
    save_npz(
        DIGITS,
        {"images": images.astype(np.uint8), "target": digits.target.astype(np.int64)},
    )
    print(f"wrote {DIGITS.relative_to(ROOT)}")


def make_splits() -> dict[str, np.ndarray]:
    """Carve the disjoint splits from a seeded permutation and write ``digits_splits.npz``."""
    with np.load(DIGITS) as raw:
        images, target = raw["images"], raw["target"]
    n = images.shape[0]
    if n != sum(size for _, size in SPLIT_SIZES):
        raise RuntimeError(f"expected {sum(s for _, s in SPLIT_SIZES)} examples, found {n}")
    x = (images.astype(np.float32) / np.float32(16.0)).reshape(n, 64)
    y = (target >= 5).astype(np.int64)  # 1 if digit >= 5 else 0
    perm = np.random.default_rng(SEED).permutation(n)
    out: dict[str, np.ndarray] = {}
    start = 0
    for name, size in SPLIT_SIZES:
        idx = perm[start : start + size]
        start += size
        out[f"{name}_x"] = x[idx]
        if name in LABELED:
            out[f"{name}_y"] = y[idx]
    save_npz(SPLITS, out)
    shapes = ", ".join(f"{k} {v.shape}" for k, v in out.items())
    print(f"wrote {SPLITS.relative_to(ROOT)}: {shapes}")
    return out


# ---------------------------------------------------------------------------------- training


@dataclass(frozen=True)
class PretrainConfig:
    epochs: int
    batch_size: int
    lr: float


def pretext_loss(
    task: PretextTask, encoder: nn.Module, decoder: nn.Module, x: torch.Tensor, seed: int
) -> float:
    """Mean clipped square loss on ``x`` (one batch; MAE masks from a generator seeded ``seed``)."""
    encoder.eval()
    decoder.eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        pred, target = pretext_batch(task, encoder, decoder, x, gen)
        return float(clipped_square_loss(pred, target, BOX).mean())


def pretrain(
    task: PretextTask,
    encoder: nn.Module,
    decoder: nn.Module,
    x: torch.Tensor,
    cfg: PretrainConfig,
    seed: int,
) -> list[float]:
    """Adam on the plain squared error, cosine learning-rate decay; returns per-epoch mean loss."""
    params = [*encoder.parameters(), *decoder.parameters()]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    shuffle = torch.Generator().manual_seed(seed)
    # Training masks, fresh every epoch, from a stream apart from the evaluation seeds (0 and 1).
    masks = torch.Generator().manual_seed(seed + TRAIN_MASK_OFFSET)
    n = x.shape[0]
    history: list[float] = []
    encoder.train()
    decoder.train()
    for _ in range(cfg.epochs):
        perm = torch.randperm(n, generator=shuffle)
        total = 0.0
        for i in range(0, n, cfg.batch_size):
            xb = x[perm[i : i + cfg.batch_size]]
            pred, target = pretext_batch(task, encoder, decoder, xb, masks)
            loss = F.mse_loss(pred, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * xb.shape[0]
        sched.step()
        history.append(total / n)
    return history


def features(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    encoder.eval()
    with torch.inference_mode():
        return encoder(x).clone()


def fit_linear_head(z: torch.Tensor, y01: torch.Tensor, lam: float) -> LinearHead:
    """L2-regularised logistic regression (bias unpenalised) on raw features, LBFGS in float64.

    Minimises ``mean_i log(1 + exp(-y_i (theta . z_i + b))) + (lam / 2) ||theta||^2`` with
    ``y_i = 2 * y01_i - 1`` in {-1, +1}.
    """
    z64 = z.to(torch.float64)
    y = 2.0 * y01.to(torch.float64) - 1.0
    d = z64.shape[1]
    w = torch.zeros(d + 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w],
        lr=1.0,
        max_iter=1000,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        history_size=50,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        margins = y * (z64 @ w[:d] + w[d])
        loss = F.softplus(-margins).mean() + 0.5 * lam * w[:d].pow(2).sum()
        loss.backward()
        return loss

    for _ in range(5):
        opt.step(closure)
    head = LinearHead(d)
    with torch.no_grad():
        head.linear.weight.copy_(w.detach()[:d].to(torch.float32).reshape(1, d))
        head.linear.bias.copy_(w.detach()[d:].to(torch.float32))
    return head


def accuracy(head: LinearHead, z: torch.Tensor, y01: torch.Tensor) -> float:
    head.eval()
    with torch.inference_mode():
        pred = (head(z) > 0).to(torch.int64)
    return float((pred == y01).to(torch.float64).mean())


def save_module(module: nn.Module, path: Path) -> None:
    state = {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}
    save_file(state, str(path))


# --------------------------------------------------------------------------------- pipelines

CE_YAML = """\
# ce_mlp: Context Encoder MLP pre-trained on 8x8 digits; linear head on digit >= 5.
encoder:
  arch: mlp
  weights: encoder.safetensors
  input_dim: 64
  hidden: [128]
  feature_dim: 32
  activation: relu
decoder:
  arch: mlp
  weights: decoder.safetensors
  input_dim: 32
  hidden: [64]
  output_dim: 16
  activation: relu
head:
  arch: linear
  weights: head.safetensors
pretext:
  kind: ce
  image_shape: [1, 8, 8]
  block: [2, 2, 4, 4]
  box: [0.0, 1.0]
  seed: 0
"""

MAE_YAML = """\
# mae_vit: Masked Autoencoder ViT pre-trained on 8x8 digits; linear head on digit >= 5.
encoder:
  arch: vit
  weights: encoder.safetensors
  image_size: 8
  patch_size: 2
  in_chans: 1
  dim: 32
  depth: 2
  heads: 4
  mlp_ratio: 2.0
  pool: mean
decoder:
  arch: mlp
  weights: decoder.safetensors
  input_dim: 32
  hidden: [64]
  output_dim: 64
  activation: relu
head:
  arch: linear
  weights: head.safetensors
pretext:
  kind: mae
  mask_ratio: 0.5
  box: [0.0, 1.0]
  seed: 0
"""

COMMON_YAML = """\
data:
  pretrain_train: {path: ../data/digits_splits.npz, x: pretrain_train_x}
  pretrain_val: {path: ../data/digits_splits.npz, x: pretrain_val_x}
  downstream_train: {path: ../data/digits_splits.npz, x: downstream_train_x, y: downstream_train_y}
  downstream_test: {path: ../data/digits_splits.npz, x: downstream_test_x, y: downstream_test_y}
bound:
  delta: 0.05
  seed: 0
"""


def build_pipeline(
    name: str,
    make_modules,
    task: PretextTask,
    cfg: PretrainConfig,
    yaml_text: str,
    splits: dict[str, torch.Tensor],
) -> dict[str, float]:
    t0 = time.perf_counter()
    torch.manual_seed(SEED)
    encoder, decoder = make_modules()
    history = pretrain(task, encoder, decoder, splits["pretrain_train_x"], cfg, seed=SEED)
    encoder.eval()
    decoder.eval()
    for p in [*encoder.parameters(), *decoder.parameters()]:
        p.requires_grad_(False)
    train_loss = pretext_loss(task, encoder, decoder, splits["pretrain_train_x"], SEED)
    # Same mask seeds as ``tfbound estimate``: pretext.seed on train, pretext.seed + 1 held out.
    val_loss = pretext_loss(task, encoder, decoder, splits["pretrain_val_x"], SEED + 1)

    z_train = features(encoder, splits["downstream_train_x"])
    head = fit_linear_head(z_train, splits["downstream_train_y"], HEAD_LAMBDA)
    train_acc = accuracy(head, z_train, splits["downstream_train_y"])
    z_test = features(encoder, splits["downstream_test_x"])
    test_acc = accuracy(head, z_test, splits["downstream_test_y"])

    out = HERE / name
    out.mkdir(parents=True, exist_ok=True)
    save_module(encoder, out / "encoder.safetensors")
    save_module(decoder, out / "decoder.safetensors")
    save_module(head, out / "head.safetensors")
    torch.save(
        {k: v.detach().contiguous().clone() for k, v in head.state_dict().items()},
        out / "head_state_dict.pt",
    )
    (out / "tfbound.yaml").write_text(yaml_text + COMMON_YAML)

    elapsed = time.perf_counter() - t0
    every = max(1, cfg.epochs // 10)
    curve = ", ".join(f"{e + 1}:{history[e]:.5f}" for e in range(every - 1, cfg.epochs, every))
    print(f"[{name}] training MSE by epoch: {curve}")
    print(f"[{name}] pretext clipped square loss: train {train_loss:.5f}, val {val_loss:.5f}")
    theta, bias = head.linear.weight.detach(), head.linear.bias.detach()
    print(f"[{name}] head ||theta|| {float(theta.norm()):.4f}, b {float(bias):.4f}")
    print(f"[{name}] downstream accuracy: train {train_acc:.4f}, test {test_acc:.4f}")
    print(f"[{name}] built in {elapsed:.1f} s")
    return {
        "pretext_train": train_loss,
        "pretext_val": val_loss,
        "train_acc": train_acc,
        "test_acc": test_acc,
        "seconds": elapsed,
    }


def make_ce() -> tuple[nn.Module, nn.Module]:
    encoder = MLPEncoder(input_dim=64, hidden=[128], feature_dim=32, activation="relu")
    decoder = MLP(32, [64], 16, "relu")
    return encoder, decoder


def make_mae() -> tuple[nn.Module, nn.Module]:
    encoder = ViTEncoder(
        image_size=8, patch_size=2, in_chans=1, dim=32, depth=2, heads=4, mlp_ratio=2.0, pool="mean"
    )
    decoder = MLP(32, [64], 16 * 4, "relu")
    return encoder, decoder


CE_TASK = ContextEncoderTask(image_shape=(1, 8, 8), block=(2, 2, 4, 4))
MAE_TASK = MaskedAutoencoderTask(mask_ratio=0.5)
# A small learning rate for the MLP keeps most of its final-layer ReLU features alive (at 3e-3 about
# half of the 32 features die). About 20 settings were compared (see README.md) on the pretext loss
# of pretrain_val_x, the dead-feature count and a 5-fold cross-validated probe on
# downstream_train_x; never on the downstream test split.
CE_CFG = PretrainConfig(epochs=600, batch_size=50, lr=3e-4)
MAE_CFG = PretrainConfig(epochs=600, batch_size=50, lr=3e-3)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--export-digits",
        action="store_true",
        help="re-export data/digits.npz from scikit-learn (only needed once)",
    )
    args = parser.parse_args(argv)

    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    t0 = time.perf_counter()
    if args.export_digits:
        export_digits()
    arrays = make_splits()
    splits = {k: torch.from_numpy(v) for k, v in arrays.items()}
    build_pipeline("ce_mlp", make_ce, CE_TASK, CE_CFG, CE_YAML, splits)
    build_pipeline("mae_vit", make_mae, MAE_TASK, MAE_CFG, MAE_YAML, splits)
    print(f"total build time {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()

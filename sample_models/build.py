"""Build the two sample models shipped with tfbound: ``ce_mlp`` and ``mae_vit``.

Usage (from the repository root)::

    python sample_models/build.py                  # splits, weights, heads, configs, checkpoints
    python sample_models/build.py --no-checkpoints # the shipped models only (about half the time)
    python sample_models/build.py --radreg 0.1 --out /tmp/radreg   # both pipelines with RadReg
    python sample_models/build.py --export-digits  # once: re-export the raw digits (needs sklearn)

Everything is seeded and runs on one CPU thread with deterministic algorithms, so a rebuild on the
same machine reproduces every output file byte for byte (the ``.npz`` archives are written with a
fixed zip timestamp for that reason). The loops live in ``tfbound.training.loops``.

Protocol. The encoder and decoder are pre-trained on ``pretrain_train_x`` only (with ``--radreg``,
also RadReg on the fixed ``radreg_x``). The encoder is then frozen (``eval()``), features of
``downstream_train_x`` are computed under ``inference_mode`` and a linear head is fitted on those
raw features as an L2-regularised logistic regression. The downstream test split,
``radreg_x`` (for the default models) and ``downstream_pool_x`` were never used for any choice; the
test accuracy is only printed (the pre-training settings below were compared on ``pretrain_val_x``
and on ``downstream_train_x``, see README.md).

Checkpoints: a log-spaced series (epochs 0, 1, 2, 4, ..., 512 and the last) of both pipelines for
seeds 0 and 1 under ``checkpoints/<pipeline>/seed<k>/epoch<e>/{encoder,decoder}.safetensors``,
listed in ``checkpoints/index.json``. Seed 0 is the shipped model's own run (its last checkpoint is
byte-identical to ``<pipeline>/encoder.safetensors``).
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import shutil
import sys
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tfbound.pretext import ContextEncoderTask, MaskedAutoencoderTask, PretextTask  # noqa: E402
from tfbound.training.loops import (  # noqa: E402
    MLPArch,
    PretrainResult,
    RadRegOptions,
    ViTArch,
    accuracy,
    features,
    fit_linear_head,
    log_spaced_epochs,
    mean_pretext_loss,
    pretrain_ce,
    pretrain_mae,
    save_checkpoints_to,
    save_weights,
)

DATA_DIR = HERE / "data"
DIGITS = DATA_DIR / "digits.npz"
SPLITS = DATA_DIR / "digits_splits.npz"
#: the package-data copy that ``tfbound pretrain`` reads after a wheel install (byte-identical)
PACKAGE_SPLITS = ROOT / "tfbound" / "training" / "data" / "digits_splits.npz"
CHECKPOINTS = HERE / "checkpoints"

SEED = 0
CHECKPOINT_SEEDS = (0, 1)
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
# downstream_unlabeled_x (a random slice of the permutation) is cut in two, rows 0-74 and 75-149:
# the RadReg set, which a RadReg encoder sees, and the pool of spec 10.3, which no encoder sees.
RADREG_ROWS = 75
HEAD_LAMBDA = 1e-3
RADREG_DRAWS = 256
RADREG_SEED = 0
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
    # Appended after the original keys (which stay as they were): two disjoint halves.
    out["radreg_x"] = out["downstream_unlabeled_x"][:RADREG_ROWS]
    out["downstream_pool_x"] = out["downstream_unlabeled_x"][RADREG_ROWS:]
    save_npz(SPLITS, out)
    shutil.copyfile(SPLITS, PACKAGE_SPLITS)
    shapes = ", ".join(f"{k} {v.shape}" for k, v in out.items())
    print(f"wrote {SPLITS.relative_to(ROOT)}: {shapes}")
    return out


def load_splits() -> dict[str, np.ndarray]:
    with np.load(SPLITS) as raw:
        return {k: raw[k] for k in raw.files}


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
  pretrain_train: {{path: {data}, x: pretrain_train_x}}
  pretrain_val: {{path: {data}, x: pretrain_val_x}}
  downstream_train: {{path: {data}, x: downstream_train_x, y: downstream_train_y}}
  downstream_test: {{path: {data}, x: downstream_test_x, y: downstream_test_y}}
  # unlabeled downstream pool (hold-out plus disagreement): disjoint from S, the test split,
  # the pre-training inputs and the RadReg set
  downstream_unlabeled: {{path: {data}, x: downstream_pool_x}}
bound:
  delta: 0.05
  # The pre-training settings were picked among about 20 candidates partly with a cross-validated
  # probe on the labeled split (sample_models/README.md): delta_1 and delta_mc are divided by 20.
  encoder_candidates: 20
  seed: 0
"""


@dataclass(frozen=True)
class Pipeline:
    name: str
    arch: MLPArch | ViTArch
    task: PretextTask
    epochs: int
    lr: float
    batch_size: int
    yaml_head: str

    def pretrain(
        self,
        x: torch.Tensor,
        seed: int,
        *,
        epochs: int | None = None,
        radreg: RadRegOptions | None = None,
        checkpoint_dir: Path | None = None,
    ) -> PretrainResult:
        n_epochs = self.epochs if epochs is None else epochs
        kwargs: dict[str, Any] = {
            "epochs": n_epochs,
            "lr": self.lr,
            "seed": seed,
            "batch_size": self.batch_size,
            "radreg": radreg,
        }
        if checkpoint_dir is not None:
            kwargs["checkpoint_epochs"] = log_spaced_epochs(n_epochs)
            kwargs["on_checkpoint"] = save_checkpoints_to(checkpoint_dir)
        if isinstance(self.arch, MLPArch):
            assert isinstance(self.task, ContextEncoderTask)
            return pretrain_ce(self.arch, self.task, x, **kwargs)
        assert isinstance(self.task, MaskedAutoencoderTask)
        return pretrain_mae(self.arch, self.task, x, **kwargs)


# A small learning rate for the MLP keeps most of its final-layer ReLU features alive (at 3e-3 about
# half of the 32 features die). About 20 settings were compared (see README.md) on the pretext loss
# of pretrain_val_x, the dead-feature count and a 5-fold cross-validated probe on
# downstream_train_x; never on the downstream test split.
CE = Pipeline(
    "ce_mlp",
    MLPArch(input_dim=64, hidden=(128,), feature_dim=32, activation="relu", decoder_hidden=(64,)),
    ContextEncoderTask(image_shape=(1, 8, 8), block=(2, 2, 4, 4)),
    epochs=600,
    lr=3e-4,
    batch_size=50,
    yaml_head=CE_YAML,
)
MAE = Pipeline(
    "mae_vit",
    ViTArch(image_size=8, patch_size=2, in_chans=1, dim=32, depth=2, heads=4, mlp_ratio=2.0),
    MaskedAutoencoderTask(mask_ratio=0.5),
    epochs=600,
    lr=3e-3,
    batch_size=50,
    yaml_head=MAE_YAML,
)
PIPELINES = (CE, MAE)


def radreg_options(lam: float, splits: dict[str, torch.Tensor]) -> RadRegOptions:
    return RadRegOptions(
        lam=lam, unlabeled_x=splits["radreg_x"], n_draws=RADREG_DRAWS, seed=RADREG_SEED
    )


def config_text(pipe: Pipeline, out: Path, radreg: float | None) -> str:
    data = Path(os.path.relpath(SPLITS, out)).as_posix()
    text = pipe.yaml_head + COMMON_YAML.format(data=data)
    if radreg:
        note = (
            f"# Pre-trained with RadReg: lambda {radreg:g} on radreg_x ({RADREG_ROWS} rows of "
            f"downstream_unlabeled_x), K = {RADREG_DRAWS}, l2-normalised features, radius 1.\n"
        )
        text = note + text
    return text


def build_pipeline(
    pipe: Pipeline,
    splits: dict[str, torch.Tensor],
    out: Path,
    *,
    radreg: float | None = None,
    checkpoint_dir: Path | None = None,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    opts = radreg_options(radreg, splits) if radreg else None
    x_pre = splits["pretrain_train_x"]
    res = pipe.pretrain(x_pre, SEED, radreg=opts, checkpoint_dir=checkpoint_dir)
    encoder, decoder = res.encoder, res.decoder
    train_loss = mean_pretext_loss(pipe.task, encoder, decoder, splits["pretrain_train_x"], SEED)
    # Same mask seeds as ``tfbound estimate``: pretext.seed on train, pretext.seed + 1 held out.
    val_loss = mean_pretext_loss(pipe.task, encoder, decoder, splits["pretrain_val_x"], SEED + 1)

    z_train = features(encoder, splits["downstream_train_x"])
    head = fit_linear_head(z_train, splits["downstream_train_y"], HEAD_LAMBDA)
    train_acc = accuracy(head, z_train, splits["downstream_train_y"])
    z_test = features(encoder, splits["downstream_test_x"])
    test_acc = accuracy(head, z_test, splits["downstream_test_y"])

    out.mkdir(parents=True, exist_ok=True)
    save_weights(encoder, out / "encoder.safetensors")
    save_weights(decoder, out / "decoder.safetensors")
    save_weights(head, out / "head.safetensors")
    torch.save(
        {k: v.detach().contiguous().clone() for k, v in head.state_dict().items()},
        out / "head_state_dict.pt",
    )
    (out / "tfbound.yaml").write_text(config_text(pipe, out, radreg))

    elapsed = time.perf_counter() - t0
    history = res.pretext_mse
    every = max(1, len(history) // 10)
    curve = ", ".join(f"{e + 1}:{history[e]:.5f}" for e in range(every - 1, len(history), every))
    theta, bias = head.linear.weight.detach(), head.linear.bias.detach()
    log = [f"training MSE by epoch: {curve}"]
    if res.radreg:
        log.append(
            f"RadReg (lambda {radreg:g}), mean over the first / last epoch: "
            f"{res.radreg[0]:.5f} / {res.radreg[-1]:.5f}"
        )
    log += [
        f"pretext clipped square loss: train {train_loss:.5f}, val {val_loss:.5f}",
        f"head ||theta|| {float(theta.norm()):.4f}, b {float(bias):.4f}",
        f"downstream accuracy: train {train_acc:.4f}, test {test_acc:.4f}",
        f"built in {elapsed:.1f} s",
    ]
    return {"history": history, "log": [f"[{pipe.name}] {line}" for line in log]}


def checkpoint_series(pipe: Pipeline, splits: dict[str, torch.Tensor], seed: int) -> dict[str, Any]:
    """Pre-train one more seed for its checkpoints only."""
    t0 = time.perf_counter()
    folder = CHECKPOINTS / pipe.name / f"seed{seed}"
    res = pipe.pretrain(splits["pretrain_train_x"], seed, checkpoint_dir=folder)
    elapsed = time.perf_counter() - t0
    return {
        "history": res.pretext_mse,
        "log": [f"[{pipe.name}] checkpoints of seed {seed} in {elapsed:.1f} s"],
    }


def run_job(job: tuple[str, str, int, float | None, str | None]) -> dict[str, Any]:
    """One pipeline run, in a worker process: ``(kind, pipeline, seed, radreg, out)``."""
    kind, name, seed, radreg, out = job
    torch.set_num_threads(1)
    pipe = next(p for p in PIPELINES if p.name == name)
    splits = {k: torch.from_numpy(v) for k, v in load_splits().items()}
    if kind == "series":
        return checkpoint_series(pipe, splits, seed)
    ckpt = CHECKPOINTS / name / f"seed{seed}" if kind == "build+series" else None
    target = HERE / name if out is None else Path(out) / name
    return build_pipeline(pipe, splits, target, radreg=radreg, checkpoint_dir=ckpt)


def run_jobs(
    jobs: list[tuple[str, str, int, float | None, str | None]], workers: int
) -> list[dict[str, Any]]:
    """The jobs in ``workers`` processes (one thread each: results do not depend on it)."""
    if workers <= 1:
        results = [run_job(job) for job in jobs]
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            results = list(pool.map(run_job, jobs))
    for result in results:
        for line in result["log"]:
            print(line)
    return results


def write_index(histories: dict[tuple[str, int], tuple[float, ...]]) -> None:
    """``checkpoints/index.json``: every checkpoint with its paths (relative to the index)."""
    pipelines: dict[str, Any] = {}
    for pipe in PIPELINES:
        entries = []
        for seed in CHECKPOINT_SEEDS:
            history = histories[(pipe.name, seed)]
            for epoch in log_spaced_epochs(pipe.epochs):
                folder = f"{pipe.name}/seed{seed}/epoch{epoch}"
                for part in ("encoder", "decoder"):
                    if not (CHECKPOINTS / folder / f"{part}.safetensors").is_file():
                        raise RuntimeError(f"missing checkpoint {folder}/{part}.safetensors")
                entries.append(
                    {
                        "seed": seed,
                        "epoch": epoch,
                        "encoder": f"{folder}/encoder.safetensors",
                        "decoder": f"{folder}/decoder.safetensors",
                        "train_mse": None if epoch == 0 else round(history[epoch - 1], 8),
                    }
                )
        pipelines[pipe.name] = {
            "config": f"../{pipe.name}/tfbound.yaml",
            "epochs": pipe.epochs,
            "lr": pipe.lr,
            "batch_size": pipe.batch_size,
            "seeds": list(CHECKPOINT_SEEDS),
            "shipped_model": {"seed": SEED, "epoch": pipe.epochs},
            "checkpoints": entries,
        }
    index = {
        "format": 1,
        "description": (
            "Log-spaced pre-training checkpoints of the sample models (epoch 0 is the seeded "
            "initialisation; train_mse is the mean training squared error of that epoch). The "
            "architecture, pretext task and data are those of 'config'; seed 0's last checkpoint "
            "is the shipped model. Built by sample_models/build.py."
        ),
        "data": "../data/digits_splits.npz",
        "pipelines": pipelines,
    }
    (CHECKPOINTS / "index.json").write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
    print(f"wrote {(CHECKPOINTS / 'index.json').relative_to(ROOT)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--export-digits",
        action="store_true",
        help="re-export data/digits.npz from scikit-learn (only needed once)",
    )
    parser.add_argument(
        "--no-checkpoints",
        action="store_true",
        help="skip the checkpoint series (the shipped models only)",
    )
    parser.add_argument(
        "--radreg",
        type=float,
        default=None,
        metavar="LAMBDA",
        help="pre-train both pipelines with RadReg of this weight on radreg_x (needs --out)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="with --radreg: the folder for <out>/ce_mlp and <out>/mae_vit",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="worker processes, one thread each (default: 2; outputs do not depend on it)",
    )
    args = parser.parse_args(argv)
    if args.radreg is not None and args.out is None:
        parser.error("--radreg needs --out (the shipped models are built without RadReg)")
    if args.radreg is not None and not args.radreg >= 0:
        parser.error("--radreg must be >= 0")

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    workers = max(1, args.jobs)
    if args.radreg is not None:
        out = str(args.out.resolve())
        run_jobs([("build", p.name, SEED, args.radreg, out) for p in PIPELINES], workers)
        print(f"total build time {time.perf_counter() - t0:.1f} s")
        return

    if args.export_digits:
        export_digits()
    make_splits()
    if args.no_checkpoints:
        run_jobs([("build", p.name, SEED, None, None) for p in PIPELINES], workers)
    else:
        if CHECKPOINTS.exists():
            shutil.rmtree(CHECKPOINTS)
        # Longest first, so that two workers finish together.
        jobs: list[tuple[str, str, int, float | None, str | None]] = []
        for pipe in sorted(PIPELINES, key=lambda p: isinstance(p.arch, MLPArch)):
            for seed in CHECKPOINT_SEEDS:
                kind = "build+series" if seed == SEED else "series"
                jobs.append((kind, pipe.name, seed, None, None))
        results = run_jobs(jobs, workers)
        histories = {(job[1], job[2]): r["history"] for job, r in zip(jobs, results, strict=True)}
        write_index(histories)
    print(f"total build time {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()

"""Pre-training (Context Encoder, Masked Autoencoder), optionally with RadReg, and the linear head.

These are the loops that built the sample models, as library functions::

    result = pretrain_ce(MLPArch(), CE_TASK, x_pretrain, epochs=600, lr=3e-4, seed=0)
    z = features(result.encoder, x_labeled)
    head = fit_linear_head(z, y01, lam=1e-3)

Protocol: Adam on the plain squared error of the pretext prediction, mini-batches drawn by a
``torch.Generator`` seeded ``seed``, cosine learning-rate decay to 0 over ``epochs``; MAE training
masks fresh every epoch from a generator seeded ``seed + 1000`` (apart from the evaluation mask
seeds ``pretext.seed`` and ``pretext.seed + 1``). The modules are built right after
``torch.manual_seed(seed)``. Everything runs under ``torch.use_deterministic_algorithms(True)``
(restored afterwards); the caller fixes the number of threads (``torch.set_num_threads``), so a
rerun on the same machine with the same threads reproduces the weights bit for bit.

With ``radreg`` set, every step adds ``lam * RadReg(encoder(u))``
(:mod:`tfbound.training.radreg`) on the fixed unlabeled set ``u``: one more encoder pass over
``u``, one ``K x m`` by ``m x d`` product.
The unlabeled set must be disjoint from the labeled sample and the test split (bound-spec
section 9): the certificate needs the encoder independent of the labeled sample.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from tfbound.errors import TrainingError
from tfbound.features import ProgressFn
from tfbound.models import MLP, LinearHead, MLPEncoder, ViTEncoder
from tfbound.pretext import (
    ContextEncoderTask,
    MaskedAutoencoderTask,
    PretextTask,
    clipped_square_loss,
    pretext_batch,
)
from tfbound.training.radreg import AdversarialRadReg, Normalize, RadReg

#: Offset of the MAE training-mask stream from the training seed.
TRAIN_MASK_OFFSET = 1000

#: ``progress(task, done, total)``, called after every epoch.
#: ``on_checkpoint(epoch, encoder, decoder)``: modules in eval mode under ``torch.no_grad()``
#: (``torch.enable_grad()`` inside works); do not modify them.
CheckpointFn = Callable[[int, nn.Module, nn.Module], None]


# ------------------------------------------------------------------------------ architectures


@dataclass(frozen=True)
class MLPArch:
    """``MLPEncoder(input_dim, hidden, feature_dim, activation)`` and an MLP decoder."""

    input_dim: int = 64
    hidden: tuple[int, ...] = (128,)
    feature_dim: int = 32
    activation: str = "relu"
    decoder_hidden: tuple[int, ...] = (64,)

    def build(self, task: PretextTask) -> tuple[MLPEncoder, MLP]:
        if not isinstance(task, ContextEncoderTask):
            raise TypeError("the MLP pipeline pre-trains with the Context Encoder task")
        encoder = MLPEncoder(self.input_dim, list(self.hidden), self.feature_dim, self.activation)
        decoder = MLP(self.feature_dim, list(self.decoder_hidden), task.output_dim, self.activation)
        return encoder, decoder

    def encoder_config(self) -> dict[str, Any]:
        return {
            "arch": "mlp",
            "input_dim": self.input_dim,
            "hidden": list(self.hidden),
            "feature_dim": self.feature_dim,
            "activation": self.activation,
        }

    def decoder_config(self, task: PretextTask) -> dict[str, Any]:
        assert isinstance(task, ContextEncoderTask)
        return {
            "arch": "mlp",
            "input_dim": self.feature_dim,
            "hidden": list(self.decoder_hidden),
            "output_dim": task.output_dim,
            "activation": self.activation,
        }


@dataclass(frozen=True)
class ViTArch:
    """``ViTEncoder(...)`` and an MLP decoder predicting every patch from the pooled features."""

    image_size: int = 8
    patch_size: int = 2
    in_chans: int = 1
    dim: int = 32
    depth: int = 2
    heads: int = 4
    mlp_ratio: float = 2.0
    pool: str = "mean"
    decoder_hidden: tuple[int, ...] = (64,)
    decoder_activation: str = "relu"

    @property
    def decoder_output_dim(self) -> int:
        return (self.image_size // self.patch_size) ** 2 * self.patch_size**2 * self.in_chans

    @property
    def input_dim(self) -> int:
        return self.in_chans * self.image_size**2

    def build(self, task: PretextTask) -> tuple[ViTEncoder, MLP]:
        if not isinstance(task, MaskedAutoencoderTask):
            raise TypeError("the ViT pipeline pre-trains with the Masked Autoencoder task")
        encoder = ViTEncoder(
            image_size=self.image_size,
            patch_size=self.patch_size,
            in_chans=self.in_chans,
            dim=self.dim,
            depth=self.depth,
            heads=self.heads,
            mlp_ratio=self.mlp_ratio,
            pool=self.pool,
        )
        decoder = MLP(
            self.dim, list(self.decoder_hidden), self.decoder_output_dim, self.decoder_activation
        )
        return encoder, decoder

    def encoder_config(self) -> dict[str, Any]:
        return {
            "arch": "vit",
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "in_chans": self.in_chans,
            "dim": self.dim,
            "depth": self.depth,
            "heads": self.heads,
            "mlp_ratio": self.mlp_ratio,
            "pool": self.pool,
        }

    def decoder_config(self, task: PretextTask) -> dict[str, Any]:
        return {
            "arch": "mlp",
            "input_dim": self.dim,
            "hidden": list(self.decoder_hidden),
            "output_dim": self.decoder_output_dim,
            "activation": self.decoder_activation,
        }


# ----------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class RadRegOptions:
    """RadReg in pre-training: ``loss += lam * RadReg(encoder(unlabeled_x))`` every step.

    ``unlabeled_x``: the fixed set of ``m`` unlabeled downstream inputs (disjoint from the labeled
    sample and the test split); ``n_draws`` (``K``) sign vectors drawn once from ``seed``; keep
    ``K`` well above ``m``, or the encoder can fit its features to the few fixed draws.
    ``head="mlp"`` uses ``AdversarialRadReg`` (ReLU heads, one ascent step per training step).
    ``every = r > 1`` adds ``r * lam * RadReg`` on every r-th step only (the same weight on
    average, at 1/r of the extra cost: the extra encoder pass over ``m`` inputs dominates it).
    """

    lam: float
    unlabeled_x: torch.Tensor
    n_draws: int = 256
    seed: int = 0
    radius: float = 1.0
    normalize: Normalize = "l2"
    bias_const: float | None = None
    head: str = "linear"
    hidden: int = 16
    every: int = 1

    def __post_init__(self) -> None:
        if not (self.lam >= 0 and math.isfinite(self.lam)):
            raise ValueError(f"the RadReg lambda must be a finite number >= 0, got {self.lam}")
        if self.unlabeled_x.ndim < 2 or self.unlabeled_x.shape[0] < 2:
            raise ValueError("RadReg needs at least 2 unlabeled inputs (rows)")
        if self.head not in ("linear", "mlp"):
            raise ValueError(f"RadReg head must be 'linear' or 'mlp', got {self.head!r}")
        if self.every < 1:
            raise ValueError(f"RadReg 'every' must be >= 1, got {self.every}")

    def build(self, feature_dim: int) -> RadReg | AdversarialRadReg:
        m = int(self.unlabeled_x.shape[0])
        if self.head == "linear":
            return RadReg(
                self.n_draws,
                self.radius,
                m,
                self.seed,
                self.normalize,
                bias_const=self.bias_const,
            )
        return AdversarialRadReg(
            self.n_draws,
            self.radius,
            m,
            self.seed,
            feature_dim,
            self.normalize,
            head="mlp",
            hidden=self.hidden,
            bias_const=self.bias_const,
        )


@dataclass(frozen=True)
class PretrainResult:
    """The trained modules (eval mode) and per-epoch means of the training loss parts."""

    encoder: nn.Module
    decoder: nn.Module
    pretext_mse: tuple[float, ...]  # per epoch, mean over examples of the plain squared error
    radreg: tuple[float, ...] = ()  # per epoch, mean RadReg value over steps (empty without it)
    checkpoints: tuple[int, ...] = field(default=())  # epochs handed to the checkpoint callback


# ------------------------------------------------------------------------------------- loops


@contextmanager
def deterministic() -> Iterator[None]:
    """``torch.use_deterministic_algorithms(True)`` inside, the previous setting restored after."""
    previous = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=warn_only)


def log_spaced_epochs(epochs: int, *, include_zero: bool = True) -> tuple[int, ...]:
    """``0, 1, 2, 4, 8, ...`` up to ``epochs``, and ``epochs`` itself."""
    out = [0] if include_zero else []
    e = 1
    while e < epochs:
        out.append(e)
        e *= 2
    out.append(epochs)
    return tuple(out)


def save_checkpoints_to(folder: str | Path) -> CheckpointFn:
    """A checkpoint callback writing ``folder/epoch<e>/{encoder,decoder}.safetensors``."""
    root = Path(folder)

    def save(epoch: int, encoder: nn.Module, decoder: nn.Module) -> None:
        out = root / f"epoch{epoch}"
        out.mkdir(parents=True, exist_ok=True)
        save_weights(encoder, out / "encoder.safetensors")
        save_weights(decoder, out / "decoder.safetensors")

    return save


def _check_finite_loss(loss: torch.Tensor, what: str, epoch: int) -> None:
    if not bool(torch.isfinite(loss.detach()).all()):
        raise TrainingError(
            f"training diverged: {what} is NaN or Inf in epoch {epoch} (non-finite inputs, or a "
            "learning rate too large); nothing was written"
        )


def check_finite_weights(modules: Sequence[nn.Module], epoch: int | None = None) -> None:
    """``TrainingError`` if any parameter or buffer of ``modules`` is NaN or Inf."""
    for module in modules:
        for name, t in module.state_dict().items():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                when = "" if epoch is None else f" after epoch {epoch}"
                raise TrainingError(
                    f"training diverged: weight {name!r} is NaN or Inf{when} (non-finite inputs, "
                    "or a learning rate too large); nothing was written"
                )


def _pretrain(
    arch: MLPArch | ViTArch,
    task: PretextTask,
    x: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    seed: int,
    batch_size: int,
    radreg: RadRegOptions | None,
    checkpoint_epochs: Sequence[int],
    on_checkpoint: CheckpointFn | str | Path | None,
    progress: ProgressFn | None,
    label: str,
) -> PretrainResult:
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ValueError("epochs and batch_size must be >= 1 and lr > 0")
    wanted = sorted(set(int(e) for e in checkpoint_epochs))
    if wanted and (wanted[0] < 0 or wanted[-1] > epochs):
        raise ValueError(f"checkpoint epochs must lie in [0, {epochs}], got {wanted}")
    if wanted and on_checkpoint is None:
        raise ValueError("checkpoint_epochs needs on_checkpoint (a callback or a folder)")
    callback: CheckpointFn | None
    if isinstance(on_checkpoint, str | Path):
        callback = save_checkpoints_to(on_checkpoint)
    else:
        callback = on_checkpoint
    x = torch.as_tensor(x, dtype=torch.float32)
    n = x.shape[0]
    if n < 1:
        raise ValueError("no pre-training inputs")
    with deterministic():
        torch.manual_seed(seed)
        encoder, decoder = arch.build(task)
        reg = None
        u = None
        if radreg is not None and radreg.lam > 0:
            u = torch.as_tensor(radreg.unlabeled_x, dtype=torch.float32)
            reg = radreg.build(int(getattr(encoder, "feature_dim", 0)) or 1)
        params = [*encoder.parameters(), *decoder.parameters()]
        opt = torch.optim.Adam(params, lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        shuffle = torch.Generator().manual_seed(seed)
        masks = torch.Generator().manual_seed(seed + TRAIN_MASK_OFFSET)
        mse_hist: list[float] = []
        reg_hist: list[float] = []
        saved: list[int] = []
        step = 0

        def checkpoint(epoch: int) -> None:
            if callback is not None and epoch in wanted:
                encoder.eval()
                decoder.eval()
                with torch.no_grad():  # not inference mode: a callback may fit a head
                    callback(epoch, encoder, decoder)
                saved.append(epoch)

        checkpoint(0)
        encoder.train()
        decoder.train()
        for epoch in range(1, epochs + 1):
            perm = torch.randperm(n, generator=shuffle)
            total, reg_total, steps = 0.0, 0.0, 0
            for i in range(0, n, batch_size):
                xb = x[perm[i : i + batch_size]]
                pred, target = pretext_batch(task, encoder, decoder, xb, masks)
                loss = F.mse_loss(pred, target)
                _check_finite_loss(loss, "the pretext loss", epoch)
                total += float(loss.detach()) * xb.shape[0]
                if reg is not None and u is not None and radreg is not None:
                    if step % radreg.every == 0:
                        z_u = encoder(u)
                        if isinstance(reg, AdversarialRadReg):
                            reg.ascend(z_u)
                        r = reg(z_u)
                        _check_finite_loss(r, "the RadReg term", epoch)
                        reg_total += float(r.detach())
                        steps += 1
                        loss = loss + radreg.every * radreg.lam * r
                    step += 1
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            sched.step()
            check_finite_weights((encoder, decoder), epoch)
            mse_hist.append(total / n)
            if reg is not None:
                reg_hist.append(reg_total / max(steps, 1))
            if epoch in wanted:
                checkpoint(epoch)
                encoder.train()
                decoder.train()
            if progress is not None:
                progress(label, epoch, epochs)
        encoder.eval()
        decoder.eval()
    return PretrainResult(encoder, decoder, tuple(mse_hist), tuple(reg_hist), tuple(saved))


def pretrain_ce(
    arch: MLPArch,
    task: ContextEncoderTask,
    x: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    seed: int,
    batch_size: int = 50,
    radreg: RadRegOptions | None = None,
    checkpoint_epochs: Sequence[int] = (),
    on_checkpoint: CheckpointFn | str | Path | None = None,
    progress: ProgressFn | None = None,
) -> PretrainResult:
    """Context Encoder pre-training of an MLP encoder and decoder on the flat inputs ``x``.

    ``checkpoint_epochs``: epochs (0 = the initialisation) at which ``on_checkpoint`` is called,
    a callback ``(epoch, encoder, decoder)`` or a folder (``<folder>/epoch<e>/*.safetensors``).
    """
    return _pretrain(
        arch,
        task,
        x,
        epochs=epochs,
        lr=lr,
        seed=seed,
        batch_size=batch_size,
        radreg=radreg,
        checkpoint_epochs=checkpoint_epochs,
        on_checkpoint=on_checkpoint,
        progress=progress,
        label="pre-training (ce)",
    )


def pretrain_mae(
    arch: ViTArch,
    task: MaskedAutoencoderTask,
    x: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    seed: int,
    batch_size: int = 50,
    radreg: RadRegOptions | None = None,
    checkpoint_epochs: Sequence[int] = (),
    on_checkpoint: CheckpointFn | str | Path | None = None,
    progress: ProgressFn | None = None,
) -> PretrainResult:
    """Masked Autoencoder pre-training of a ViT encoder and MLP decoder (see ``pretrain_ce``)."""
    return _pretrain(
        arch,
        task,
        x,
        epochs=epochs,
        lr=lr,
        seed=seed,
        batch_size=batch_size,
        radreg=radreg,
        checkpoint_epochs=checkpoint_epochs,
        on_checkpoint=on_checkpoint,
        progress=progress,
        label="pre-training (mae)",
    )


# ------------------------------------------------------------------------ evaluation and head


def mean_pretext_loss(
    task: PretextTask,
    encoder: nn.Module,
    decoder: nn.Module,
    x: torch.Tensor,
    seed: int,
    box: tuple[float, float] = (0.0, 1.0),
) -> float:
    """Mean clipped square loss on ``x`` in one batch (MAE masks seeded ``seed``), eval mode.

    The same number ``tfbound estimate`` reports when ``x`` fits in one of its batches.
    """
    encoder.eval()
    decoder.eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        pred, target = pretext_batch(task, encoder, decoder, x, gen)
        return float(clipped_square_loss(pred, target, box).mean())


def features(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The frozen encoder's features of ``x``, ``(n, d)`` float32: the one encoder pass
    (``tfbound.features.encode``, eval mode, NaN checks) in a single batch, as the samples were
    built (float32 -> float64 -> float32 is exact)."""
    from tfbound.features import encode

    x32 = torch.as_tensor(x, dtype=torch.float32)
    z = encode(encoder, x32.numpy(), batch_size=max(1, int(x32.shape[0])))
    return torch.from_numpy(z).to(torch.float32)


def fit_linear_head(z: torch.Tensor, y01: torch.Tensor, lam: float = 1e-3) -> LinearHead:
    """L2-regularised logistic regression (bias unpenalised) on raw features, LBFGS in float64.

    Minimises ``mean_i log(1 + exp(-y_i (theta . z_i + b))) + (lam / 2) ||theta||^2`` with
    ``y_i = 2 * y01_i - 1`` in {-1, +1}; the head is stored in float32.
    """
    z64 = torch.as_tensor(z).to(torch.float64)
    y = 2.0 * torch.as_tensor(y01).to(torch.float64) - 1.0
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

    with torch.enable_grad():
        for _ in range(5):
            opt.step(closure)
    head = LinearHead(d)
    with torch.no_grad():
        head.linear.weight.copy_(w.detach()[:d].to(torch.float32).reshape(1, d))
        head.linear.bias.copy_(w.detach()[d:].to(torch.float32))
    check_finite_weights((head,))
    return head.eval()


def accuracy(head: nn.Module, z: torch.Tensor, y01: torch.Tensor) -> float:
    """Fraction of ``(head(z) > 0) == y01``."""
    head.eval()
    with torch.inference_mode():
        pred = (head(z) > 0).to(torch.int64)
    return float((pred == torch.as_tensor(y01)).to(torch.float64).mean())


def _umask() -> int:
    from tfbound.io.atomic import current_umask

    return current_umask()


def save_weights(module: nn.Module, path: str | Path) -> None:
    """The module's state dict as safetensors (contiguous copies, keys as the module names them)."""
    state = {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}
    save_file(state, str(path))
    os.chmod(path, 0o666 & ~_umask())  # safetensors writes 0600; give what open() would


__all__ = [
    "TRAIN_MASK_OFFSET",
    "CheckpointFn",
    "MLPArch",
    "PretrainResult",
    "ProgressFn",
    "RadRegOptions",
    "ViTArch",
    "accuracy",
    "check_finite_weights",
    "deterministic",
    "features",
    "fit_linear_head",
    "log_spaced_epochs",
    "mean_pretext_loss",
    "pretrain_ce",
    "pretrain_mae",
    "save_checkpoints_to",
    "save_weights",
]

"""RadReg: the representation-induced Rademacher complexity as a pre-training regularizer.

Add it to the pre-training loss, on a FIXED set of ``m`` unlabeled downstream inputs ``u``::

    radreg = RadReg(n_draws=256, radius=1.0, unlabeled_size=m, seed=0)
    loss = pretext_loss + lam * radreg(encoder(u))

``RadReg`` holds ``K`` sign vectors drawn once (``training_signs(K, m, seed)``), so every step
averages over the same draws. Its value is the closed form for the linear head ball
``{z' -> theta' . z' : ||theta'||_2 <= R}`` (bound-spec section 3)::

    RadReg(Z) = (R / m) (1/K) sum_k || sum_i sigma_ki z~'_i ||_2,   z~'_i = (z~_i, c) or z~_i,

one ``K x m`` by ``m x d`` product, differentiable through the features. It equals
``rirc_linear(normalize_features(Z, normalize), R, signs=S, bias_const=c).value`` exactly.

**The scale problem.** On raw features the encoder could lower the term by shrinking them
(``z -> a z`` multiplies it by ``a``) while the head grows to compensate, which changes nothing
that matters. The features are therefore normalised first (``normalize``):

- ``"l2"`` (default): divide every feature vector by its own norm, ``z~_i = z_i / ||z_i||``: the
  complexity of the head class over feature directions, the radius tied to each feature's scale.
  (A feature vector that is exactly zero stays zero and drops out; no gradient leads there.)
- ``"rms"``: divide by the root-mean-square feature norm of the set,
  ``z~_i = z_i / sqrt((1/m) sum_j ||z_j||^2)`` (one radius for the set, ``R_eff = R / rms``). It
  keeps the relative norms, and so leaves a way out: concentrate the feature energy on a few
  inputs. A ReLU encoder pre-trained with it (``docs/radreg.md``) zeroed the features of about half
  the RadReg set and fitted the rest to the fixed signs, taking the term below its
  Khintchine-Kahane floor, while by the same measure the features of unseen inputs got *worse*.
- ``"none"``: raw features (shrinking pays; for comparisons and tests only).

With ``"l2"`` or ``"rms"`` the value is invariant under ``z -> a z`` (``a > 0``). By Jensen and
Khintchine-Kahane (``1/sqrt(2)``, Latala-Oleszkiewicz 1994) it then lies in
``[R sqrt(s/m) / sqrt(2), R sqrt(s/m)]`` with ``s = (1/m) sum ||z~'_i||^2`` fixed (``1 + c^2``), so
the encoder can lower it by at most ``1 - 1/sqrt(2)``, about 29% (about 20% for unit vectors and
large ``m``: rank one then gives ``sqrt(2/pi)``), and only by pushing the features toward low
effective rank (:func:`effective_rank`). Those limits hold for the expectation over signs: the
average over ``K`` FIXED sign vectors can be pushed somewhat lower by fitting the features to those
draws, so keep ``K`` well above ``m`` and measure on held-out inputs with fresh signs.

``bias_const``: ``None`` (default) measures the features alone; a number ``c`` appends the constant
coordinate of bound-spec section 2 in normalised units (``c = 1`` then weighs the bias direction
like the RMS feature, far more than ``c = 1`` on raw features of norm 4 does in the certificate).

``AdversarialRadReg`` keeps ``K`` adversarial heads instead, one per sign vector, updated by
projected (normalised) gradient ascent between encoder steps (gradient descent-ascent): linear heads
of norm at most ``R``, or one-hidden-layer ReLU heads of path norm ``sum_j |v_j| ||w'_j|| <= R``.
For linear heads its value never exceeds the closed form (Cauchy-Schwarz) and approaches it as the
ascent converges. For ReLU heads it is a lower estimate of that class's complexity (bound-spec
section 3: status ``diagnostic``); the class contains every linear head of norm ``R/2``, and its
complexity is at most twice the linear closed form in expectation (Talagrand's contraction).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from tfbound.measures.rirc import augment

Normalize = Literal["l2", "rms", "none"]
HeadClass = Literal["linear", "mlp"]
NORMALIZE_MODES: tuple[str, ...] = ("l2", "rms", "none")
_TINY = 1e-12


def normalize_features(features: torch.Tensor, mode: str = "l2") -> torch.Tensor:
    """Scale-free features (differentiable): see the module docstring for the modes."""
    if features.ndim != 2:
        raise ValueError(f"features must be an (m, d) matrix, got shape {tuple(features.shape)}")
    if mode == "l2":
        return features / torch.linalg.vector_norm(features, dim=1, keepdim=True).clamp_min(_TINY)
    if mode == "rms":
        mean_sq = features.pow(2).sum(dim=1).mean()
        return features / mean_sq.clamp_min(_TINY).sqrt()
    if mode == "none":
        return features
    raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {mode!r}")


def effective_rank(features: torch.Tensor, bias_const: float | None = None) -> float:
    """Entropy effective rank ``exp(-sum_j p_j log p_j)``, ``p_j = s_j / sum s`` (singular values).

    Of the uncentred (augmented) feature matrix, the one whose Gram matrix the RIRC depends on
    (Roy and Vetterli 2007). Between 1 (rank one) and ``min(m, d')``; invariant under scaling.
    """
    z = augment(features.detach(), bias_const)
    s = torch.linalg.svdvals(z)
    total = float(s.sum())
    if total == 0:
        return 0.0
    p = s[s > 0] / total
    return float(torch.exp(-(p * p.log()).sum()))


def training_signs(n_draws: int, n: int, seed: int) -> torch.Tensor:
    """The ``n_draws x n`` float64 signs RadReg trains with: ``torch.randint(0, 2)`` from a
    generator seeded by ``seed``, in row blocks of at most ``2^23`` entries (unchanged since the
    sample models were trained; the estimate's RIRC draws its own counter-based signs)."""
    gen = torch.Generator().manual_seed(int(seed))
    rows = min(n_draws, max(1, (1 << 23) // max(n, 1)))
    blocks = []
    for start in range(0, n_draws, rows):
        block = torch.empty((min(n_draws, start + rows) - start, n), dtype=torch.float64)
        blocks.append(block.random_(0, 2, generator=gen).mul_(2).sub_(1))
    return torch.cat(blocks)


def _check_args(n_draws: int, radius: float, unlabeled_size: int, normalize: str) -> None:
    if n_draws < 1:
        raise ValueError(f"n_draws must be >= 1, got {n_draws}")
    if unlabeled_size < 1:
        raise ValueError(f"unlabeled_size must be >= 1, got {unlabeled_size}")
    if not (radius > 0 and math.isfinite(radius)):
        raise ValueError(f"radius must be a positive number, got {radius}")
    if normalize not in NORMALIZE_MODES:
        raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {normalize!r}")


class _SignedSet(nn.Module):
    """The fixed sign matrix of a fixed unlabeled set, and the feature map both regularizers use."""

    signs: torch.Tensor

    def __init__(
        self,
        n_draws: int,
        radius: float,
        unlabeled_size: int,
        seed: int,
        normalize: str,
        bias_const: float | None,
    ) -> None:
        super().__init__()
        _check_args(n_draws, radius, unlabeled_size, normalize)
        if bias_const is not None and not bias_const > 0:
            raise ValueError(f"bias_const must be > 0 or None, got {bias_const}")
        self.n_draws = int(n_draws)
        self.radius = float(radius)
        self.unlabeled_size = int(unlabeled_size)
        self.seed = int(seed)
        self.normalize = normalize
        self.bias_const = None if bias_const is None else float(bias_const)
        # float64 +-1, drawn once from torch's generator (the stream training has always used)
        self.register_buffer("signs", training_signs(self.n_draws, self.unlabeled_size, seed))

    def augmented(self, features: torch.Tensor) -> torch.Tensor:
        """``z~'``: normalised, augmented with ``c`` when set, float64 (differentiable)."""
        if features.ndim != 2 or features.shape[0] != self.unlabeled_size:
            raise ValueError(
                f"expected features of the {self.unlabeled_size} fixed unlabeled inputs, "
                f"an ({self.unlabeled_size}, d) matrix; got shape {tuple(features.shape)}"
            )
        return augment(normalize_features(features, self.normalize), self.bias_const)

    def normalized(self, features: torch.Tensor) -> torch.Tensor:
        """The normalised features (before augmentation), as the regularizer sees them."""
        return normalize_features(features, self.normalize)

    def extra_repr(self) -> str:
        return (
            f"n_draws={self.n_draws}, radius={self.radius:g}, unlabeled_size="
            f"{self.unlabeled_size}, seed={self.seed}, normalize={self.normalize!r}, "
            f"bias_const={self.bias_const}"
        )


class RadReg(_SignedSet):
    """Closed-form RadReg for the linear head ball of ``radius`` (see the module docstring).

    ``forward(features)`` takes the ``(m, d)`` features of the fixed unlabeled set (rows in the
    order the signs refer to) and returns a 0-d tensor in ``features.dtype``.
    """

    def __init__(
        self,
        n_draws: int,
        radius: float,
        unlabeled_size: int,
        seed: int,
        normalize: Normalize = "l2",
        *,
        bias_const: float | None = None,
    ) -> None:
        super().__init__(n_draws, radius, unlabeled_size, seed, normalize, bias_const)

    def draw_norms(self, features: torch.Tensor) -> torch.Tensor:
        """``||sum_i sigma_ki z~'_i||`` for every draw ``k`` (float64, ``K`` values)."""
        return torch.linalg.vector_norm(self.signs @ self.augmented(features), dim=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        value = self.radius / self.unlabeled_size * self.draw_norms(features).mean()
        return value.to(features.dtype)


class AdversarialRadReg(_SignedSet):
    """RadReg by ``K`` adversarial heads, one per fixed sign vector (gradient descent-ascent).

    Call :meth:`ascend` with the detached features (``ascent_steps`` projected steps of
    normalised gradient ascent on ``(1/m) sum_i sigma_ki f_k(z~'_i)``, step ``ascent_lr * R``),
    then add ``lam * reg(features)`` to the loss: the value ``(1/K) sum_k (1/m) sum_i
    sigma_ki f_k(z~'_i)`` with the heads held fixed, differentiable through the features (at the
    heads' optimum this is the gradient of the supremum, by Danskin's theorem).

    ``head="linear"``: ``f_k(z') = theta_k . z'``, ``||theta_k|| <= R``. ``head="mlp"``:
    ``f_k(z') = sum_j v_kj relu(w_kj . z')`` with ``||w_kj|| = 1`` and ``||v_k||_1 <= R`` (the
    path-norm ball of radius ``R``, reparametrised by positive homogeneity; the output bias is a
    hidden unit reading the constant coordinate when ``bias_const`` is set).
    """

    theta: torch.Tensor
    w: torch.Tensor
    v: torch.Tensor

    def __init__(
        self,
        n_draws: int,
        radius: float,
        unlabeled_size: int,
        seed: int,
        feature_dim: int,
        normalize: Normalize = "l2",
        *,
        head: HeadClass = "linear",
        hidden: int = 16,
        bias_const: float | None = None,
        ascent_lr: float = 0.5,
        ascent_steps: int = 1,
    ) -> None:
        super().__init__(n_draws, radius, unlabeled_size, seed, normalize, bias_const)
        if head not in ("linear", "mlp"):
            raise ValueError(f"head must be 'linear' or 'mlp', got {head!r}")
        if feature_dim < 1 or hidden < 1 or ascent_steps < 0 or not ascent_lr > 0:
            raise ValueError("feature_dim, hidden >= 1, ascent_steps >= 0 and ascent_lr > 0")
        self.head = head
        self.hidden = int(hidden)
        self.ascent_lr = float(ascent_lr)
        self.ascent_steps = int(ascent_steps)
        dim = int(feature_dim) + (0 if bias_const is None else 1)
        gen = torch.Generator().manual_seed(self.seed + 1)  # apart from the signs' stream
        k = self.n_draws
        if head == "linear":
            self.register_buffer("theta", torch.randn(k, dim, generator=gen, dtype=torch.float64))
            self.register_buffer("w", torch.empty(0, dtype=torch.float64))
            self.register_buffer("v", torch.empty(0, dtype=torch.float64))
        else:
            self.register_buffer("theta", torch.empty(0, dtype=torch.float64))
            w = torch.randn(k, self.hidden, dim, generator=gen, dtype=torch.float64)
            self.register_buffer("w", w)
            self.register_buffer(
                "v", torch.randn(k, self.hidden, generator=gen, dtype=torch.float64)
            )
        self._project()

    # ------------------------------------------------------------------ the heads and their ball

    def _project(self) -> None:
        """Back into the ball: Euclidean for linear heads; unit ``w``, l1 ball for ``v`` (MLP)."""
        with torch.no_grad():
            if self.head == "linear":
                norms = torch.linalg.vector_norm(self.theta, dim=1, keepdim=True)
                self.theta.mul_((self.radius / norms.clamp_min(_TINY)).clamp(max=1.0))
            else:
                wn = torch.linalg.vector_norm(self.w, dim=2).clamp_min(_TINY)  # (K, h)
                self.w.div_(wn.unsqueeze(-1))
                self.v.copy_(_project_l1(self.v * wn, self.radius))

    def _tensors(self) -> list[torch.Tensor]:
        return [self.theta] if self.head == "linear" else [self.w, self.v]

    def _scores(self, z_aug: torch.Tensor, tensors: list[torch.Tensor]) -> torch.Tensor:
        if self.head == "linear":
            return tensors[0] @ z_aug.T
        w, v = tensors
        hidden = torch.relu(torch.einsum("khd,md->kmh", w, z_aug))
        return torch.einsum("kmh,kh->km", hidden, v)

    def head_scores(self, z_aug: torch.Tensor) -> torch.Tensor:
        """``f_k(z~'_i)`` for every head and input, ``(K, m)``."""
        return self._scores(z_aug, self._tensors())

    def per_head(self, features: torch.Tensor) -> torch.Tensor:
        """``(1/m) sum_i sigma_ki f_k(z~'_i)`` for every head ``k`` (float64, ``K`` values)."""
        return self._objective(self.augmented(features), self._tensors())

    def _objective(self, z_aug: torch.Tensor, tensors: list[torch.Tensor]) -> torch.Tensor:
        return (self.signs * self._scores(z_aug, tensors)).sum(dim=1) / self.unlabeled_size

    def ascend(self, features: torch.Tensor, steps: int | None = None) -> None:
        """``steps`` (default ``ascent_steps``) projected ascent steps on the detached features."""
        z_aug = self.augmented(features.detach())
        for _ in range(self.ascent_steps if steps is None else int(steps)):
            with torch.enable_grad():
                leaves = [t.detach().clone().requires_grad_(True) for t in self._tensors()]
                objective = self._objective(z_aug, leaves).sum()  # the heads are independent
                grads = torch.autograd.grad(objective, leaves)
            # Normalised step per head: scale-free, of length ascent_lr * R.
            sq = torch.zeros(self.n_draws, dtype=torch.float64)
            for g in grads:
                sq = sq + g.reshape(g.shape[0], -1).pow(2).sum(dim=1)
            scale = self.ascent_lr * self.radius / sq.sqrt().clamp_min(_TINY)
            with torch.no_grad():
                for t, g in zip(self._tensors(), grads, strict=True):
                    t.add_(g * scale.reshape(-1, *([1] * (g.ndim - 1))))
            self._project()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.per_head(features).mean().to(features.dtype)


def _project_l1(v: torch.Tensor, radius: float) -> torch.Tensor:
    """Euclidean projection of each row of ``v`` onto the l1 ball (Duchi et al. 2008)."""
    inside = v.abs().sum(dim=1) <= radius
    mu = v.abs().sort(dim=1, descending=True).values
    cums = mu.cumsum(dim=1) - radius
    ks = torch.arange(1, v.shape[1] + 1, dtype=v.dtype)
    cond = mu - cums / ks > 0
    rho = (cond * torch.arange(v.shape[1])).argmax(dim=1, keepdim=True)  # the last True
    tau = cums.gather(1, rho) / (rho + 1).to(v.dtype)
    projected = v.sign() * (v.abs() - tau).clamp_min(0)
    return torch.where(inside.unsqueeze(1), v, projected)


__all__ = [
    "NORMALIZE_MODES",
    "AdversarialRadReg",
    "RadReg",
    "effective_rank",
    "normalize_features",
]

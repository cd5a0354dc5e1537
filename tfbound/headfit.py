"""``tfbound fit-head``: the samples' L2 logistic head on a config's frozen features, written
atomically with its provenance record.

One encoder pass over ``downstream_train`` (``tfbound.features.encode``), then
``tfbound.training.loops.fit_linear_head`` (float64 LBFGS, the recipe of the sample models; one
implementation). The regularisation ``lam`` is a constant given on the command line (default
``1e-3``, the samples'): it is fixed before the labels are seen, and the record says so. The
head is written as ``linear.weight`` / ``linear.bias`` safetensors; the record, a JSON file with
the same stem beside it, holds the encoder's and data's digests, ``lam``, ``n`` and the head's own
digest. A file tfbound did not write (no matching record) is replaced only with ``force``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfbound.config import Config, ModuleSpec
from tfbound.errors import ConfigError, InputError
from tfbound.json_input import loads as bounded_json

#: the samples' L2 weight (tfbound.training.loops.fit_linear_head's default)
DEFAULT_LAM = 1e-3
MARKER_KEY = "written_by"
MARKER_VALUE = "tfbound fit-head"
FIXED = "fixed before the labels were seen (a command-line constant, not tuned on S)"


def record_path(head: Path) -> Path:
    """The provenance record of a head file: the same stem, ``.json``."""
    return head.with_suffix(".json")


def _digest(path: Path) -> str:
    from tfbound.io.digest import sha256_file

    return sha256_file(path) or ""


def data_digest(path: Path) -> str | None:
    """The sha256 of a data file (None for a folder: a saved dataset or an image folder)."""
    return _digest(path) if path.is_file() else None


def weights_digest(spec: ModuleSpec) -> str | None:
    """The sha256 of a module's weights: of its one file, or of the files' digests in order (a
    folder or a sharded checkpoint); None without weights."""
    if spec.weights is None:
        return None
    from tfbound.io.checkpoints import resolve_checkpoint

    files = resolve_checkpoint(spec.weights).files
    if len(files) == 1:
        return _digest(files[0])
    joint = hashlib.sha256()
    for f in files:
        joint.update(_digest(f).encode())
    return joint.hexdigest()


def read_fit_record(head: Path) -> dict[str, Any] | None:
    """The record of ``head`` when tfbound fit-head wrote it for these very weights, else None."""
    rec = record_path(head)
    if rec.is_symlink() or not rec.is_file() or not head.is_file():
        return None
    try:
        if rec.stat().st_size > 2**20:
            return None
        data = bounded_json(rec.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get(MARKER_KEY) != MARKER_VALUE:
        return None
    if data.get("head_sha256") != _digest(head):
        return None
    return data


def _check_replaceable(head: Path, force: bool) -> None:
    if force:
        return
    rec = record_path(head)
    ours = read_fit_record(head) is not None
    for path in (head, rec):
        if (path.exists() or path.is_symlink()) and not ours:
            raise InputError(
                "refused to overwrite: not written by tfbound fit-head (no matching "
                f"{rec.name}); pass --force to replace it",
                path=path,
            )


@dataclass(frozen=True)
class FitResult:
    head: Path
    record: Path
    lam: float
    n: int
    train_accuracy: float
    feature_dim: int


def fit_head(
    cfg: Config,
    *,
    lam: float = DEFAULT_LAM,
    out: Path | None = None,
    force: bool = False,
    holdout: bool = False,
) -> FitResult:
    """Fit the L2 logistic head of ``cfg`` on its frozen encoder's ``downstream_train`` features
    and write it (``out``, default the config's ``head.weights``) with its record. With
    ``holdout`` the head is fitted on ``S1`` only (the config's seeded split, bound-spec 10.1):
    ``estimate`` then certifies it on ``S2`` (``holdout_bound``)."""
    import numpy as np
    import torch
    from safetensors.torch import save

    from tfbound.features import encode
    from tfbound.io.atomic import write_bytes_atomic, write_text_atomic
    from tfbound.models.build import build_module
    from tfbound.pipeline.stages import data_loaders, probe_feature_dim
    from tfbound.training.loops import fit_linear_head

    if not (lam > 0 and np.isfinite(lam)):
        raise InputError(f"--lam must be a finite number > 0, got {lam}")
    target = out if out is not None else cfg.head.weights
    if target is None:
        raise ConfigError("'head.weights' is missing: where to write the head", path=cfg.path)
    if out is None and cfg.head.arch != "linear":
        raise ConfigError(
            f"fit-head writes a linear head; 'head.arch' is {cfg.head.arch!r} (set it to "
            "'linear' or pass --out)",
            path=cfg.path,
        )
    if not target.parent.is_dir():
        raise InputError("cannot write: the folder does not exist", path=target)
    _check_replaceable(target, force)
    encoder = build_module(cfg.encoder)
    load_lab, _ = data_loaders(cfg)
    train = load_lab(cfg.data.downstream_train)
    d = probe_feature_dim(encoder, train.x, cfg.data.downstream_train.path)
    z = encode(encoder, train.x, cfg.bound.batch_size)
    y01 = torch.from_numpy((train.y > 0).astype(np.float64))
    split: dict[str, Any] = {"fitted_on": "S"}
    rows = np.arange(z.shape[0])
    if holdout:
        from tfbound.bounds.split import split_indices

        b = cfg.bound
        rows, _ = split_indices(z.shape[0], b.split_seed, b.n1_fraction)
        split = {
            "fitted_on": "S1",
            "split_seed": b.split_seed,
            "n1_fraction": b.n1_fraction,
            "n1": int(rows.shape[0]),
        }
    head = fit_linear_head(torch.from_numpy(z[rows]), y01[rows], lam)
    with torch.inference_mode():
        scores = head(torch.from_numpy(z).to(torch.float32)).to(torch.float64).numpy()
    accuracy = float(np.mean((scores > 0) == (train.y > 0)))
    data = cfg.data.downstream_train.path
    state = {k: v.detach().contiguous().clone() for k, v in head.state_dict().items()}
    payload = save(state)
    write_bytes_atomic(target, payload)
    record = {
        MARKER_KEY: MARKER_VALUE,
        "head_sha256": hashlib.sha256(payload).hexdigest(),
        "head": "linear (linear.weight, linear.bias)",
        "recipe": "L2 logistic regression, bias unpenalised, float64 LBFGS "
        "(tfbound.training.loops.fit_linear_head)",
        "lam": lam,
        "regularisation": FIXED,
        "n": int(train.y.shape[0]),
        "positives": int(np.sum(train.y > 0)),
        "feature_dim": d,
        "train_accuracy": accuracy,
        "encoder_arch": cfg.encoder.arch,
        "encoder_sha256": weights_digest(cfg.encoder),
        "data_sha256": data_digest(data),
        "config": str(cfg.path),
        **split,
    }
    rec = record_path(target)
    write_text_atomic(rec, json.dumps(record, indent=1) + "\n")
    return FitResult(target, rec, lam, int(train.y.shape[0]), accuracy, d)


@dataclass(frozen=True)
class StochasticFitResult:
    head: Path
    record: Path
    n: int
    n2: int
    bound: float
    start_bound: float
    empirical_gibbs: float
    kl: float
    mean_train_accuracy: float
    feature_dim: int


def fit_stochastic_head(
    cfg: Config, *, out: Path | None = None, force: bool = False
) -> StochasticFitResult:
    """Fit the stochastic head ``Q = N(m~, I)`` (whitened metric of ``S1``) whose mean minimises
    its own PAC-Bayes certificate on ``S2`` (``tfbound.training.pbb``), with the metric and the
    prior rebuilt from ``S1`` by the functions the estimate uses, and write it (``out``, default
    ``bound.stochastic_head``) with its record (``kind: stochastic``)."""
    import numpy as np

    from tfbound.bounds.pbb_head import pbb_head_bound
    from tfbound.bounds.split import augment_features, split_indices
    from tfbound.features import encode
    from tfbound.io.atomic import write_bytes_atomic, write_text_atomic
    from tfbound.models.build import build_module
    from tfbound.pipeline.stages import data_loaders, probe_feature_dim
    from tfbound.stochastic_head import KIND, stochastic_head_payload
    from tfbound.training.pbb import fit_pbb_mean

    b = cfg.bound
    target = out if out is not None else b.stochastic_head
    if target is None:
        raise ConfigError(
            "'bound.stochastic_head' is missing: where to write the stochastic head (or pass "
            "--out)",
            path=cfg.path,
        )
    if target.suffix.lower() != ".safetensors":
        raise InputError("a stochastic head is written as a .safetensors file", path=target)
    if not target.parent.is_dir():
        raise InputError("cannot write: the folder does not exist", path=target)
    _check_replaceable(target, force)
    encoder = build_module(cfg.encoder)
    load_lab, _ = data_loaders(cfg)
    train = load_lab(cfg.data.downstream_train)
    d = probe_feature_dim(encoder, train.x, cfg.data.downstream_train.path)
    z = encode(encoder, train.x, b.batch_size)
    y = np.where(train.y > 0, 1.0, -1.0)
    n = int(y.shape[0])
    c = b.bias_const
    idx1, idx2 = split_indices(n, b.split_seed, b.n1_fraction)
    # S1 only: the metric and the prior, as the estimate rebuilds them
    geometry = _estimate_geometry(z, y, idx1, idx2, b)
    delta_q = b.delta_stochastic / b.encoder_candidates
    x2 = geometry.metric.whiten_features(augment_features(z[idx2], c))
    fit = fit_pbb_mean(
        x2, y[idx2], geometry.prior_directions, lam_grid=geometry.lam_grid, delta_q=delta_q
    )
    mean_aug = geometry.metric.inv_sqrt @ fit.mean_whitened  # m' = M^(-1/2) m~
    weight, bias = mean_aug[:-1], float(mean_aug[-1] * c)
    payload = stochastic_head_payload(weight, bias, geometry.raw_scale())
    # the certificate recomputed from what is written (as estimate will compute it)
    mean_back = np.concatenate([weight, [bias / c]])
    cert = pbb_head_bound(
        z, y, mean_back, bias_const=c, split_seed=b.split_seed, delta_q=delta_q,
        n1_fraction=b.n1_fraction, geometry=geometry,
    ).certificate  # fmt: skip
    accuracy = float(np.mean(y * (augment_features(z, c) @ mean_back) > 0))
    write_bytes_atomic(target, payload)
    data = cfg.data.downstream_train.path
    record = {
        MARKER_KEY: MARKER_VALUE,
        "head_sha256": hashlib.sha256(payload).hexdigest(),
        "kind": KIND,
        "head": "stochastic linear: linear.weight, linear.bias (the posterior mean, an "
        "nn.Linear head) and posterior.scale S; a draw is (w, b) = mean + S xi, xi ~ N(0, I_(d+1))",
        "posterior": "Q = N(m~, I) in the metric M = C1 + eps tr(C1)/(d+1) I of S1 (raw heads "
        "theta' = (w, b/c) ~ N(m', M^(-1)), S = diag(1, ..., 1, c) M^(-1/2))",
        "prior": "N(beta u_1, I), u_1 the tool's L2 logistic probe on S1 (prior_lam), beta on "
        "the grid 0 and 2^(k/4), k=-8..40",
        "objective": fit.objective,
        "fitted_on": "S",
        "prior_from": "S1",
        "posterior_trained_on": "S2",
        "split_seed": b.split_seed,
        "n1_fraction": b.n1_fraction,
        "n1": int(idx1.shape[0]),
        "n2": int(idx2.shape[0]),
        "metric_eps": b.metric_eps,
        "prior_lam": b.prior_lam,
        "bias_const": c,
        "delta_q": delta_q,
        "certificate_at_fit": cert.bound,
        "empirical_gibbs_s2": cert.empirical_gibbs,
        "kl": cert.kl,
        "n": n,
        "positives": int(np.sum(y > 0)),
        "feature_dim": d,
        "mean_train_accuracy": accuracy,
        "encoder_arch": cfg.encoder.arch,
        "encoder_sha256": weights_digest(cfg.encoder),
        "data_sha256": data_digest(data),
        "config": str(cfg.path),
    }
    rec = record_path(target)
    write_text_atomic(rec, json.dumps(record, indent=1) + "\n")
    return StochasticFitResult(
        target, rec, n, int(idx2.shape[0]), cert.bound, fit.start_bound, cert.empirical_gibbs,
        cert.kl, accuracy, d,
    )  # fmt: skip


__all__ = [
    "DEFAULT_LAM",
    "FIXED",
    "FitResult",
    "StochasticFitResult",
    "fit_head",
    "fit_stochastic_head",
    "read_fit_record",
    "record_path",
    "weights_digest",
]


def _estimate_geometry(z: Any, y: Any, idx1: Any, idx2: Any, b: Any) -> Any:
    """The metric and prior exactly as the streamed estimate fits them on ``S1``
    (``tfbound.pipeline.stream.prior_from_features``)."""
    from tfbound.bounds.pbb_head import geometry_of
    from tfbound.pipeline.stream import prior_from_features

    prior = prior_from_features(z, y, idx1, idx2, b)
    return geometry_of(prior.metric, prior.theta_prior, prior.lam_grid, b.bias_const)

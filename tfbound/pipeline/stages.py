"""The stages of ``estimate`` that touch modules and files: build the models, load each split
once, and the batched passes over them (features and scores, the pretext loss).

Every stage returns a frozen value; nothing here makes a ``Term`` (that is ``tfbound.bounds``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tfbound.config import ArraySource, BoundSpec, Config, ModuleSpec, PretextSpec
from tfbound.errors import DataError, first_line
from tfbound.features import EncoderPlacement, ProgressFn, input_batches
from tfbound.io.datasets import LabeledArrays, load_inputs, load_labeled
from tfbound.io.overlap import pool_overlap
from tfbound.models.build import build_module, feature_dim_of, load_head
from tfbound.models.heads import LinearHead, MLPHead
from tfbound.pretext import PretextTask, pretext_losses, pretext_task


@dataclass(frozen=True)
class Models:
    """The modules a configuration names, built once, in eval mode."""

    encoder: nn.Module
    head: LinearHead | MLPHead
    feature_dim: int
    decoder: nn.Module | None = None  # only when a pretext loss can be computed
    reference: nn.Module | None = None  # the pre-trained encoder of a fine-tuned one
    #: how the head was read, for the report's ``model.head`` (e.g. ``form``,
    #: ``output_logits``, a ``fit`` record of ``tfbound fit-head``)
    head_details: Mapping[str, object] = field(default_factory=dict)
    #: lines for the report's warnings about how the models were read (a 2-logit head, ...)
    notes: tuple[str, ...] = ()
    #: where the feature passes run (``--device``, ``--dtype``); None: the CPU float32 pass
    placement: EncoderPlacement | None = None


@dataclass(frozen=True)
class Splits:
    """Every split the estimate reads, each loaded once (None: not configured or not needed)."""

    train: LabeledArrays
    test: LabeledArrays | None
    pool: np.ndarray | None
    pretrain_train: np.ndarray | None
    pretrain_val: np.ndarray | None
    #: what reading the splits found to say (truncated texts, pool rows dropped)
    warnings: tuple[str, ...] = ()
    #: ``data.downstream_unlabeled`` of the report, when ``--drop-pool-overlap`` was given
    pool_record: Mapping[str, Any] | None = None
    #: ``data.radreg``, read (with a pool) for the disjointness check only
    radreg: np.ndarray | None = None


@dataclass(frozen=True)
class Where:
    """How a split is named in messages (``inputs 'name'``) and its file (None: in memory)."""

    name: str
    path: Path | None = None

    @classmethod
    def of(cls, source: ArraySource) -> Where:
        return cls(source.x, source.path)


@dataclass(frozen=True)
class Setup:
    """What the certificate stages read besides the models and the splits: the bound's constants,
    the pretext task, how each split is named (None: that split was not given) and the name of
    the reference encoder of a fine-tuned one. The config route and the in-memory route
    (``tfbound.api``) both make one and call the same stages."""

    bound: BoundSpec
    pretext: PretextSpec | None
    train: Where
    test: Where | None = None
    pool: Where | None = None
    pretrain_train: Where | None = None
    pretrain_val: Where | None = None
    radreg: Where | None = None
    reference_name: str | None = None
    #: drop the pool rows found in another split (``--drop-pool-overlap``) instead of refusing
    drop_pool_overlap: bool = False


def setup_of(cfg: Config, *, drop_pool_overlap: bool = False) -> Setup:
    """The configuration's setup: its files name the splits."""
    d = cfg.data

    def where(source: ArraySource | None) -> Where | None:
        return None if source is None else Where.of(source)

    return Setup(
        bound=cfg.bound,
        pretext=cfg.pretext,
        train=Where.of(d.downstream_train),
        test=where(d.downstream_test),
        pool=where(d.downstream_unlabeled),
        pretrain_train=where(d.pretrain_train),
        pretrain_val=where(d.pretrain_val),
        radreg=where(d.radreg),
        reference_name=None if cfg.encoder.reference is None else str(cfg.encoder.reference),
        drop_pool_overlap=drop_pool_overlap,
    )


@dataclass(frozen=True)
class PretextPass:
    """The mean clipped pretext loss over ``n`` inputs with ``output_dim`` targets each."""

    mean_loss: float
    n: int
    output_dim: int


def data_reader(cfg: Config) -> Any:
    """The ``tfbound.io.sources.DataReader`` of a configuration: every data format, texts
    tokenized by the encoder's tokenizer (``encoder.tokenizer``, or the one beside its weights),
    loaded on the first text split."""
    from tfbound.io.sources import DataReader

    def text() -> Any:
        from tfbound.io.text import TextData

        return TextData.from_spec(cfg.encoder)

    # this module's numeric readers, looked up when called
    return DataReader(text, labeled=lambda s: load_labeled(s), inputs=lambda s: load_inputs(s))


def data_loaders(
    cfg: Config,
) -> tuple[Callable[[ArraySource], LabeledArrays], Callable[[ArraySource], np.ndarray]]:
    """Labeled and unlabeled loaders of every data format (``tfbound.io.sources``): numeric
    arrays, tables, saved datasets, image folders, and texts tokenized for the encoder.

    A labeled split of fewer than 2 examples is a ``DataError`` whichever loader reads it: no
    bound is computed from it."""
    reader = data_reader(cfg)
    load_lab, load_in = reader.load_labeled, reader.load_inputs

    def checked(source: ArraySource) -> LabeledArrays:
        split = load_lab(source)
        n = len(split.y)
        if n < 2:
            raise DataError(
                f"a labeled split needs at least 2 examples; '{source.x}' has {n}",
                path=source.path,
            )
        return split

    return checked, load_in


def build_models(cfg: Config, train: LabeledArrays) -> Models:
    """Encoder, head (its input size checked against the features), and, when configured, the
    decoder of the pretext task and the reference encoder of a fine-tuned one."""
    encoder = build_module(cfg.encoder)
    d = probe_feature_dim(encoder, train.x, cfg.data.downstream_train.path)
    loaded = load_head(cfg.head, d)
    head_details = dict(loaded.details)
    fit = fit_record_of(cfg.head)
    notes = list(loaded.notes)
    if fit is not None:
        if fit.get("fitted_on") == "S1" and not _holdout_matches(fit, cfg, train):
            fit = {**fit, "fitted_on": "S1 of another split or data (not certified on S2)"}
            notes.append(
                "the head's fit-head record says it was fitted on S1 of another split or data "
                "set: no hold-out certificate"
            )
        head_details["fit"] = fit
    decoder = None
    if cfg.pretext is not None and cfg.decoder is not None and cfg.data.pretrain_train is not None:
        decoder = build_module(cfg.decoder)
    reference = None
    if cfg.encoder.reference is not None:
        reference = build_module(
            replace(cfg.encoder, weights=cfg.encoder.reference, reference=None)
        )
    return Models(
        encoder, loaded.head, d, decoder, reference, head_details, _model_notes(cfg, tuple(notes))
    )


def holdout_split(models: Models) -> tuple[int, float] | None:
    """``(split_seed, n1_fraction)`` when the head was fitted on ``S1`` only of this very
    configuration's split and data (a checked ``tfbound fit-head --holdout`` record), else None."""
    fit = models.head_details.get("fit")
    if not isinstance(fit, Mapping) or fit.get("fitted_on") != "S1":
        return None
    return int(fit["split_seed"]), float(fit["n1_fraction"])


def _holdout_matches(fit: Mapping[str, Any], cfg: Config, train: LabeledArrays) -> bool:
    """The record's split and data are this configuration's: same seed, fraction, n and digest."""
    from tfbound.headfit import data_digest

    b = cfg.bound
    return (
        fit.get("split_seed") == b.split_seed
        and fit.get("n1_fraction") == b.n1_fraction
        and fit.get("n") == int(train.y.shape[0])
        and fit.get("data_sha256") is not None
        and fit.get("data_sha256") == data_digest(cfg.data.downstream_train.path)
    )


def fit_record_of(spec: ModuleSpec) -> dict[str, object] | None:
    """The ``tfbound fit-head`` record beside the head's weights, when it is one and describes
    these very weights (its ``head_sha256``); None otherwise."""
    if spec.weights is None or not spec.weights.is_file():
        return None
    from tfbound.headfit import read_fit_record

    return read_fit_record(spec.weights)


def _model_notes(cfg: Config, head_notes: tuple[str, ...]) -> tuple[str, ...]:
    notes = list(head_notes)
    if cfg.encoder.arch == "hf":
        notes.append(
            "a Hugging Face encoder (arch: hf): its capacity numbers are the transformer proxies "
            "and per-head norms (and the feature norm where a final LayerNorm bounds it); the "
            "certificates on the head (sections 2 and 10) hold for its frozen features"
        )
    return tuple(notes)


def probe_feature_dim(encoder: nn.Module, x: np.ndarray, path: Path | None) -> int:
    """The encoder's feature dimension on the first input; an encoder that cannot read the
    inputs is a ``DataError`` naming their shape."""
    first = torch.from_numpy(np.asarray(x[:1], dtype=np.float32))
    try:
        with torch.inference_mode():
            return feature_dim_of(encoder, first)
    except RuntimeError as exc:
        raise DataError(
            f"the encoder cannot read these inputs (shape {tuple(x.shape[1:])}): {first_line(exc)}",
            path=path,
        ) from exc


def load_splits(
    cfg: Config, train: LabeledArrays, *, need_pool: bool, need_pretrain: bool
) -> Splits:
    """The test split, the pool and the pre-training inputs, each read once (any format)."""
    load_lab, load_in = data_loaders(cfg)
    d = cfg.data
    test = load_lab(d.downstream_test) if d.downstream_test else None
    pool = None
    if need_pool and d.downstream_unlabeled is not None:
        pool = load_in(d.downstream_unlabeled)
    pre_tr = pre_va = None
    if need_pretrain or pool is not None:
        pre_tr = None if d.pretrain_train is None else load_in(d.pretrain_train)
        pre_va = None if d.pretrain_val is None else load_in(d.pretrain_val)
    warnings = []
    named: list[tuple[str, Any]] = [("downstream_train", train.x)]
    if test is not None:
        named.append(("downstream_test", test.x))
    if pool is not None:
        named.append(("downstream_unlabeled", pool))
    for name, x in named:
        cut = getattr(x, "n_truncated", 0)
        if cut:
            warnings.append(
                f"{cut} of {x.shape[0]} texts of {name} were truncated to the encoder's "
                f"max_length of {x.max_length} tokens"
            )
    radreg = None if pool is None or d.radreg is None else load_in(d.radreg)
    return Splits(train, test, pool, pre_tr, pre_va, warnings=tuple(warnings), radreg=radreg)


def checked_pool(splits: Splits, setup: Setup) -> Splits:
    """The pool after the disjointness check (bound-spec 10.3): a pool example equal to an
    example of the labeled, test or pre-training split (texts after normalisation, numeric rows
    and images after their transform by value) is a ``DataError`` naming the split, or, with
    ``setup.drop_pool_overlap``, dropped: the splits then carry the count (``pool_record``) and a
    warning."""
    pool = splits.pool
    if pool is None or setup.pool is None:
        return splits
    others: list[tuple[str, Any]] = [
        (_named("the labeled split data.downstream_train", setup.train), splits.train.x)
    ]
    if splits.test is not None:
        others.append((_named("the test split data.downstream_test", setup.test), splits.test.x))
    for label, x, where in (
        ("the pre-training split data.pretrain_train", splits.pretrain_train, setup.pretrain_train),
        ("the pre-training split data.pretrain_val", splits.pretrain_val, setup.pretrain_val),
        ("the RadReg set data.radreg", splits.radreg, setup.radreg),
    ):
        if x is not None:
            others.append((_named(label, where), x))
    overlap = pool_overlap(pool, others)
    m = int(pool.shape[0])
    if overlap.count and not setup.drop_pool_overlap:
        name, count, (i, r) = overlap.per_split[0]
        raise DataError(
            f"the unlabeled pool shares {count} example(s) with {name} (first: pool row {i} "
            f"equals its row {r}); the pool must be disjoint from the labeled, test and "
            "pre-training data: remove them, or pass --drop-pool-overlap to drop them",
            path=setup.pool.path,
        )
    if not setup.drop_pool_overlap:
        return splits
    if overlap.count == m:
        raise DataError(
            f"every one of the {m} pool examples is in another split: no pool is left",
            path=setup.pool.path,
        )
    warnings = list(splits.warnings)
    if overlap.count:
        keep = np.setdiff1d(np.arange(m), np.asarray(overlap.pool_rows, dtype=np.int64))
        pool = _subset(pool, keep)
        shown = "; ".join(f"{c} with {name}" for name, c, _ in overlap.per_split)
        warnings.append(
            f"--drop-pool-overlap: dropped {overlap.count} of the {m} pool examples found in "
            f"another split ({shown}); the disagreement certificate uses the other "
            f"{m - overlap.count}"
        )
    record = {"m_pool": int(pool.shape[0]), "dropped_overlap": overlap.count}
    return replace(splits, pool=pool, warnings=tuple(warnings), pool_record=record)


def _named(label: str, where: Where | None) -> str:
    return label if where is None else f"{label} (x: '{where.name[:60]}')"


def _subset(x: Any, keep: np.ndarray) -> Any:
    subset = getattr(x, "subset", None)
    if callable(subset):
        return subset(keep)
    if hasattr(x, "dataset") and hasattr(x, "row"):  # DatasetInputs of the in-memory route
        return np.stack([x.row(int(i)) for i in keep])
    return np.asarray(x[keep])  # rows only (a large file is read by rows, not whole)


@torch.inference_mode()
def pretext_pass(
    task: PretextTask,
    models: Models,
    x: np.ndarray,
    where: Where,
    spec: PretextSpec,
    seed: int,
    batch_size: int,
    label: str,
    progress: ProgressFn | None,
) -> PretextPass:
    """The mean clipped pretext loss of encoder + decoder over ``x`` (masks drawn from ``seed``)."""
    assert models.decoder is not None
    gen = torch.Generator().manual_seed(seed)
    total, n, out_dim = 0.0, 0, 0
    for batch in input_batches(
        x, batch_size, what=f"inputs '{where.name}'", path=where.path, task=label, progress=progress
    ):
        losses, target_dim = pretext_losses(
            task, models.encoder, models.decoder, batch, spec.box, gen, path=where.path
        )
        total += float(losses.to(torch.float64).sum())
        n += batch.shape[0]
        out_dim = target_dim
    return PretextPass(total / n, n, out_dim)


def masked_sum_sq(task: PretextTask, x: np.ndarray, bias_const: float) -> float:
    """``sum_i ||x~'_i||^2`` over the Context Encoder's masked inputs with the constant ``c``."""
    from tfbound.measures.network import sum_sq_with_constant
    from tfbound.pretext import ContextEncoderTask

    assert isinstance(task, ContextEncoderTask)
    s_x = 0.0
    for start in range(0, x.shape[0], 4096):
        batch = torch.from_numpy(np.asarray(x[start : start + 4096], dtype=np.float32))
        masked, _ = task.corrupt(batch)
        s_x += sum_sq_with_constant(masked.to(torch.float64).numpy(), bias_const)
    return s_x


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def task_of(cfg: Config | Setup) -> PretextTask | None:
    """The configured pretext task, or None."""
    return None if cfg.pretext is None else pretext_task(cfg.pretext)


@contextmanager
def phase(progress: ProgressFn | None, task: str) -> Iterator[None]:
    """Report a phase that has no natural count as 0 of 1, then 1 of 1 (its elapsed time shows)."""
    if progress is not None:
        progress(task, 0, 1)
    yield
    if progress is not None:
        progress(task, 1, 1)

"""The in-memory route of ``estimate``: modules, tensors, arrays or ``Dataset``s in, the same
``Setup``, ``Models``, ``Splits`` and ``Record`` as the config route out (then the one code path,
:func:`tfbound.pipeline.run.estimate_prepared`).

Nothing here makes a ``Term``. The caller's modules are used as they are (never copied or
changed), in eval mode for the call: :func:`eval_modes` restores every submodule's mode after.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tfbound.config import PretextSpec, _bound_spec, _pretext_spec
from tfbound.errors import DataError, InputError, UsageError
from tfbound.io.datasets import INPUT_DTYPES, LabeledArrays, binary_labels
from tfbound.models.heads import LinearHead, MLPHead
from tfbound.models.mlp import ACTIVATIONS
from tfbound.pipeline.run import Record
from tfbound.pipeline.stages import Models, Setup, Splits, Where, probe_feature_dim

#: what a ConfigError of an in-memory call names in place of a file
CALLER = Path("tfbound.estimate()")
#: the keys of ``pretext=`` that are not the config's ``pretext:`` section
PRETEXT_INPUTS = ("decoder", "train", "val")


@contextmanager
def eval_modes(*modules: nn.Module | None) -> Iterator[None]:
    """Every module (and submodule) in eval mode inside; each one's own mode restored after."""
    saved = [(m, m.training) for top in modules if top is not None for m in top.modules()]
    try:
        for top in modules:
            if top is not None:
                top.eval()
        yield
    finally:
        for m, training in saved:
            m.training = training


class DatasetInputs:
    """A map-style ``Dataset`` read as an ``(n, ...)`` float32 array: rows are fetched when a
    slice is taken (a batched pass reads ``batch_size`` items at a time); ``np.asarray`` reads
    all of them (the MLP capacity terms and the pool's disjointness check do)."""

    def __init__(self, dataset: Any, name: str) -> None:
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise UsageError(
                f"'{name}': an iterable-style dataset cannot be read twice in the same order; "
                "pass a map-style Dataset (with __len__ and __getitem__) or arrays"
            )
        self.dataset = dataset
        self.name = name
        n = len(dataset)
        if n == 0:
            raise DataError(f"inputs '{name}' are empty")
        first = self.row(0)
        self.shape: tuple[int, ...] = (n, *first.shape)
        self.dtype = np.dtype(np.float32)
        self.ndim = len(self.shape)

    def row(self, i: int) -> np.ndarray:
        item = self.dataset[i]
        x = item[0] if isinstance(item, tuple | list) else item
        return _numpy(x, self.name).astype(np.float32, copy=False)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice):
            raise TypeError("DatasetInputs reads slices of rows")
        rows = [self.row(i) for i in range(*key.indices(self.shape[0]))]
        return np.stack(rows) if rows else np.zeros((0, *self.shape[1:]), np.float32)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[0 : self.shape[0]]
        return out if dtype is None else out.astype(dtype)


def _numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"'{name}': cannot read {type(x).__name__} as an array") from exc


def _dataset_of(obj: Any) -> Any | None:
    """The map-style dataset behind a ``DataLoader`` or a ``Dataset``, or None for arrays."""
    from torch.utils.data import DataLoader, Dataset

    if isinstance(obj, DataLoader):
        return obj.dataset
    if isinstance(obj, Dataset):
        return obj
    return None


def inputs(obj: Any, name: str) -> np.ndarray:
    """Unlabeled inputs: an array or tensor (read as it is), or a ``Dataset`` / ``DataLoader``
    (items ``x`` or ``(x, ...)``, read lazily)."""
    dataset = _dataset_of(obj)
    if dataset is not None:
        return DatasetInputs(dataset, name)  # type: ignore[return-value]
    x = _numpy(obj, name)
    if x.ndim == 0 or x.shape[0] == 0:
        raise DataError(f"inputs '{name}' are empty (shape {x.shape})")
    if x.dtype.name not in INPUT_DTYPES:
        raise DataError(
            f"inputs '{name}' have dtype {x.dtype}; tfbound reads float32 or float64 inputs"
        )
    return x


def labeled(obj: Any, name: str) -> LabeledArrays:
    """A labeled split: ``(x, y)`` arrays or tensors, or a ``Dataset`` / ``DataLoader`` of
    ``(x, y)`` items (the labels are read in one pass; the inputs lazily)."""
    dataset = _dataset_of(obj)
    if dataset is not None:
        x = inputs(dataset, name)
        y_raw = np.asarray([float(_numpy(dataset[i][1], name)) for i in range(x.shape[0])])
    elif isinstance(obj, tuple | list) and len(obj) == 2:
        x, y_raw = inputs(obj[0], name), _numpy(obj[1], name).reshape(-1)
    else:
        raise UsageError(f"'{name}' must be (x, y) or a Dataset / DataLoader of (x, y) items")
    if x.shape[0] < 2:
        raise DataError(f"a labeled split needs at least 2 examples; '{name}' has {x.shape[0]}")
    return LabeledArrays(x, binary_labels(y_raw, x.shape[0], f"{name}.y", None))


def head_of(head: nn.Module, feature_dim: int) -> LinearHead | MLPHead:
    """tfbound's head for ``head``: a ``LinearHead`` or ``MLPHead`` as it is; an
    ``nn.Linear(d, 1)`` or ``nn.Sequential(Linear(d, h), activation, Linear(h, 1))`` read into
    one (a copy of its weights; the caller's module is not changed)."""
    out: LinearHead | MLPHead
    if isinstance(head, LinearHead | MLPHead):
        out = head
    elif isinstance(head, nn.Linear) and head.out_features == 1:
        out = LinearHead(head.in_features)
        _copy(out.linear, head)
    elif (
        isinstance(head, nn.Sequential)
        and len(head) == 3
        and isinstance(head[0], nn.Linear)
        and isinstance(head[2], nn.Linear)
        and head[2].out_features == 1
        and (act := _activation_name(head[1])) is not None
    ):
        out = MLPHead(head[0].in_features, head[0].out_features, act)
        _copy(out.fc1, head[0])
        _copy(out.fc2, head[2])
    else:
        raise UsageError(
            f"a head must be nn.Linear(d, 1), tfbound's LinearHead / MLPHead, or "
            f"nn.Sequential(Linear(d, h), activation, Linear(h, 1)); got {type(head).__name__}"
        )
    if out.feature_dim != feature_dim:
        raise InputError(
            f"feature dimension mismatch: the encoder gives {feature_dim} features, "
            f"the head expects {out.feature_dim}"
        )
    return out.eval()


def _activation_name(module: nn.Module) -> str | None:
    for name, kind in ACTIVATIONS.items():
        if type(module) is kind and (name != "leaky_relu" or module.negative_slope == 0.01):
            return name
    return None


def _copy(dst: nn.Linear, src: nn.Linear) -> None:
    with torch.no_grad():
        dst.weight.copy_(src.weight.detach().to(dst.weight.dtype).cpu())
        if src.bias is None:
            dst.bias.zero_()
        else:
            dst.bias.copy_(src.bias.detach().to(dst.bias.dtype).cpu())


@dataclass(frozen=True)
class Pretext:
    """``pretext=`` of an in-memory estimate: the config's ``pretext:`` section (``kind``,
    ``box``, ``seed`` and ``image_shape`` + ``block`` or ``mask_ratio``), the decoder, and the
    pre-training inputs (``train``, and ``val`` for the held-out gap)."""

    spec: PretextSpec
    decoder: nn.Module | None
    train: np.ndarray | None
    val: np.ndarray | None


def pretext_of(raw: Mapping[str, Any] | None) -> Pretext | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise UsageError("pretext= must be a mapping like the config's 'pretext:' section")
    section = {k: v for k, v in raw.items() if k not in PRETEXT_INPUTS}
    for key in ("box", "image_shape", "block"):
        if isinstance(section.get(key), tuple):
            section[key] = list(section[key])
    spec = _pretext_spec(section, CALLER)
    decoder = raw.get("decoder")
    if decoder is not None and not isinstance(decoder, nn.Module):
        raise UsageError("pretext['decoder'] must be an nn.Module")
    train = None if raw.get("train") is None else inputs(raw["train"], "pretext.train")
    val = None if raw.get("val") is None else inputs(raw["val"], "pretext.val")
    if train is not None and decoder is None:
        raise UsageError("pre-training inputs (pretext['train']) need pretext['decoder']")
    return Pretext(spec, decoder, train, val)


def prepare(
    *,
    encoder: nn.Module,
    head: nn.Module,
    train: Any,
    test: Any = None,
    pool: Any = None,
    pretext: Mapping[str, Any] | None = None,
    reference: nn.Module | None = None,
    bound_options: Mapping[str, Any] | None = None,
) -> tuple[Setup, Models, Splits, Record]:
    """Setup, models, splits and record of an in-memory estimate (call inside
    :func:`eval_modes` of the modules)."""
    if not isinstance(encoder, nn.Module) or not isinstance(head, nn.Module):
        raise UsageError("encoder= and head= must be torch.nn.Module objects")
    bound = _bound_spec(dict(bound_options or {}), CALLER)
    pre = pretext_of(pretext)
    train_split = labeled(train, "train")
    test_split = None if test is None else labeled(test, "test")
    d = probe_feature_dim(encoder, train_split.x, None)
    tf_head = head_of(head, d)
    pool_x = None if pool is None else inputs(pool, "pool")  # every head (disagreement)
    decoder = None if pre is None or pre.train is None else pre.decoder
    models = Models(encoder, tf_head, d, decoder, reference)
    pre_tr = None if pre is None else pre.train
    pre_va = None if pre is None else pre.val
    splits = Splits(train_split, test_split, pool_x, pre_tr, pre_va)
    setup = Setup(
        bound=bound,
        pretext=None if pre is None else pre.spec,
        train=Where("train"),
        test=None if test is None else Where("test"),
        pool=None if pool is None else Where("pool"),
        pretrain_train=None if pre_tr is None else Where("pretext.train"),
        pretrain_val=None if pre_va is None else Where("pretext.val"),
        reference_name=None if reference is None else "the reference module",
    )
    record = _record(setup, models, head, splits, pretext=pre)
    return setup, models, splits, record


def _record(
    setup: Setup, models: Models, head: nn.Module, splits: Splits, *, pretext: Pretext | None
) -> Record:
    """In memory: no paths; the modules' and arrays' SHA-256 where they can be hashed."""
    config: dict[str, Any] = {"source": "memory", "bound": setup.bound.to_dict()}
    if pretext is not None:
        config["pretext"] = pretext.spec.to_dict()
    if models.reference is not None:
        config["reference"] = {"sha256": module_sha256(models.reference)}
    data: dict[str, dict[str, Any]] = {"downstream_train": _split_record(splits.train)}
    if splits.test is not None:
        data["downstream_test"] = _split_record(splits.test)
    enc_digest = module_sha256(models.encoder)
    return Record(
        config=config,
        encoder={"arch": "module", "class": type(models.encoder).__name__, "sha256": enc_digest},
        head={"arch": "module", "class": type(head).__name__, "sha256": module_sha256(head)},
        data=data,
        encoder_sha256=lambda: enc_digest,
    )


def _split_record(split: LabeledArrays) -> dict[str, Any]:
    if isinstance(split.x, DatasetInputs):
        return {"source": "memory", "dataset": type(split.x.dataset).__name__, "sha256": None}
    return {"source": "memory", "sha256": arrays_sha256(split.x, split.y)}


def arrays_sha256(*arrays: np.ndarray) -> str:
    """SHA-256 over each array's dtype, shape and bytes (read in row chunks)."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(f"{a.dtype.str}{tuple(a.shape)}".encode())
        for start in range(0, max(a.shape[0], 1), 4096):
            h.update(np.ascontiguousarray(a[start : start + 4096]).tobytes())
    return h.hexdigest()


def module_sha256(module: nn.Module) -> str:
    """SHA-256 over a module's state dict: each tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()

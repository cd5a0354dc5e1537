"""Per-layer norms of a checkpoint or module: the library behind ``tfbound inspect``.

``inspect_state_dict`` (tensors in memory, no architecture), ``inspect_module`` (an
``nn.Module``: conv geometry, heads and BatchNorm folding known), ``inspect_safetensors``
(streamed tensor by tensor from a ``.safetensors`` file, a sharded ``*.index.json`` or a folder),
``inspect_torch_state_dict`` (a weights-only ``.pt``) and ``inspect_checkpoint`` (by file type).

Every parameter is either in a row (``layers``, ``heads``) or in ``skipped`` with its reason.
Nothing here prints; ``tfbound.render.inspect_render`` formats an ``InspectResult``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import sys
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from tfbound.adapters import (
    CONV,
    LINEAR,
    ComputeOptions,
    HeadRow,
    LayerRow,
    Plan,
    Skipped,
    TensorInfo,
    batchnorm_inputs,
    compute_attention,
    compute_layer,
    describe_modules,
    dtype_name,
    plan_tensors,
)
from tfbound.errors import CheckpointError, InputError, UsageError
from tfbound.features import ProgressFn
from tfbound.io.checkpoints import (
    SafetensorsReader,
    load_torch_state_dict,
    open_safetensors,
    resolve_checkpoint,
)
from tfbound.json_input import loads as bounded_json
from tfbound.measures.norms import NormValue, SpectralMode, weakest_status

PathLike = str | os.PathLike[str]
TensorsIn = Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]
ReferenceIn = Mapping[str, torch.Tensor] | PathLike | nn.Module | None

SPECTRAL_MODES = ("exact", "estimate")
_HEADS_KEYS = ("num_attention_heads", "num_heads", "n_head", "n_heads", "encoder_attention_heads")


@dataclass(frozen=True)
class InspectTotals:
    """Totals over the rows. ``spectral_norm_product`` multiplies the linear and conv rows only
    (a Lipschitz constant only for a plain chain of them); its status is the weakest of theirs."""

    n_tensors: int
    n_params: int  # floating-point parameters in the checkpoint
    n_params_analysed: int  # of those, read by some row
    n_params_skipped: int
    n_layers: int
    n_head_rows: int
    frobenius_norm_sq_total: float  # sum over layer rows of frobenius_norm^2
    spectral_norm_product: NormValue | None
    spectral_norm_product_factors: int
    distance_to_reference_sq_total: float | None  # sum over layer rows of distance^2


@dataclass(frozen=True)
class InspectResult:
    """Rows of norms, per-head attention rows, skipped parameters, notes and totals."""

    source: str
    reference: str | None
    spectral: str
    layers: tuple[LayerRow, ...]
    heads: tuple[HeadRow, ...]
    skipped: tuple[Skipped, ...]
    notes: tuple[str, ...]
    totals: InspectTotals


# ---------------------------------------------------------------------------------------------
# Tensor sources: where tensors come from, one at a time


class TensorSource(Protocol):
    description: str

    def infos(self) -> list[TensorInfo]: ...

    def get(self, name: str) -> torch.Tensor: ...

    def has(self, name: str) -> bool: ...


def _natural_key(name: str) -> list[object]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


class _MappingSource:
    def __init__(self, tensors: Mapping[str, torch.Tensor], description: str) -> None:
        for name, t in tensors.items():
            if not isinstance(t, torch.Tensor):
                raise InputError(f"{name} is a {type(t).__name__}, not a tensor")
        self._tensors = tensors
        self.description = description

    def infos(self) -> list[TensorInfo]:
        return [
            TensorInfo(name, tuple(int(s) for s in t.shape), dtype_name(t.dtype))
            for name, t in self._tensors.items()
        ]

    def get(self, name: str) -> torch.Tensor:
        return self._tensors[name].detach()

    def has(self, name: str) -> bool:
        return name in self._tensors


class _SafetensorsSource:
    """Tensors of a safetensors checkpoint (file, index or folder), read one at a time."""

    def __init__(self, reader: SafetensorsReader, description: str) -> None:
        self.description = description
        self._reader = reader
        self._infos = sorted(
            (TensorInfo(name, shape, dtype_name(dtype)) for name, shape, dtype in reader.entries()),
            key=lambda t: _natural_key(t.name),
        )

    def infos(self) -> list[TensorInfo]:
        return list(self._infos)

    def get(self, name: str) -> torch.Tensor:
        return self._reader.get(name)

    def has(self, name: str) -> bool:
        return self._reader.has(name)


def _heads_from_config(folder: Path) -> int | None:
    config = folder / "config.json"
    if not config.is_file():
        return None
    try:
        data = bounded_json(config.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    for key in _HEADS_KEYS:
        value = data.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


@contextlib.contextmanager
def _open_reference(reference: ReferenceIn) -> Iterator[TensorSource | None]:
    if reference is None:
        yield None
    elif isinstance(reference, nn.Module):
        yield _MappingSource(reference.state_dict(), f"module {type(reference).__name__}")
    elif isinstance(reference, str | os.PathLike):
        files = resolve_checkpoint(reference)
        if files.kind == "torch":
            yield _MappingSource(load_torch_state_dict(files.path), str(reference))
        else:
            with open_safetensors(files) as reader:
                yield _SafetensorsSource(reader, str(reference))
    elif isinstance(reference, Mapping):
        yield _MappingSource(reference, "reference state dict")
    else:
        raise InputError(f"reference must be a mapping, a path or a module, not {type(reference)}")


# ---------------------------------------------------------------------------------------------
# The computation


def _check_options(spectral: str) -> None:
    if spectral not in SPECTRAL_MODES:
        raise UsageError(f"spectral must be one of {SPECTRAL_MODES}, not {spectral!r}")


def _strict_check(plan: Plan) -> None:
    problems = [f"{s.name}: {s.reason}" for s in plan.skipped]
    problems += [n for n in plan.notes if "per-head norms not computed" in n]
    if problems:
        listed = "; ".join(problems[:5]) + ("; ..." if len(problems) > 5 else "")
        raise InputError(f"strict: {len(problems)} item(s) not analysed: {listed}")


def _totals(
    infos: list[TensorInfo], plan: Plan, rows: list[LayerRow], heads: list[HeadRow], has_ref: bool
) -> InspectTotals:
    numel = {t.name: t.numel for t in infos if t.is_floating}
    claimed = {p for lp in plan.layers for p in lp.params} | {
        p for ap in plan.attention for p in ap.params
    }
    factors = [r.spectral_norm for r in rows if r.kind in (LINEAR, CONV) and r.spectral_norm]
    product = None
    if factors:
        value = math.prod(f.value for f in factors)
        status = weakest_status(*(f.status for f in factors))
        product = NormValue(value, status, f"product over {len(factors)} linear/conv rows")
    dist_sq = None
    shared = [r.distance_to_reference for r in rows if r.distance_to_reference is not None]
    if has_ref and shared:  # no layer in common with the reference: n/a, not 0
        dist_sq = sum(d.value**2 for d in shared)
    return InspectTotals(
        n_tensors=len(infos),
        n_params=sum(numel.values()),
        n_params_analysed=sum(numel.get(p, 0) for p in claimed),
        n_params_skipped=sum(numel.get(s.name, 0) for s in plan.skipped),
        n_layers=len(rows),
        n_head_rows=len(heads),
        frobenius_norm_sq_total=sum(r.frobenius_norm.value**2 for r in rows if r.frobenius_norm),
        spectral_norm_product=product,
        spectral_norm_product_factors=len(factors),
        distance_to_reference_sq_total=dist_sq,
    )


class _UnitCache:
    """The tensors of one work unit, each read at most once; dropped with the unit."""

    def __init__(self, source: TensorSource, reference: TensorSource | None) -> None:
        self._source, self._reference = source, reference
        self._loaded: dict[str, torch.Tensor] = {}
        self._ref_loaded: dict[str, torch.Tensor | None] = {}

    def fetch(self, name: str) -> torch.Tensor:
        if name not in self._loaded:
            self._loaded[name] = self._source.get(name)
        return self._loaded[name]

    def fetch_reference(self, name: str) -> torch.Tensor | None:
        ref = self._reference
        if name not in self._ref_loaded:
            self._ref_loaded[name] = ref.get(name) if ref is not None and ref.has(name) else None
        return self._ref_loaded[name]


#: ``progress(task, done, total)``, called after every work unit.


def _run(
    source: TensorSource,
    plan: Plan,
    reference: TensorSource | None,
    options: ComputeOptions,
    strict: bool,
    extra_notes: Iterable[str] = (),
    progress: ProgressFn | None = None,
) -> InspectResult:
    if strict:
        _strict_check(plan)
    infos = source.infos()
    rows: dict[int, LayerRow] = {}
    position = {id(lp): i for i, lp in enumerate(plan.layers)}
    head_rows: list[HeadRow] = []
    units = plan.units()
    for done, unit in enumerate(units, 1):
        cache = _UnitCache(source, reference)
        fetch_ref = cache.fetch_reference if reference is not None else None
        for lp in unit.layers:
            rows[position[id(lp)]] = compute_layer(lp, cache.fetch, fetch_ref, options)
        for ap in unit.attention:
            head_rows.extend(compute_attention(ap, cache.fetch))
        del cache, fetch_ref  # release the unit's tensors before the next unit is read
        if progress is not None:
            progress(f"norms ({source.description})", done, len(units))
    ordered = [rows[i] for i in range(len(plan.layers))]
    notes = (*plan.notes, *extra_notes)
    if reference is not None and not any(r.distance_to_reference for r in ordered):
        notes = (*notes, "the reference shares no layer (name and shape) with the checkpoint: "
                 "no distance")  # fmt: skip
    return InspectResult(
        source=source.description,
        reference=None if reference is None else reference.description,
        spectral=options.spectral,
        layers=tuple(ordered),
        heads=tuple(head_rows),
        skipped=plan.skipped,
        notes=tuple(notes),
        totals=_totals(infos, plan, ordered, head_rows, reference is not None),
    )


def _as_mapping(tensors: TensorsIn) -> Mapping[str, torch.Tensor]:
    if isinstance(tensors, Mapping):
        return tensors
    out: dict[str, torch.Tensor] = {}
    for item in tensors:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
            raise InputError("tensors must be a mapping or an iterable of (name, tensor) pairs")
        if item[0] in out:
            raise InputError(f"tensor {item[0]} appears twice")
        out[item[0]] = item[1]
    return out


def inspect_state_dict(
    tensors: TensorsIn,
    *,
    reference: ReferenceIn = None,
    heads: int | None = None,
    strict: bool = False,
    spectral: SpectralMode = "exact",
    progress: ProgressFn | None = None,
    source: str = "state dict",
) -> InspectResult:
    """Norms of every layer of a bare state dict (names and shapes only, no architecture).

    ``reference``: a state dict, path or module of the same layers (distance columns).
    ``heads``: the number of attention heads. ``strict``: raise ``InputError`` if any parameter
    is skipped. ``spectral``: ``"exact"`` (certified) or ``"estimate"`` (power iteration).
    Conv rows are reshaped-kernel proxies here (the geometry is unknown) and BatchNorms are
    skipped with a reason (what feeds them is unknown): use ``inspect_module`` for both.
    """
    _check_options(spectral)
    src = _MappingSource(_as_mapping(tensors), source)
    plan = plan_tensors(src.infos(), heads=heads)
    with _open_reference(reference) as ref:
        return _run(src, plan, ref, ComputeOptions(spectral=spectral), strict, (), progress)


def _record_input_sizes(
    model: nn.Module, example_input: object
) -> tuple[dict[str, tuple[int, ...]], list[str]]:
    """Spatial input size of every conv, from one eval-mode forward pass; the model is restored."""
    sizes: dict[str, set[tuple[int, ...]]] = {}
    hooks = []
    modes = {name: m.training for name, m in model.named_modules()}

    def hook(name: str) -> Callable[[nn.Module, tuple[object, ...]], None]:
        def record(module: nn.Module, args: tuple[object, ...]) -> None:
            x = args[0] if args else None
            if isinstance(x, torch.Tensor):
                n_spatial = module.weight.ndim - 2  # type: ignore[operator]
                sizes.setdefault(name, set()).add(tuple(int(s) for s in x.shape[-n_spatial:]))

        return record

    try:
        for name, module in model.named_modules():
            if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d):
                hooks.append(module.register_forward_pre_hook(hook(name)))
        model.eval()
        with torch.no_grad():
            try:
                if isinstance(example_input, tuple):
                    model(*example_input)
                elif isinstance(example_input, Mapping):
                    model(**example_input)
                else:
                    model(example_input)
            except Exception as exc:
                raise InputError(f"the forward pass on example_input failed: {exc}") from exc
    finally:
        for h in hooks:
            h.remove()
        for name, m in model.named_modules():
            m.training = modes.get(name, m.training)
    out: dict[str, tuple[int, ...]] = {}
    notes: list[str] = []
    for name, seen in sizes.items():
        if len(seen) == 1:
            out[name] = next(iter(seen))
        else:
            notes.append(f"{name}: called at several input sizes {sorted(seen)}; no operator norm")
    return out, notes


def inspect_module(
    module: nn.Module,
    *,
    reference: ReferenceIn = None,
    heads: int | None = None,
    strict: bool = False,
    spectral: SpectralMode = "exact",
    progress: ProgressFn | None = None,
    example_input: object = None,
    input_sizes: Mapping[str, tuple[int, ...]] | None = None,
    select: Callable[[str, str, tuple[str, ...]], bool] | None = None,
) -> InspectResult:
    """Norms of every layer of a module, with what the module says that names cannot.

    Module handlers give each layer's kind, conv geometry, heads and BatchNorm eps; BatchNorms
    fed by a single conv/linear (``torch.fx`` graph, else ``nn.Sequential`` order) are folded
    into it. ``example_input`` (run once in eval mode under ``no_grad``; the module's modes are
    restored and hooks removed) or ``input_sizes`` (``{conv name: spatial size}``) give conv
    rows their operator norms. The module itself is never changed.

    ``select(kind, name, attention_blocks)``: compute only the layer rows it accepts (every
    attention block's head rows are always computed; the totals cover the rows computed). The
    capacity stage passes ``tfbound.bounds.transformer.rows_read`` so that no embedding table
    is decomposed for terms that never read it.
    """
    _check_options(spectral)
    state = module.state_dict()
    src = _MappingSource(state, f"module {type(module).__name__}")
    sizes: dict[str, tuple[int, ...]] = {}
    notes: list[str] = []
    if example_input is not None:
        sizes, notes = _record_input_sizes(module, example_input)
    sizes.update({k: tuple(v) for k, v in (input_sizes or {}).items()})
    plan = plan_tensors(
        src.infos(),
        modules=describe_modules(module),
        bn_inputs=batchnorm_inputs(module),
        heads=heads,
    )
    if select is not None:
        blocks = tuple(ap.name for ap in plan.attention)
        plan = dataclasses.replace(
            plan, layers=tuple(lp for lp in plan.layers if select(lp.kind, lp.name, blocks))
        )
    with _open_reference(reference) as ref:
        options = ComputeOptions(spectral=spectral, input_sizes=sizes)
        return _run(src, plan, ref, options, strict, notes, progress)


def inspect_safetensors(
    path: PathLike,
    *,
    reference: ReferenceIn = None,
    heads: int | None = None,
    strict: bool = False,
    spectral: SpectralMode = "exact",
    progress: ProgressFn | None = None,
) -> InspectResult:
    """Norms of a ``.safetensors`` checkpoint, streamed: one layer's tensors in memory at a time.

    ``path``: a ``.safetensors`` file, a sharded ``model.safetensors.index.json``, or a folder
    holding either. ``heads`` defaults to ``num_attention_heads`` (or ``num_heads``, ``n_head``)
    of a ``config.json`` beside the checkpoint. Raises ``CheckpointError`` for missing or
    unreadable files.
    """
    _check_options(spectral)
    files = resolve_checkpoint(path)
    if files.kind != "safetensors":
        raise CheckpointError("not a safetensors checkpoint (use inspect_checkpoint)", path=path)
    folder = files.folder
    notes: list[str] = []
    heads_source = "argument"
    if heads is None:
        heads = _heads_from_config(folder)
        if heads is not None:
            heads_source = "config.json"
            notes.append(f"heads={heads} from {folder / 'config.json'}")
    with open_safetensors(files) as reader:
        src = _SafetensorsSource(reader, str(path))
        plan = plan_tensors(src.infos(), heads=heads, heads_source=heads_source)
        with _open_reference(reference) as ref:
            options = ComputeOptions(spectral=spectral)
            return _run(src, plan, ref, options, strict, notes, progress)


def inspect_torch_state_dict(
    path: PathLike,
    *,
    reference: ReferenceIn = None,
    heads: int | None = None,
    strict: bool = False,
    spectral: SpectralMode = "exact",
    progress: ProgressFn | None = None,
) -> InspectResult:
    """Norms of a weights-only ``.pt`` state dict (``torch.load(..., weights_only=True)``: no
    code is ever unpickled; a ``{'state_dict': ...}`` or ``{'model': ...}`` wrapper is opened)."""
    state = load_torch_state_dict(path)
    return inspect_state_dict(
        state,
        reference=reference,
        heads=heads,
        strict=strict,
        spectral=spectral,
        source=str(path),
        progress=progress,
    )


def inspect_checkpoint(
    path: PathLike,
    *,
    reference: ReferenceIn = None,
    heads: int | None = None,
    strict: bool = False,
    spectral: SpectralMode = "exact",
    progress: ProgressFn | None = None,
) -> InspectResult:
    """``inspect_torch_state_dict`` for ``.pt/.pth/.bin/.ckpt``, else ``inspect_safetensors``
    (``tfbound.io.checkpoints.resolve_checkpoint`` decides)."""
    p = Path(path)
    if resolve_checkpoint(p).kind == "torch":
        return inspect_torch_state_dict(
            p, reference=reference, heads=heads, strict=strict, spectral=spectral, progress=progress
        )
    return inspect_safetensors(
        p, reference=reference, heads=heads, strict=strict, spectral=spectral, progress=progress
    )


def _prefixed(prefix: str, result: InspectResult) -> InspectResult:
    def p(name: str) -> str:
        return f"{prefix}.{name}" if name else prefix

    layers = tuple(
        dataclasses.replace(r, name=p(r.name), params=tuple(p(x) for x in r.params))
        for r in result.layers
    )
    heads = tuple(dataclasses.replace(h, block=p(h.block)) for h in result.heads)
    skipped = tuple(dataclasses.replace(s, name=p(s.name)) for s in result.skipped)
    notes = tuple(f"{prefix}: {n}" for n in result.notes)
    return dataclasses.replace(result, layers=layers, heads=heads, skipped=skipped, notes=notes)


def merge_results(parts: Sequence[tuple[str, InspectResult]], source: str) -> InspectResult:
    """One result from several modules' results, rows named ``<prefix>.<name>``.

    Totals add up over the parts; ``spectral_norm_product`` is the product over every linear
    and conv row of all parts (a Lipschitz constant of the composition only for a plain chain,
    e.g. ``head o encoder`` of MLPs with 1-Lipschitz activations).
    """
    if not parts:
        raise InputError("nothing to merge")
    named = [_prefixed(prefix, r) for prefix, r in parts]
    totals = [r.totals for r in named]
    products = [t.spectral_norm_product for t in totals if t.spectral_norm_product is not None]
    product = None
    if products:
        product = NormValue(
            math.prod(v.value for v in products),
            weakest_status(*(v.status for v in products)),
            f"product over {sum(t.spectral_norm_product_factors for t in totals)} linear/conv rows",
        )
    dists = [t.distance_to_reference_sq_total for t in totals]
    refs = [f"{prefix}: {r.reference}" for (prefix, _), r in zip(parts, named, strict=True)]
    has_ref = [r.reference is not None for r in named]
    merged = InspectTotals(
        n_tensors=sum(t.n_tensors for t in totals),
        n_params=sum(t.n_params for t in totals),
        n_params_analysed=sum(t.n_params_analysed for t in totals),
        n_params_skipped=sum(t.n_params_skipped for t in totals),
        n_layers=sum(t.n_layers for t in totals),
        n_head_rows=sum(t.n_head_rows for t in totals),
        frobenius_norm_sq_total=sum(t.frobenius_norm_sq_total for t in totals),
        spectral_norm_product=product,
        spectral_norm_product_factors=sum(t.spectral_norm_product_factors for t in totals),
        distance_to_reference_sq_total=(
            None if all(d is None for d in dists) else sum(d for d in dists if d is not None)
        ),
    )
    return InspectResult(
        source=source,
        reference="; ".join(r for r, h in zip(refs, has_ref, strict=True) if h) or None,
        spectral=named[0].spectral,
        layers=tuple(row for r in named for row in r.layers),
        heads=tuple(h for r in named for h in r.heads),
        skipped=tuple(s for r in named for s in r.skipped),
        notes=tuple(n for r in named for n in r.notes),
        totals=merged,
    )


class _CallableModule(types.ModuleType):
    """``tfbound.inspect(obj)``: the module is callable as ``tfbound.api.inspect`` (the public
    function and this module share the name)."""

    def __call__(self, obj: object, **kwargs: object) -> InspectResult:
        from tfbound.api import inspect

        return inspect(obj, **kwargs)  # type: ignore[arg-type]


sys.modules[__name__].__class__ = _CallableModule

"""The Python entry points: ``estimate`` (a configuration, or modules and data in memory),
``certify`` (precomputed features and a linear head) and ``inspect`` (a module, state dict or
checkpoint file). ``docs/python.md`` walks through them.

Every call leaves the caller's grad mode, each module's train/eval mode (of every submodule) and
the parameters as they were: the passes run under ``torch.inference_mode()`` in eval mode.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tfbound.errors import UsageError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from tfbound.bounds.decomposition import TransferInput
    from tfbound.config import Config
    from tfbound.features import ProgressFn
    from tfbound.inspect import InspectResult
    from tfbound.report import Report

ArrayLike = Any  # np.ndarray | torch.Tensor | a sequence of numbers


def estimate(
    config: Config | str | Path | None = None,
    *,
    encoder: nn.Module | None = None,
    head: nn.Module | None = None,
    train: Any = None,
    test: Any = None,
    pool: Any = None,
    pretext: Mapping[str, Any] | None = None,
    reference: nn.Module | None = None,
    progress: ProgressFn | None = None,
    transfer: TransferInput | None = None,
    capacity: str = "full",
    **bound_options: Any,
) -> Report:
    """The itemised bound, the same report as ``tfbound estimate``.

    Either ``config`` (a ``Config``, a ``tfbound.yaml`` path or its folder), or the in-memory form:

    - ``encoder``, ``head``: ``nn.Module``s (the head ``nn.Linear(d, 1)``, tfbound's
      ``LinearHead`` / ``MLPHead`` or ``nn.Sequential(Linear, activation, Linear(h, 1))``);
    - ``train``, ``test``: ``(x, y)`` arrays or tensors, or a map-style ``Dataset`` /
      ``DataLoader`` of ``(x, y)`` items (read ``batch_size`` items at a time); labels in {0, 1}
      or {-1, +1};
    - ``pool``: unlabeled downstream inputs, disjoint from everything else (the disagreement
      certificate);
    - ``pretext``: the config's ``pretext:`` section as a mapping plus ``decoder`` (a module),
      ``train`` and ``val`` (pre-training inputs);
    - ``reference``: the pre-trained encoder that ``encoder`` was fine-tuned from on ``train``
      (the fine-tuned route's statuses);
    - ``bound_options``: any ``bound:`` key of the configuration (``delta=0.05``,
      ``encoder_candidates=20``, ``n_draws``, ``seed``, ``batch_size``, ``delta_shares``, ...);
    - ``capacity``: ``full``, ``fast`` or ``off``, as ``tfbound estimate --capacity``.

    With ``config``, ``bound_options`` override the configuration's ``bound:`` section.
    """
    from tfbound.pipeline.memory import eval_modes, prepare
    from tfbound.pipeline.run import estimate as estimate_config
    from tfbound.pipeline.run import estimate_prepared

    in_memory = {"encoder": encoder, "head": head, "train": train, "test": test, "pool": pool}
    in_memory |= {"pretext": pretext, "reference": reference}
    if config is not None:
        given = sorted(k for k, v in in_memory.items() if v is not None)
        if given:
            raise UsageError(f"pass a config or modules and data, not both (got {given})")
        if bound_options:
            config = _with_bound(config, bound_options)
        return estimate_config(config, progress=progress, transfer=transfer, capacity=capacity)
    if encoder is None or head is None or train is None:
        raise UsageError("tfbound.estimate needs a config, or encoder=, head= and train=")
    decoder = None if pretext is None else pretext.get("decoder")
    with eval_modes(encoder, head, decoder, reference):
        setup, models, splits, record = prepare(
            encoder=encoder,
            head=head,
            train=train,
            test=test,
            pool=pool,
            pretext=pretext,
            reference=reference,
            bound_options=bound_options,
        )
        return estimate_prepared(
            setup, models, splits, record, progress=progress, transfer=transfer, capacity=capacity
        )


def _with_bound(config: Config | str | Path, options: Mapping[str, Any]) -> Config:
    from tfbound.config import Config, _bound_spec, load_config

    cfg = config if isinstance(config, Config) else load_config(config)
    raw = {**cfg.bound.to_dict(), **options}
    return replace(cfg, bound=_bound_spec(raw, cfg.path))


#: the warning of an encoder without capacity terms, replaced in ``certify`` (features given)
_NO_CAPACITY = "capacity terms left out"


def certify(
    z_train: ArrayLike,
    y_train: ArrayLike,
    w: ArrayLike,
    b: float,
    *,
    z_test: ArrayLike | None = None,
    y_test: ArrayLike | None = None,
    z_pool: ArrayLike | None = None,
    delta: float = 0.05,
    **bound_options: Any,
) -> Report:
    """The certificates of the linear head ``f(z) = w . z + b`` on precomputed features.

    ``z_train`` ``(n, d)`` and ``y_train`` ``(n,)`` (labels in {0, 1} or {-1, +1}) are the
    labeled sample S the head was fitted on; ``z_test``/``y_test`` a held-out split (the observed
    test error and the test-set bound); ``z_pool`` unlabeled features disjoint from both (the
    disagreement certificate). The features are read as float32, as an encoder's output is.
    The encoder is the identity: no encoder capacity or pretext terms.
    """
    import numpy as np
    import torch
    from torch import nn

    w64 = np.asarray(w, dtype=np.float64).reshape(-1)
    b_array = np.asarray(b, dtype=np.float64)
    if b_array.size != 1:
        raise UsageError(f"certify needs one bias b (a number), got {b_array.size} values")
    b = float(b_array.reshape(-1)[0])
    head = nn.Linear(int(w64.shape[0]), 1)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(w64.reshape(1, -1)))
        head.bias.fill_(float(b))
    test = None
    if z_test is not None or y_test is not None:
        if z_test is None or y_test is None:
            raise UsageError("certify needs both z_test and y_test, or neither")
        test = (z_test, y_test)
    report = estimate(
        encoder=nn.Identity(),
        head=head,
        train=(z_train, y_train),
        test=test,
        pool=z_pool,
        delta=delta,
        **bound_options,
    )
    warnings = tuple(w for w in report.warnings if not w.startswith(_NO_CAPACITY))
    note = "certify: features given (the encoder is the identity); no encoder capacity terms"
    return replace(report, warnings=(*warnings, note))


def inspect(
    obj: nn.Module | Mapping[str, torch.Tensor] | str | Path,
    *,
    reference: Any = None,
    heads: int | None = None,
    strict: bool = False,
    spectral: str = "exact",
    example_input: Any = None,
) -> InspectResult:
    """Per-layer norms, the rows of ``tfbound inspect``: of an ``nn.Module`` (its geometry and
    BatchNorm folding known; ``example_input`` gives conv rows their operator norms), of a state
    dict, or of a checkpoint file or folder. ``tfbound.render.inspect_render.inspect_json(result)``
    is the CLI's JSON form. The module is not changed."""
    import tfbound.inspect as ti

    mode: Any = spectral
    if hasattr(obj, "state_dict") and hasattr(obj, "modules"):
        from tfbound.pipeline.memory import eval_modes

        with eval_modes(obj):  # type: ignore[arg-type]
            return ti.inspect_module(
                obj,  # type: ignore[arg-type]
                reference=reference,
                heads=heads,
                strict=strict,
                spectral=mode,
                example_input=example_input,
            )
    if isinstance(obj, str | Path):
        return ti.inspect_checkpoint(
            obj, reference=reference, heads=heads, strict=strict, spectral=mode
        )
    if isinstance(obj, Mapping):
        return ti.inspect_state_dict(
            obj, reference=reference, heads=heads, strict=strict, spectral=mode
        )
    raise UsageError(
        f"inspect reads an nn.Module, a state dict or a checkpoint path, not {type(obj).__name__}"
    )


__all__ = ["certify", "estimate", "inspect"]

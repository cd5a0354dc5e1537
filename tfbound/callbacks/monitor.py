"""What both callbacks do, without a framework import: estimate, log, keep, gate."""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tfbound.api import estimate
from tfbound.gates import GateReport, evaluate_gates, parse_gates
from tfbound.report import Report

#: the report's numbers a callback logs, under ``tfbound/<key>``
LOGGED = ("best_certified_test_error_bound", "observed_test_error", "test_set_bound")

Getter = str | Callable[[Any], nn.Module]


@dataclass(frozen=True)
class Checkpoint:
    """One report of a training run: at ``epoch`` / ``step``, with its gate verdict."""

    epoch: int
    step: int
    report: Report
    gates: GateReport | None


class BoundMonitor:
    """``tfbound.estimate`` on ``encoder(model)`` and ``head(model)`` every ``every`` epochs (or
    steps, by the callback's ``unit``).

    - ``encoder``, ``head``: attribute names of the trained model, or functions of it;
    - ``train``, ``test``, ``pool``, ``pretext``: as for ``tfbound.estimate`` (``train`` is the
      labeled sample the head is fitted on);
    - ``finetuned``: the encoder is trained too; its weights when training starts are the
      reference (the fine-tuned route's statuses, bound-spec section 5);
    - ``gates``: ``{target: condition}`` as in a config's ``gates:`` (``tfbound.gates``);
      ``stop_on_gate``: ask the trainer to stop when one fails;
    - ``save_dir``: write each report as ``tfbound-epoch{E}-step{S}.json`` there;
    - ``bound_options``: ``delta=``, ``encoder_candidates=``, ... of ``tfbound.estimate``.
    """

    def __init__(
        self,
        *,
        train: Any,
        test: Any = None,
        pool: Any = None,
        pretext: Mapping[str, Any] | None = None,
        encoder: Getter = "encoder",
        head: Getter = "head",
        every: int = 1,
        finetuned: bool = False,
        gates: Mapping[str, str] | None = None,
        stop_on_gate: bool = True,
        save_dir: str | Path | None = None,
        **bound_options: Any,
    ) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.data = {"train": train, "test": test, "pool": pool, "pretext": pretext}
        self.encoder, self.head = encoder, head
        self.every = every
        self.finetuned = finetuned
        self.gates = parse_gates(dict(gates)) if gates else ()
        self.stop_on_gate = stop_on_gate
        self.save_dir = None if save_dir is None else Path(save_dir)
        self.bound_options = bound_options
        self.reference: nn.Module | None = None
        self.checkpoints: list[Checkpoint] = []

    @property
    def reports(self) -> list[Report]:
        return [c.report for c in self.checkpoints]

    def start(self, model: Any) -> None:
        """At the start of training: the reference encoder of the fine-tuned route."""
        if self.finetuned:
            self.reference = copy.deepcopy(_get(model, self.encoder)).requires_grad_(False)

    def due(self, count: int) -> bool:
        return count > 0 and count % self.every == 0

    def run(self, model: Any, epoch: int, step: int) -> tuple[Checkpoint, dict[str, float]]:
        """The report now; returns it and the numbers to log."""
        with _rng_kept():
            report = estimate(
                encoder=_get(model, self.encoder),
                head=_get(model, self.head),
                reference=self.reference,
                **self.data,
                **self.bound_options,
            )
        verdict = evaluate_gates(self.gates, report.to_dict()) if self.gates else None
        point = Checkpoint(epoch, step, report, verdict)
        self.checkpoints.append(point)
        if self.save_dir is not None:
            self.save_dir.mkdir(parents=True, exist_ok=True)
            report.write(self.save_dir / f"tfbound-epoch{epoch}-step{step}.json")
        return point, self.metrics(point)

    def metrics(self, point: Checkpoint) -> dict[str, float]:
        out: dict[str, float] = {}
        for key in LOGGED:
            term = point.report.get(key)
            if term is not None and term.value is not None:
                out[f"tfbound/{key}"] = float(term.value)
        if point.gates is not None:
            out["tfbound/gates_failed"] = float(point.gates.n_failed)
        return out

    def should_stop(self, point: Checkpoint) -> bool:
        return self.stop_on_gate and point.gates is not None and not point.gates.passed


def _get(model: Any, getter: Getter) -> nn.Module:
    module = getattr(model, getter) if isinstance(getter, str) else getter(model)
    if not isinstance(module, nn.Module):
        raise TypeError(f"the encoder/head getter gave {type(module).__name__}, not an nn.Module")
    return module


class _rng_kept:
    """Torch (CPU and CUDA), NumPy and Python global random states restored on exit."""

    def __enter__(self) -> None:
        self.fork = torch.random.fork_rng(devices=range(torch.cuda.device_count()))
        self.fork.__enter__()
        self.np_state = np.random.get_state()
        self.py_state = random.getstate()

    def __exit__(self, *exc: object) -> None:
        np.random.set_state(self.np_state)
        random.setstate(self.py_state)
        self.fork.__exit__(None, None, None)

"""A Hugging Face ``TrainerCallback``: the report every N epochs or steps of a ``Trainer``.

    trainer = Trainer(..., callbacks=[TfboundTrainerCallback(train=(x, y), encoder=get_enc,
                                                               head=get_head)])

Headline numbers are appended to ``state.log_history`` (what ``Trainer.log`` records); reports
are kept in ``callback.monitor.checkpoints``; a failing gate sets
``control.should_training_stop``.
"""

from __future__ import annotations

from typing import Any

try:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError(
        "tfbound.callbacks.huggingface needs transformers: pip install transformers"
    ) from exc

from tfbound.callbacks.monitor import BoundMonitor


class TfboundTrainerCallback(TrainerCallback):
    """``BoundMonitor`` at the end of every ``every``-th epoch (``unit="epoch"``) or step
    (``unit="step"``) of ``model`` (the ``Trainer``'s); the other keywords are
    :class:`BoundMonitor`'s."""

    def __init__(self, *, unit: str = "epoch", **monitor: Any) -> None:
        if unit not in ("epoch", "step"):
            raise ValueError(f"unit must be 'epoch' or 'step', got {unit!r}")
        self.unit = unit
        self.monitor = BoundMonitor(**monitor)

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self.monitor.start(kw["model"])

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if self.unit == "epoch" and self.monitor.due(round(state.epoch or 0)):
            self._run(state, control, kw["model"])

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if self.unit == "step" and self.monitor.due(state.global_step):
            self._run(state, control, kw["model"])

    def _run(self, state: TrainerState, control: TrainerControl, model: Any) -> None:
        point, metrics = self.monitor.run(model, round(state.epoch or 0), state.global_step)
        if metrics:
            state.log_history.append({**metrics, "epoch": state.epoch, "step": state.global_step})
        if self.monitor.should_stop(point):
            control.should_training_stop = True


__all__ = ["TfboundTrainerCallback"]

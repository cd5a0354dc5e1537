"""A Lightning ``Callback``: the report every N epochs or steps (``tfbound[lightning]``).

    trainer = lightning.Trainer(callbacks=[TfboundCallback(train=(x, y), test=(xt, yt))])

Headline numbers go to ``pl_module.log`` (``tfbound/best_certified_test_error_bound``, ...);
reports are kept in ``callback.monitor.checkpoints``; a failing gate sets ``trainer.should_stop``.
"""

from __future__ import annotations

from typing import Any

try:
    import lightning.pytorch as pl
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError(
        "tfbound.callbacks.lightning needs lightning: pip install 'tfbound[lightning]'"
    ) from exc

from tfbound.callbacks.monitor import BoundMonitor


class TfboundCallback(pl.Callback):
    """``BoundMonitor`` at the end of every ``every``-th training epoch (``unit="epoch"``) or
    after every ``every``-th optimizer step (``unit="step"``); the other keywords are
    :class:`BoundMonitor`'s."""

    def __init__(self, *, unit: str = "epoch", **monitor: Any) -> None:
        if unit not in ("epoch", "step"):
            raise ValueError(f"unit must be 'epoch' or 'step', got {unit!r}")
        self.unit = unit
        self.monitor = BoundMonitor(**monitor)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.monitor.start(pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.unit == "epoch" and self.monitor.due(trainer.current_epoch + 1):
            self._run(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        if self.unit == "step" and self.monitor.due(trainer.global_step):
            self._run(trainer, pl_module)

    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        point, metrics = self.monitor.run(pl_module, trainer.current_epoch + 1, trainer.global_step)
        if metrics and trainer.logger is not None:
            trainer.logger.log_metrics(metrics, step=trainer.global_step)
        if self.monitor.should_stop(point):
            trainer.should_stop = True


__all__ = ["TfboundCallback"]

"""Training-loop callbacks: the report every N epochs or steps, logged, kept, gated.

- :class:`tfbound.callbacks.lightning.TfboundCallback` (``pip install 'tfbound[lightning]'``);
- :class:`tfbound.callbacks.huggingface.TfboundTrainerCallback` (``transformers``).

Both run :class:`BoundMonitor` (no framework import): ``tfbound.estimate`` in memory on the
module's encoder and head, under a forked RNG (the training run's random streams are not
touched), with every module's mode and the grad mode restored after.
"""

from tfbound.callbacks.monitor import BoundMonitor, Checkpoint

__all__ = ["BoundMonitor", "Checkpoint"]

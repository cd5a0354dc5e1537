"""tfbound: certified, itemised generalization bounds for pre-trained encoders and their heads."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from tfbound.report import Report


def estimate(config: Any, **kwargs: Any) -> Report:
    """Estimate the itemised bound for a config (a ``Config``, a YAML path, or a folder)."""
    from tfbound.pipeline import estimate as _estimate

    return _estimate(config, **kwargs)


__all__ = ["__version__", "estimate"]

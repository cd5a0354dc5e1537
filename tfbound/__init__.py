"""tfbound: certified, itemised generalization bounds for pre-trained encoders and their heads.

The public surface (``docs/python.md``):

- ``estimate`` (a configuration, or modules and data in memory), ``certify`` (precomputed
  features and a linear head), ``inspect`` (per-layer norms of a module, state dict or
  checkpoint), all from :mod:`tfbound.api`;
- ``Report`` (``summary()``, ``to_pandas()``, ``to_dict()``, ``to_json()``, ``Report.read``),
  ``Term`` and ``Status``;
- the modules ``gates`` (conditions on a report), ``callbacks`` (Lightning and Hugging Face),
  ``errors`` (the exception family) and ``keys`` (the term catalogue).

Everything else is internal. ``import tfbound`` imports neither torch nor numpy: each name is
imported when first used (the CLI's ``check`` and ``compare`` start without torch).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from tfbound import callbacks, errors, gates, keys
    from tfbound.api import certify, estimate, inspect
    from tfbound.report import Report
    from tfbound.terms import Status, Term

#: public name -> (module, attribute); None: the module itself
_LAZY: dict[str, tuple[str, str | None]] = {
    "estimate": ("tfbound.api", "estimate"),
    "certify": ("tfbound.api", "certify"),
    # the module tfbound.inspect is callable: tfbound.inspect(m) is tfbound.api.inspect(m)
    "inspect": ("tfbound.inspect", None),
    "Report": ("tfbound.report", "Report"),
    "Term": ("tfbound.terms", "Term"),
    "Status": ("tfbound.terms", "Status"),
    "callbacks": ("tfbound.callbacks", None),
    "errors": ("tfbound.errors", None),
    "gates": ("tfbound.gates", None),
    "keys": ("tfbound.keys", None),
}


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'tfbound' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "Report",
    "Status",
    "Term",
    "__version__",
    "callbacks",
    "certify",
    "errors",
    "estimate",
    "gates",
    "inspect",
    "keys",
]

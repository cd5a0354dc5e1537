"""Key renaming of a checkpoint before it is loaded (``prefix`` and ``key_map`` of a module)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

T = TypeVar("T")


def rename_keys(
    tensors: Mapping[str, T], prefix: str = "", key_map: Mapping[str, str] | None = None
) -> dict[str, T]:
    """Strip ``prefix`` from every key that starts with it, then rename key prefixes by
    ``key_map`` (old -> new, the longest matching old prefix wins).

    >>> rename_keys({"module.fc.weight": 1, "module.fc.bias": 2}, "module.", {"fc.": "linear."})
    {'linear.weight': 1, 'linear.bias': 2}
    """
    rules = sorted((key_map or {}).items(), key=lambda kv: -len(kv[0]))
    out: dict[str, T] = {}
    for name, t in tensors.items():
        key = name.removeprefix(prefix) if prefix else name
        for old, new in rules:
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        out[key] = t
    return out


__all__ = ["rename_keys"]

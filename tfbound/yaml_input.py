"""YAML from files a pull request may supply: ``yaml.safe_load`` without aliases, size-capped.

An anchor-and-alias "billion laughs" document of a few hundred bytes expands to gigabytes once
anything walks it (a message's ``repr``, a copy); tfbound's files never need aliases, so any alias
is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

#: The largest YAML text read (a config or gates file is a few kilobytes).
MAX_YAML_BYTES = 1 << 20


class _NoAliasLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses aliases (``*name``)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases (*name) are not accepted", event.start_mark
            )
        return super().compose_node(parent, index)


def load_yaml(text: str) -> Any:
    """Parse ``text`` as YAML (safe types only, no aliases); ``yaml.YAMLError`` or ``ValueError``
    (too large) on bad input.

    >>> load_yaml("a: [1, 2]")
    {'a': [1, 2]}
    """
    if len(text) > MAX_YAML_BYTES:
        raise ValueError(f"YAML text over {MAX_YAML_BYTES} characters")
    return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass


def read_yaml_file(path: Path) -> Any:
    """:func:`load_yaml` of a file, its size checked before it is read."""
    if path.stat().st_size > MAX_YAML_BYTES:
        raise ValueError(f"the YAML file is over {MAX_YAML_BYTES} bytes")
    return load_yaml(path.read_text(encoding="utf-8"))


__all__ = ["MAX_YAML_BYTES", "load_yaml", "read_yaml_file"]

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


def load_yaml(text: str) -> Any:
    """Parse ``text`` as YAML (safe types only, no aliases); ``yaml.YAMLError`` or ``ValueError``
    (too large) on bad input.

    >>> load_yaml("a: [1, 2]")
    {'a': [1, 2]}
    """
    if len(text) > MAX_YAML_BYTES:
        raise ValueError(f"YAML text over {MAX_YAML_BYTES} characters")
    # The event stream is read first, nothing composed: an alias is refused before any expansion.
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            where = "" if event.start_mark is None else f" (line {event.start_mark.line + 1})"
            raise yaml.YAMLError(f"YAML aliases (*name) are not accepted{where}")
    return yaml.safe_load(text)


def read_yaml_file(path: Path) -> Any:
    """:func:`load_yaml` of a file, its size checked before it is read."""
    if path.stat().st_size > MAX_YAML_BYTES:
        raise ValueError(f"the YAML file is over {MAX_YAML_BYTES} bytes")
    return load_yaml(path.read_text(encoding="utf-8"))


__all__ = ["MAX_YAML_BYTES", "load_yaml", "read_yaml_file"]

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


#: the deepest nesting of mappings and sequences accepted
MAX_YAML_DEPTH = 32


def load_yaml(text: str) -> Any:
    """Parse ``text`` as YAML (safe types only, no aliases); ``yaml.YAMLError`` or ``ValueError``
    (too large) on bad input.

    >>> load_yaml("a: [1, 2]")
    {'a': [1, 2]}
    """
    if len(text) > MAX_YAML_BYTES:
        raise ValueError(f"YAML text over {MAX_YAML_BYTES} characters")
    # The event stream is read first, nothing composed: an alias or deep nesting is refused
    # before any expansion (the parser slows down sharply with depth).
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        where = "" if event.start_mark is None else f" (line {event.start_mark.line + 1})"
        if isinstance(event, yaml.AliasEvent):
            raise yaml.YAMLError(f"YAML aliases (*name) are not accepted{where}")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise yaml.YAMLError(f"YAML nested more than {MAX_YAML_DEPTH} levels{where}")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    _refuse_duplicate_keys(yaml.compose(text, Loader=yaml.SafeLoader))
    return yaml.safe_load(text)


def _refuse_duplicate_keys(node: yaml.Node | None) -> None:
    """A key given twice in one mapping is refused (YAML would keep the last one silently)."""
    stack = [] if node is None else [node]
    while stack:
        current = stack.pop()
        if isinstance(current, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in current.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in seen:
                        line = key.start_mark.line + 1
                        raise yaml.YAMLError(
                            f"YAML key given twice (line {line}): {key.value[:60]!r}"
                        )
                    seen.add(key.value)
                stack += [key, value]
        elif isinstance(current, yaml.SequenceNode):
            stack += current.value


def read_yaml_file(path: Path) -> Any:
    """:func:`load_yaml` of a file, its size checked before it is read."""
    if path.stat().st_size > MAX_YAML_BYTES:
        raise ValueError(f"the YAML file is over {MAX_YAML_BYTES} bytes")
    return load_yaml(path.read_text(encoding="utf-8"))


__all__ = ["MAX_YAML_BYTES", "MAX_YAML_DEPTH", "load_yaml", "read_yaml_file"]

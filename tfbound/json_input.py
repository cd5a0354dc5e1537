"""JSON from untrusted files, nesting bounded: ``loads`` refuses a text nested deeper than
``MAX_JSON_DEPTH`` before the parser (or anything that walks the result recursively) can run out
of stack. Errors are ``ValueError`` (as ``json.JSONDecodeError`` is), which callers already turn
into one-line input errors."""

from __future__ import annotations

import json
import re
from typing import Any

#: the deepest nesting of arrays and objects accepted in any JSON file tfbound reads
MAX_JSON_DEPTH = 64


_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")


def nesting_depth(text: str | bytes, limit: int = MAX_JSON_DEPTH) -> int:
    """The deepest ``[``/``{`` nesting of a JSON text (strings skipped), stopping past ``limit``."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub(b"", data)):
        if match.group() in (b"[", b"{"):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        else:
            depth -= 1
    return deepest


def loads(text: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` of an untrusted text, refused (``ValueError``) when nested too deeply."""
    if nesting_depth(text, max_depth) > max_depth:
        raise ValueError(f"JSON nested more than {max_depth} levels deep")
    try:
        return json.loads(text)
    except RecursionError:  # pragma: no cover - the scan above comes first
        raise ValueError("JSON nested too deeply") from None


__all__ = ["MAX_JSON_DEPTH", "loads", "nesting_depth"]

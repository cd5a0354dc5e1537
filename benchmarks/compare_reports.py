"""Compare two ``tfbound estimate --format json`` reports number by number.

Usage (from the repository root)::

    python benchmarks/compare_reports.py BEFORE.json AFTER.json [--rtol 1e-12] [--atol 0]

Walks both JSON documents together. Every number (at any depth: values, intervals, details,
lists) is compared with ``|a - b| <= atol + rtol |a|``; strings, booleans and nulls must be equal
(a formula string that quotes a number with ``%g`` can differ only if the number moved in its
sixth significant digit); a key or list entry present on one side only is a difference.

Printed: the number of numbers compared, the largest absolute and relative difference and the
path where each occurs, the largest absolute difference of every term's ``value`` (the
per-term table ``device_check.sh`` prints), and every path beyond the tolerance. The exit status
is 0 when every number is within the tolerance and the structure and strings agree, else 1.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

Number = int | float


def _walk(a: Any, b: Any, path: str) -> Iterator[tuple[str, Any, Any]]:
    """``(path, a, b)`` for every leaf pair; a leaf missing on one side comes as ``None``."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            sub = f"{path}.{key}" if path else str(key)
            if key not in a or key not in b:
                yield sub, a.get(key, "<missing>"), b.get(key, "<missing>")
            else:
                yield from _walk(a[key], b[key], sub)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            yield f"{path}.len", len(a), len(b)
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            yield from _walk(x, y, f"{path}[{i}]")
    else:
        yield path, a, b


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def compare(before: Any, after: Any, rtol: float, atol: float) -> dict[str, Any]:
    """Differences of two parsed reports (see the module docstring)."""
    n_numbers = 0
    max_abs, max_abs_at = 0.0, ""
    max_rel, max_rel_at = 0.0, ""
    beyond: list[str] = []
    for path, a, b in _walk(before, after, ""):
        if _is_number(a) and _is_number(b):
            n_numbers += 1
            fa, fb = float(a), float(b)
            if math.isnan(fa) and math.isnan(fb) or fa == fb:
                continue
            diff = abs(fa - fb)
            rel = diff / abs(fa) if fa != 0 else math.inf
            if diff > max_abs:
                max_abs, max_abs_at = diff, path
            if rel > max_rel:
                max_rel, max_rel_at = rel, path
            if not diff <= atol + rtol * abs(fa):
                beyond.append(f"{path}: {a!r} -> {b!r} (abs {diff:.3g}, rel {rel:.3g})")
        elif a != b:
            beyond.append(f"{path}: {a!r} -> {b!r}")
    return {
        "numbers": n_numbers,
        "max_abs": max_abs,
        "max_abs_at": max_abs_at,
        "max_rel": max_rel,
        "max_rel_at": max_rel_at,
        "beyond": beyond,
    }


def term_differences(before: Any, after: Any) -> dict[str, float]:
    """``|value_before - value_after|`` of every term and bound present in both reports."""
    out: dict[str, float] = {}
    for section in ("terms", "bounds"):
        a, b = before.get(section, {}), after.get(section, {})
        for key in sorted(set(a) & set(b)):
            va, vb = a[key].get("value"), b[key].get("value")
            if _is_number(va) and _is_number(vb):
                out[f"{section}.{key}"] = abs(float(va) - float(vb))
            elif va != vb:
                out[f"{section}.{key}"] = math.inf
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--rtol", type=float, default=1e-12)
    parser.add_argument("--atol", type=float, default=0.0)
    parser.add_argument("--terms", action="store_true", help="print every term's difference")
    args = parser.parse_args(argv)
    before = json.loads(args.before.read_text())
    after = json.loads(args.after.read_text())
    result = compare(before, after, args.rtol, args.atol)
    print(f"{args.before} vs {args.after}: {result['numbers']} numbers compared")
    print(f"  max abs diff {result['max_abs']:.3g} at {result['max_abs_at'] or '-'}")
    print(f"  max rel diff {result['max_rel']:.3g} at {result['max_rel_at'] or '-'}")
    if args.terms:
        for key, diff in term_differences(before, after).items():
            print(f"  {key:<48} |diff| {diff:.3g}")
    for line in result["beyond"]:
        print(f"  BEYOND rtol={args.rtol:g} atol={args.atol:g}: {line}")
    return 0 if not result["beyond"] else 1


if __name__ == "__main__":
    sys.exit(main())

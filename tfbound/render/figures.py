"""What every figure shares: the lazy matplotlib import (Agg), saving through ``io.atomic``, the
role palette, vacuity, number formatting and the names of the models a report was made from.

matplotlib is an optional extra (``pip install 'tfbound[plot]'``); nothing here imports it at
module level.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tfbound.errors import InputError
from tfbound.io.atomic import write_bytes_atomic
from tfbound.keys import Role

FORMATS = ("png", "svg", "pdf")
DPI = 100
INSTALL_HINT = "pip install 'tfbound[plot]'"

#: One colour per role: in a figure of terms, colour means the role and nothing else.
ROLE_COLORS: dict[str, str] = {
    Role.HEADLINE: "#1B4F9C",
    Role.CERTIFICATE: "#86ACDB",
    Role.COMPONENT: "#86ACDB",
    Role.HELDOUT: "#D9822B",
    Role.PRETEXT: "#4E9A5B",
    Role.CAPACITY: "#8268B0",
    Role.DECOMPOSITION: "#B5651D",
    Role.TRANSFER: "#B5651D",
    Role.HETEROGENEITY: "#2A9D8F",
    Role.DIAGNOSTIC: "#9C7A54",
}
#: A vacuous certificate (>= 1): drawn in this, whatever its role, and labelled "vacuous".
MUTED = "#CFCFCF"
MUTED_TEXT = "#808080"
VACUOUS = "vacuous"
#: Certificates of an error rate are vacuous at or above this.
VACUOUS_AT = 1.0


def require_matplotlib(what: str = "tfbound plot") -> Any:
    """``matplotlib.pyplot`` on the Agg backend, or an ``InputError`` saying what to install."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise InputError(
            f"{what} needs matplotlib, an optional extra: install tfbound[plot] ({INSTALL_HINT})"
        ) from exc
    return plt


def image_format(path: Path) -> str:
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise InputError(f"cannot draw a {path.suffix or 'suffix-less'} file", path=path)
    return fmt


def save_figure(fig: Any, path: str | Path) -> None:
    """Render ``fig`` in the format of ``path``'s suffix and write it atomically (complete or
    absent); the figure is closed either way."""
    plt = require_matplotlib()
    target = Path(path)
    try:
        fmt = image_format(target)
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=DPI, bbox_inches="tight")
    finally:
        plt.close(fig)
    data = buf.getvalue()
    if fmt == "png":
        data = _palette_png(data)
    write_bytes_atomic(target, data)


def _palette_png(data: bytes) -> bytes:
    """The PNG with at most 256 colours (a few plain colours and anti-aliased text: the same
    picture at a fraction of the bytes), or as drawn where Pillow is missing."""
    try:
        from PIL import Image
    except ImportError:
        return data
    with Image.open(io.BytesIO(data)) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        out = io.BytesIO()
        small.save(out, format="PNG", optimize=True)
    return out.getvalue()


def is_vacuous(term: Mapping[str, Any]) -> bool:
    """A certificate of an error rate at or above 1 says nothing."""
    value = term.get("value")
    return (
        term.get("role") in (Role.HEADLINE, Role.CERTIFICATE)
        and isinstance(value, int | float)
        and value >= VACUOUS_AT
    )


def fmt_value(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value == 0:
        return "0"
    if abs(value) >= 1e4 or abs(value) < 1e-3:
        return f"{value:.2e}"
    return f"{value:.3g}"


# ---------------------------------------------------------------------------------------------
# The names of the models


def model_name(report: Mapping[str, Any]) -> str | None:
    """The model a report was made from, named from the report itself: ``<pretext>_<encoder>``
    (``ce_mlp``, ``mae_vit``, the sample models' names), or the encoder's architecture alone."""
    config = report.get("config") or {}
    model = report.get("model") or {}
    encoder = config.get("encoder") or model.get("encoder") or {}
    arch = encoder.get("arch") if isinstance(encoder, Mapping) else None
    pretext = config.get("pretext") or {}
    kind = pretext.get("kind") if isinstance(pretext, Mapping) else None
    if arch and kind:
        return f"{kind}_{arch}"
    if arch:
        return str(arch)
    return None


def _bound_settings(report: Mapping[str, Any]) -> dict[str, str]:
    bound = (report.get("config") or {}).get("bound") or {}
    if not isinstance(bound, Mapping):
        return {}
    return {
        str(k): json.dumps(v, sort_keys=True) for k, v in bound.items() if not isinstance(v, dict)
    }


def report_labels(reports: Sequence[Mapping[str, Any]], fallback: Sequence[str]) -> list[str]:
    """A name per report from the reports: the model's name, with the ``bound`` settings that
    differ between reports of the same model (``ce_mlp (seed 1, n_draws 64)``); ``fallback[i]``
    where a report names no model or two reports would still share a name."""
    names = [model_name(r) for r in reports]
    labels: list[str] = []
    for i, (name, rep) in enumerate(zip(names, reports, strict=True)):
        if name is None:
            labels.append(fallback[i])
            continue
        same = [r for n, r in zip(names, reports, strict=True) if n == name]
        if len(same) == 1:
            labels.append(name)
            continue
        settings = [_bound_settings(r) for r in same]
        keys = sorted({k for s in settings for k in s})
        differ = [k for k in keys if len({s.get(k) for s in settings}) > 1]
        mine = _bound_settings(rep)
        shown = [f"{k} {json.loads(mine[k])}" for k in differ if k in mine]
        labels.append(f"{name} ({', '.join(shown)})" if shown else name)
    return [label if labels.count(label) == 1 else fallback[i] for i, label in enumerate(labels)]


def stem_labels(paths: Sequence[Path]) -> list[str]:
    """File stems, or parent/stem where stems repeat (the last resort)."""
    stems = [p.stem for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    return [f"{p.parent.name}/{p.stem}" if stems.count(p.stem) > 1 else p.stem for p in paths]


__all__ = [
    "FORMATS",
    "MUTED",
    "ROLE_COLORS",
    "VACUOUS",
    "fmt_value",
    "image_format",
    "is_vacuous",
    "model_name",
    "report_labels",
    "require_matplotlib",
    "save_figure",
    "stem_labels",
]

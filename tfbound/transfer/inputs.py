"""C and beta for the excess-risk decomposition (bound-spec 6.2): read from a ``tfbound transfer``
report, or assumed by the user; the CLI's rules in :func:`resolve_transfer_input`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tfbound.bounds.decomposition import TransferInput
from tfbound.errors import InputError, UsageError, first_line
from tfbound.json_input import loads as bounded_json


def transfer_input_assumed(c: float, beta: float) -> TransferInput:
    """User-supplied ``C`` and ``beta`` (status ``assumed``)."""
    _check_c_beta(c, beta)
    return TransferInput(beta=beta, c=c, source="--transfer-c/--transfer-beta", beta_from="user")


def _check_c_beta(c: float | None, beta: float | None) -> None:
    if c is not None and not (math.isfinite(c) and c > 0):
        raise UsageError(f"--transfer-c must be a positive number, got {c}")
    if beta is not None and not (math.isfinite(beta) and beta > 0):
        raise UsageError(f"--transfer-beta must be a positive number, got {beta}")


def transfer_input_from_report(
    path: str | Path, *, c: float | None = None, beta: float | None = None
) -> TransferInput:
    """Read a ``tfbound transfer`` JSON report; ``c``/``beta`` override its values.

    ``beta`` defaults to the report's ``beta_fixed``; ``C`` to the envelope at ``beta`` over the
    members the report's fit used (recomputed, so any ``beta`` works).
    """
    _check_c_beta(c, beta)
    p = Path(path)
    try:
        data = bounded_json(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError("transfer report not found", path=p) from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(first_line(f"not a JSON transfer report: {exc}"), path=p) from exc
    if not isinstance(data, dict) or data.get("kind") != "transfer":
        raise InputError("not a transfer report (kind must be 'transfer')", path=p)
    try:
        meta = data["transfer"]
        members = tuple(
            (float(m["e_u"]["value"]), float(m["e_t"]["value"]))
            for m in data["members"]
            if m.get("used_in_fit")
        )
        beta_fixed = float(meta["beta_fixed"])
        base = next((m for m in data["members"] if m.get("kind") == "base"), None)
        terms = data.get("terms", {})
        tv = terms.get("tv_upper_assumed", {}).get("value")
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"malformed transfer report: missing {exc}", path=p) from exc
    e_u = e_t = None
    e_u_iv = e_t_iv = None
    if base is not None:
        e_u, e_t = float(base["e_u"]["value"]), float(base["e_t"]["value"])
        e_u_iv = (float(base["e_u"]["interval"][0]), float(base["e_u"]["interval"][1]))
        e_t_iv = (float(base["e_t"]["interval"][0]), float(base["e_t"]["interval"][1]))
    return TransferInput(
        beta=beta_fixed if beta is None else beta,
        c=c,
        source=str(p),
        beta_from="report" if beta is None else "user",
        members=members,
        e_u_base=e_u,
        e_u_base_interval=e_u_iv,
        e_t_base=e_t,
        e_t_base_interval=e_t_iv,
        probe_radius=_float_or_none(meta.get("probe_radius")),
        bias_const=_float_or_none(meta.get("bias_const")),
        encoder_sha256=meta.get("base_encoder_sha256"),
        tv_upper=_float_or_none(tv),
    )


def _float_or_none(v: Any) -> float | None:
    return None if v is None else float(v)


def resolve_transfer_input(
    report: str | Path | None, c: float | None, beta: float | None
) -> TransferInput | None:
    """The CLI's rules: a report (optionally overridden), both assumed values, or nothing."""
    if report is not None:
        return transfer_input_from_report(report, c=c, beta=beta)
    if c is None and beta is None:
        return None
    if c is None or beta is None:
        raise UsageError(
            "--transfer-c and --transfer-beta go together (or give a transfer report with "
            "--transfer)"
        )
    return transfer_input_assumed(c, beta)


__all__ = ["resolve_transfer_input", "transfer_input_assumed", "transfer_input_from_report"]

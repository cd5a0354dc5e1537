"""The stochastic head file of ``tfbound fit-head --stochastic``: its layout, writer and reader.

A safetensors file (float64) with exactly three tensors:

- ``linear.weight`` ``(1, d)`` and ``linear.bias`` ``(1,)``: the posterior mean in raw
  coordinates, a plain ``nn.Linear(d, 1)`` head (the mean head ``sign(w . z + b)``);
- ``posterior.scale`` ``(d+1, d+1)``: ``S = diag(1, ..., 1, c) M^(-1/2)``, so that a draw of the
  stochastic head is ``(w, b) = (linear.weight, linear.bias) + S xi``, ``xi ~ N(0, I_(d+1))``
  (``M`` the metric of ``S1``, ``c`` the bias constant).

Beside it, the provenance record of ``tfbound fit-head`` (the same stem, ``.json``) with
``kind: stochastic``. The reader trusts nothing: a ``.safetensors`` file only (no unpickling),
the header's shapes checked against ``d`` before any tensor is read, finite values, the record
matched against this configuration's split, data and constants; ``estimate`` then checks the
scale against the metric it rebuilds from ``S1`` itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tfbound.errors import CheckpointError

KIND = "stochastic"
WEIGHT, BIAS, SCALE = "linear.weight", "linear.bias", "posterior.scale"
#: the record's fields that must equal this configuration's (and the configuration's name)
MATCHED_FIELDS: Mapping[str, str] = {
    "split_seed": "bound.split_seed",
    "n1_fraction": "bound.n1_fraction",
    "metric_eps": "bound.metric_eps",
    "prior_lam": "bound.prior_lam",
    "bias_const": "bound.bias_const",
}


@dataclass(frozen=True, eq=False)
class StochasticHeadFile:
    """A read stochastic head: the mean ``(w, b)``, the scale ``S`` and the file's digest."""

    path: Path
    weight: np.ndarray  # (d,)
    bias: float
    scale: np.ndarray  # (d+1, d+1)
    sha256: str

    def mean_aug(self, bias_const: float) -> np.ndarray:
        """``m' = (w, b / c)`` in augmented coordinates."""
        return np.concatenate([self.weight, [self.bias / bias_const]])


def stochastic_head_payload(weight: np.ndarray, bias: float, scale: np.ndarray) -> bytes:
    """The safetensors bytes of a stochastic head (float64)."""
    import torch
    from safetensors.torch import save

    w = np.asarray(weight, dtype=np.float64).reshape(1, -1)
    s = np.asarray(scale, dtype=np.float64)
    state = {
        WEIGHT: torch.from_numpy(w.copy()),
        BIAS: torch.tensor([float(bias)], dtype=torch.float64),
        SCALE: torch.from_numpy(np.ascontiguousarray(s).copy()),
    }
    return save(state, metadata={"format": "tfbound stochastic head", "kind": KIND})


def read_stochastic_head(path: Path, feature_dim: int) -> StochasticHeadFile:
    """The stochastic head at ``path`` for features of dimension ``feature_dim``, or a one-line
    ``CheckpointError`` (wrong kind of file, other tensors or shapes, non-finite values)."""
    from tfbound.io.checkpoints import open_safetensors
    from tfbound.io.digest import sha256_file

    d = int(feature_dim)
    if path.is_symlink() or not path.is_file():
        raise CheckpointError("the stochastic head is not a regular file", path=path)
    if path.suffix.lower() != ".safetensors":
        raise CheckpointError(
            "a stochastic head must be a .safetensors file (tfbound fit-head --stochastic)",
            path=path,
        )
    want = {WEIGHT: (1, d), BIAS: (1,), SCALE: (d + 1, d + 1)}
    with open_safetensors(path) as reader:
        found = {name: shape for name, shape, _ in reader.entries()}
        dtypes = {name: dtype for name, _, dtype in reader.entries()}
        if set(found) != set(want):
            shown = ", ".join(sorted(found)[:6]) + (" ..." if len(found) > 6 else "")
            raise CheckpointError(
                f"a stochastic head holds exactly {', '.join(want)}; found: {shown}", path=path
            )
        for name, shape in want.items():
            if tuple(found[name]) != shape:
                raise CheckpointError(
                    f"{name} has shape {tuple(found[name])[:4]}, expected {shape} for "
                    f"{d}-dimensional features",
                    path=path,
                )
            if "F32" not in dtypes[name] and "F64" not in dtypes[name]:
                raise CheckpointError(f"{name} must be float32 or float64", path=path)
        arrays = {name: reader.get(name).double().numpy() for name in want}
    if not all(np.all(np.isfinite(a)) for a in arrays.values()):
        raise CheckpointError("the stochastic head has non-finite values", path=path)
    return StochasticHeadFile(
        path,
        arrays[WEIGHT].reshape(-1).copy(),
        float(arrays[BIAS].reshape(())),
        arrays[SCALE].copy(),
        sha256_file(path) or "",
    )


def record_mismatch(
    record: Mapping[str, Any] | None,
    bound: Any,
    *,
    n: int,
    data_sha256: str | None,
) -> str | None:
    """Why a stochastic head's record does not describe this configuration, or None when it
    does: written by tfbound fit-head for these bytes (``record`` is None otherwise), ``kind``
    stochastic, the same split, constants, ``n`` and training data."""
    if record is None:
        return (
            "it has no matching record (not written by tfbound fit-head --stochastic, or "
            "changed since)"
        )
    if record.get("kind") != KIND:
        return "its record is not of a stochastic head (kind: stochastic)"
    for key, option in MATCHED_FIELDS.items():
        mine = getattr(bound, option.split(".", 1)[1])
        theirs = record.get(key)
        if isinstance(theirs, bool) or not isinstance(theirs, int | float):
            return f"its record has no {key}"
        if isinstance(mine, int):  # the split seed: an exact integer, never via a float
            same = isinstance(theirs, int) and theirs == mine
        else:
            same = float(theirs) == float(mine)
        if not same:
            return f"its record's {key} is {theirs!r}, this configuration's {option} is {mine!r}"
    if record.get("n") != n:
        return f"its record's n is {record.get('n')!r}, the labeled split has {n} examples"
    if data_sha256 is None or record.get("data_sha256") != data_sha256:
        return "its record's data_sha256 is not the digest of this data.downstream_train"
    return None


def scale_mismatch(found: np.ndarray, expected: np.ndarray) -> float:
    """The relative Frobenius distance between the file's scale and ``diag(1, c) M^(-1/2)``."""
    den = float(np.linalg.norm(expected))
    return float(np.linalg.norm(found - expected)) / (den if den > 0 else 1.0)


#: the largest relative distance of the file's scale from the rebuilt one (float64 round-off of
#: the same computation on the same features is ~1e-15; other features are far above this)
SCALE_RTOL = 1e-6  # float32 against float64 features differ by about 4e-8


__all__ = [
    "BIAS",
    "KIND",
    "MATCHED_FIELDS",
    "SCALE",
    "SCALE_RTOL",
    "WEIGHT",
    "StochasticHeadFile",
    "read_stochastic_head",
    "record_mismatch",
    "scale_mismatch",
    "stochastic_head_payload",
]

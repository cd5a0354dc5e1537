"""The transfer configuration: the base ``tfbound.yaml`` plus a ``transfer:`` section.

Three ways to give it (paths resolve against the file they are written in):

- a standalone YAML file whose only top-level key is ``transfer:``, naming the base config in
  ``transfer.base`` (default: ``tfbound.yaml`` beside it);
- a ``tfbound.yaml`` with a ``transfer:`` section next to the usual ones;
- a folder: its ``transfer.yaml`` if present, else its ``tfbound.yaml`` (with or without a
  ``transfer:`` section; every key has a default, and the default family is weight perturbations
  of the configured encoder).

The section (every key optional)::

    transfer:
      base: tfbound.yaml
      family:
        include_base: true              # the configured encoder itself (scale 0)
        perturbations:                  # W + scale * rms(W) * N(0, I), per tensor, seeded
          scales: [0.05, 0.1, 0.2, 0.3, 0.5, 1.0]
          seeds: [0, 1, 2, 3, 4]        # each seed is one "run" (its scales share a direction)
        checkpoints:                    # pre-training checkpoints; the base encoder's architecture
          root: ../checkpoints/ce_mlp   # <root>/seed<k>/epoch<e>/encoder.safetensors, or a
          pipeline: ce_mlp              # root with an index.json of pipelines (default name:
                                        # the base config's folder)
          paths:                        # and/or an explicit list
            - {encoder: run0/ep10.safetensors, run: run0, epoch: 10}
      reference_fraction: 0.5           # of pretrain_val, to choose the reference member
      decoder_refit: {kind: ridge, ridge: 1.0e-3}   # or {kind: configured, steps: 300, lr: 0.01}
      probe: {radius: head, logistic_steps: 300, ramp_steps: 200}   # radius: head or a number
      heldout: downstream_test          # a labeled split name of data:, or {path, x, y}
      level: 0.95                       # of every interval
      fit: {beta: 0.5, noise_floor_z: 2.0, n_boot: 1000, beta_grid: [...]}
      heterogeneity: {enabled: true, n_permutations: 200, delta_tv: 0.05,
                      downstream: downstream_train, tv_upper: null}
      seed: 0
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tfbound.config import (
    CONFIG_FILENAME,
    ArraySource,
    Config,
    load_config,
    parse_config,
    reject_unknown,
)
from tfbound.errors import ConfigError, first_line, missing
from tfbound.measures.transfer_fit import DEFAULT_BETA_GRID
from tfbound.paths import relative_path
from tfbound.yaml_input import read_yaml_file

TRANSFER_FILENAME = "transfer.yaml"
DEFAULT_SCALES: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
DEFAULT_SEEDS: tuple[int, ...] = (0, 1, 2, 3, 4)


@dataclass(frozen=True)
class PerturbationSpec:
    scales: tuple[float, ...] = DEFAULT_SCALES
    seeds: tuple[int, ...] = DEFAULT_SEEDS


@dataclass(frozen=True)
class CheckpointEntry:
    encoder: Path
    run: str
    epoch: int | None = None


@dataclass(frozen=True)
class CheckpointSpec:
    roots: tuple[Path, ...] = ()
    paths: tuple[CheckpointEntry, ...] = ()
    #: Pipeline to read from an ``index.json`` listing several (default: the base folder's name).
    pipeline: str | None = None


@dataclass(frozen=True)
class FamilySpec:
    include_base: bool = True
    perturbations: PerturbationSpec | None = field(default_factory=PerturbationSpec)
    checkpoints: CheckpointSpec | None = None


@dataclass(frozen=True)
class DecoderRefitSpec:
    kind: str = "ridge"
    ridge: float = 1e-3
    steps: int = 300
    lr: float = 1e-2


@dataclass(frozen=True)
class ProbeSpec:
    #: ``None``: the configured head's own radius ``||(theta, b/c)||`` (read from its weights).
    radius: float | None = None
    logistic_steps: int = 300
    ramp_steps: int = 200


@dataclass(frozen=True)
class FitSpec:
    beta: float = 0.5
    noise_floor_z: float = 2.0
    n_boot: int = 1000
    beta_grid: tuple[float, ...] = DEFAULT_BETA_GRID


@dataclass(frozen=True)
class HeterogeneitySpec:
    enabled: bool = True
    n_permutations: int = 200
    delta_tv: float = 0.05
    downstream: str = "downstream_train"
    #: A user-supplied *upper* bound on TV(U, T) (status ``assumed``), or None.
    tv_upper: float | None = None


@dataclass(frozen=True)
class TransferConfig:
    path: Path
    base: Config
    family: FamilySpec = field(default_factory=FamilySpec)
    reference_fraction: float = 0.5
    decoder_refit: DecoderRefitSpec = field(default_factory=DecoderRefitSpec)
    probe: ProbeSpec = field(default_factory=ProbeSpec)
    heldout: ArraySource | None = None
    heldout_name: str = "downstream_test"
    level: float = 0.95
    fit: FitSpec = field(default_factory=FitSpec)
    heterogeneity: HeterogeneitySpec = field(default_factory=HeterogeneitySpec)
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The resolved transfer section as plain data (paths relative to this file's folder)."""
        base = self.path.parent
        fam: dict[str, Any] = {"include_base": self.family.include_base}
        if self.family.perturbations is not None:
            fam["perturbations"] = {
                "scales": list(self.family.perturbations.scales),
                "seeds": list(self.family.perturbations.seeds),
            }
        if self.family.checkpoints is not None:
            fam["checkpoints"] = {
                "roots": [relative_path(p, base) for p in self.family.checkpoints.roots],
                "pipeline": self.family.checkpoints.pipeline,
                "paths": [
                    {"encoder": relative_path(e.encoder, base), "run": e.run, "epoch": e.epoch}
                    for e in self.family.checkpoints.paths
                ],
            }
        refit: dict[str, Any] = {"kind": self.decoder_refit.kind}
        if self.decoder_refit.kind == "ridge":
            refit["ridge"] = self.decoder_refit.ridge
        else:
            refit.update(steps=self.decoder_refit.steps, lr=self.decoder_refit.lr)
        het = self.heterogeneity
        return {
            "base": relative_path(self.base.path, base),
            "family": fam,
            "reference_fraction": self.reference_fraction,
            "decoder_refit": refit,
            "probe": {
                "radius": "head" if self.probe.radius is None else self.probe.radius,
                "logistic_steps": self.probe.logistic_steps,
                "ramp_steps": self.probe.ramp_steps,
            },
            "heldout": self.heldout_name
            if self.heldout is None
            else self.heldout.to_dict(self.base.base),
            "level": self.level,
            "fit": {
                "beta": self.fit.beta,
                "noise_floor_z": self.fit.noise_floor_z,
                "n_boot": self.fit.n_boot,
                "beta_grid": list(self.fit.beta_grid),
            },
            "heterogeneity": {
                "enabled": het.enabled,
                "n_permutations": het.n_permutations,
                "delta_tv": het.delta_tv,
                "downstream": het.downstream,
                "tv_upper": het.tv_upper,
            },
            "seed": self.seed,
        }


def resolve_transfer_path(path: str | Path) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / TRANSFER_FILENAME if (p / TRANSFER_FILENAME).is_file() else p / CONFIG_FILENAME
    if not p.is_file():
        raise ConfigError(f"config file {missing(p)}", path=p)
    return p.resolve()


def load_transfer_config(
    path: str | Path, *, extra_checkpoint_roots: tuple[Path, ...] = ()
) -> TransferConfig:
    """Read a transfer config (see the module docstring); extra checkpoint roots are appended."""
    p = resolve_transfer_path(path)
    try:
        raw = read_yaml_file(p)
    except (yaml.YAMLError, UnicodeDecodeError, ValueError, OSError) as exc:
        raise ConfigError(first_line(f"not valid YAML: {exc}"), path=p) from exc
    if not isinstance(raw, dict):
        raise ConfigError("the top level must be a mapping", path=p)
    section = raw.get("transfer", {})
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise ConfigError("'transfer' must be a mapping", path=p)
    if set(raw) == {"transfer"}:
        base_path = section.get("base", CONFIG_FILENAME)
        if not isinstance(base_path, str):
            raise ConfigError("'transfer.base' must be a path string", path=p)
        base = load_config(p.parent / base_path)
    else:
        if "base" in section:
            raise ConfigError(
                "'transfer.base' is only for a standalone transfer file; this file is the base",
                path=p,
            )
        base = parse_config({k: v for k, v in raw.items() if k != "transfer"}, p)
    cfg = parse_transfer_section(section, p, base)
    if extra_checkpoint_roots:
        ck = cfg.family.checkpoints or CheckpointSpec()
        roots = (*ck.roots, *(r.resolve() for r in extra_checkpoint_roots))
        ck = CheckpointSpec(roots, ck.paths, ck.pipeline)
        cfg = _replace_family(
            cfg, FamilySpec(cfg.family.include_base, cfg.family.perturbations, ck)
        )
    return cfg


def _replace_family(cfg: TransferConfig, family: FamilySpec) -> TransferConfig:
    from dataclasses import replace

    return replace(cfg, family=family)


# ----------------------------------------------------------------------------- parsing helpers


def _mapping(raw: Any, where: str, path: Path) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(raw).__name__}", path=path)
    return raw


def _number(
    raw: Any,
    key: str,
    path: Path,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
) -> float:
    if not isinstance(raw, int | float) or isinstance(raw, bool) or not math.isfinite(raw):
        raise ConfigError(f"'{key}' must be a number, got {raw!r}", path=path)
    v = float(raw)
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise ConfigError(f"'{key}' is out of range: {raw!r}", path=path)
    if hi is not None and (v > hi or (hi_open and v == hi)):
        raise ConfigError(f"'{key}' is out of range: {raw!r}", path=path)
    return v


def _int(raw: Any, key: str, path: Path, *, lo: int = 0) -> int:
    if not isinstance(raw, int) or isinstance(raw, bool) or raw < lo:
        raise ConfigError(f"'{key}' must be an integer >= {lo}, got {raw!r}", path=path)
    return raw


def _bool(raw: Any, key: str, path: Path) -> bool:
    if not isinstance(raw, bool):
        raise ConfigError(f"'{key}' must be true or false, got {raw!r}", path=path)
    return raw


def _list(raw: Any, key: str, path: Path) -> list[Any]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"'{key}' must be a non-empty list, got {raw!r}", path=path)
    return raw


def parse_transfer_section(raw: Any, path: Path, base: Config) -> TransferConfig:
    """Validate the ``transfer:`` mapping; ``base`` is the already-parsed base config."""
    s = _mapping(raw, "'transfer'", path)
    reject_unknown(
        s,
        {
            "base",
            "family",
            "reference_fraction",
            "decoder_refit",
            "probe",
            "heldout",
            "level",
            "fit",
            "heterogeneity",
            "seed",
        },
        "'transfer'",
        path,
    )
    if base.pretext is None or base.decoder is None:
        raise ConfigError("transfer needs the base config's 'pretext' and 'decoder'", path=path)
    if base.data.pretrain_train is None or base.data.pretrain_val is None:
        raise ConfigError(
            "transfer needs 'data.pretrain_train' (decoder refit) and 'data.pretrain_val' "
            "(reference choice and E_U) in the base config",
            path=path,
        )
    family = _family(s.get("family"), path)
    heldout_raw = s.get("heldout", "downstream_test")
    heldout: ArraySource | None
    if isinstance(heldout_raw, str):
        if heldout_raw not in ("downstream_test", "downstream_train"):
            raise ConfigError(
                "'transfer.heldout' must be 'downstream_test' or a mapping {path, x, y}", path=path
            )
        if heldout_raw == "downstream_train":
            raise ConfigError(
                "'transfer.heldout' cannot be the probes' training split downstream_train",
                path=path,
            )
        heldout = base.data.downstream_test
        if heldout is None:
            raise ConfigError(
                "transfer needs held-out labeled downstream data: 'data.downstream_test' in the "
                "base config or 'transfer.heldout: {path, x, y}'",
                path=path,
            )
        heldout_name = heldout_raw
    else:
        h = _mapping(heldout_raw, "'transfer.heldout'", path)
        reject_unknown(h, {"path", "x", "y"}, "'transfer.heldout'", path)
        if not isinstance(h.get("path"), str):
            raise ConfigError("'transfer.heldout.path' must be a path string", path=path)
        heldout = ArraySource(
            (path.parent / h["path"]).resolve(), str(h.get("x", "x")), str(h.get("y", "y"))
        )
        heldout_name = "custom"
    return TransferConfig(
        path=path,
        base=base,
        family=family,
        reference_fraction=_number(
            s.get("reference_fraction", 0.5),
            "transfer.reference_fraction",
            path,
            lo=0.0,
            hi=1.0,
            lo_open=True,
            hi_open=True,
        ),
        decoder_refit=_refit(s.get("decoder_refit"), path),
        probe=_probe(s.get("probe"), path),
        heldout=heldout,
        heldout_name=heldout_name,
        level=_number(
            s.get("level", 0.95), "transfer.level", path, lo=0, hi=1, lo_open=True, hi_open=True
        ),
        fit=_fit(s.get("fit"), path),
        heterogeneity=_het(s.get("heterogeneity"), path),
        seed=_int(s.get("seed", 0), "transfer.seed", path),
    )


def _family(raw: Any, path: Path) -> FamilySpec:
    s = _mapping(raw, "'transfer.family'", path)
    reject_unknown(s, {"include_base", "perturbations", "checkpoints"}, "'transfer.family'", path)
    include_base = _bool(s.get("include_base", True), "transfer.family.include_base", path)
    pert: PerturbationSpec | None = PerturbationSpec()
    if "perturbations" in s:
        if s["perturbations"] is False or s["perturbations"] is None:
            pert = None
        else:
            p = _mapping(s["perturbations"], "'transfer.family.perturbations'", path)
            reject_unknown(p, {"scales", "seeds"}, "'transfer.family.perturbations'", path)
            scales = tuple(
                _number(v, "transfer.family.perturbations.scales", path, lo=0.0, lo_open=True)
                for v in _list(p.get("scales", list(DEFAULT_SCALES)), "scales", path)
            )
            seeds = tuple(
                _int(v, "transfer.family.perturbations.seeds", path)
                for v in _list(p.get("seeds", list(DEFAULT_SEEDS)), "seeds", path)
            )
            if len(set(seeds)) != len(seeds) or len(set(scales)) != len(scales):
                raise ConfigError("perturbation scales and seeds must not repeat", path=path)
            pert = PerturbationSpec(scales, seeds)
    ck: CheckpointSpec | None = None
    if s.get("checkpoints") is not None:
        c = _mapping(s["checkpoints"], "'transfer.family.checkpoints'", path)
        reject_unknown(
            c, {"root", "roots", "paths", "pipeline"}, "'transfer.family.checkpoints'", path
        )
        pipeline = c.get("pipeline")
        if pipeline is not None and not isinstance(pipeline, str):
            raise ConfigError("'transfer.family.checkpoints.pipeline' must be a string", path=path)
        roots_raw = c.get("roots", [])
        if "root" in c:
            roots_raw = [c["root"], *roots_raw]
        if not isinstance(roots_raw, list) or not all(isinstance(r, str) for r in roots_raw):
            raise ConfigError("checkpoint 'root'/'roots' must be path strings", path=path)
        entries = []
        for i, e in enumerate(c.get("paths", []) or []):
            if isinstance(e, str):
                e = {"encoder": e}
            em = _mapping(e, f"'transfer.family.checkpoints.paths[{i}]'", path)
            reject_unknown(em, {"encoder", "run", "epoch"}, f"checkpoints.paths[{i}]", path)
            if not isinstance(em.get("encoder"), str):
                raise ConfigError(f"checkpoints.paths[{i}].encoder must be a path", path=path)
            epoch = em.get("epoch")
            entries.append(
                CheckpointEntry(
                    (path.parent / em["encoder"]).resolve(),
                    str(em.get("run", "run0")),
                    None if epoch is None else _int(epoch, f"checkpoints.paths[{i}].epoch", path),
                )
            )
        ck = CheckpointSpec(
            tuple((path.parent / r).resolve() for r in roots_raw), tuple(entries), pipeline
        )
    return FamilySpec(include_base, pert, ck)


def _refit(raw: Any, path: Path) -> DecoderRefitSpec:
    s = _mapping(raw, "'transfer.decoder_refit'", path)
    reject_unknown(s, {"kind", "ridge", "steps", "lr"}, "'transfer.decoder_refit'", path)
    kind = s.get("kind", "ridge")
    if kind not in ("ridge", "configured"):
        raise ConfigError(
            f"'transfer.decoder_refit.kind' must be 'ridge' or 'configured', got {kind!r}",
            path=path,
        )
    return DecoderRefitSpec(
        kind=kind,
        ridge=_number(s.get("ridge", 1e-3), "transfer.decoder_refit.ridge", path, lo=0.0),
        steps=_int(s.get("steps", 300), "transfer.decoder_refit.steps", path, lo=1),
        lr=_number(s.get("lr", 1e-2), "transfer.decoder_refit.lr", path, lo=0, lo_open=True),
    )


def _probe(raw: Any, path: Path) -> ProbeSpec:
    s = _mapping(raw, "'transfer.probe'", path)
    reject_unknown(s, {"radius", "logistic_steps", "ramp_steps"}, "'transfer.probe'", path)
    r = s.get("radius", "head")
    radius = (
        None if r == "head" else _number(r, "transfer.probe.radius", path, lo=0.0, lo_open=True)
    )
    return ProbeSpec(
        radius=radius,
        logistic_steps=_int(s.get("logistic_steps", 300), "transfer.probe.logistic_steps", path),
        ramp_steps=_int(s.get("ramp_steps", 200), "transfer.probe.ramp_steps", path),
    )


def _fit(raw: Any, path: Path) -> FitSpec:
    s = _mapping(raw, "'transfer.fit'", path)
    reject_unknown(s, {"beta", "noise_floor_z", "n_boot", "beta_grid"}, "'transfer.fit'", path)
    grid = s.get("beta_grid")
    return FitSpec(
        beta=_number(s.get("beta", 0.5), "transfer.fit.beta", path, lo=0.0, lo_open=True),
        noise_floor_z=_number(
            s.get("noise_floor_z", 2.0), "transfer.fit.noise_floor_z", path, lo=0.0
        ),
        n_boot=_int(s.get("n_boot", 1000), "transfer.fit.n_boot", path),
        beta_grid=DEFAULT_BETA_GRID
        if grid is None
        else tuple(
            _number(v, "transfer.fit.beta_grid", path, lo=0.0)
            for v in _list(grid, "transfer.fit.beta_grid", path)
        ),
    )


def _het(raw: Any, path: Path) -> HeterogeneitySpec:
    s = _mapping(raw, "'transfer.heterogeneity'", path)
    reject_unknown(
        s,
        {"enabled", "n_permutations", "delta_tv", "downstream", "tv_upper"},
        "'transfer.heterogeneity'",
        path,
    )
    downstream = s.get("downstream", "downstream_train")
    if downstream not in ("downstream_train", "downstream_test"):
        raise ConfigError(
            "'transfer.heterogeneity.downstream' must be 'downstream_train' or 'downstream_test'",
            path=path,
        )
    tv_upper = s.get("tv_upper")
    return HeterogeneitySpec(
        enabled=_bool(s.get("enabled", True), "transfer.heterogeneity.enabled", path),
        n_permutations=_int(
            s.get("n_permutations", 200), "transfer.heterogeneity.n_permutations", path, lo=1
        ),
        delta_tv=_number(
            s.get("delta_tv", 0.05),
            "transfer.heterogeneity.delta_tv",
            path,
            lo=0,
            hi=1,
            lo_open=True,
            hi_open=True,
        ),
        downstream=downstream,
        tv_upper=None
        if tv_upper is None
        else _number(tv_upper, "transfer.heterogeneity.tv_upper", path, lo=0.0, hi=1.0),
    )


__all__ = [
    "CheckpointEntry",
    "CheckpointSpec",
    "DecoderRefitSpec",
    "FamilySpec",
    "FitSpec",
    "HeterogeneitySpec",
    "PerturbationSpec",
    "ProbeSpec",
    "TransferConfig",
    "load_transfer_config",
    "parse_transfer_section",
    "resolve_transfer_path",
]

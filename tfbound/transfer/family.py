"""The family of frozen representations ``h_j`` that (C, beta) is estimated over (bound-spec 6.2).

Members, in this order:

- ``base``: the configured encoder (run ``base``);
- ``perturb s=<scale> seed=<k>``: every floating-point tensor ``W`` of the base encoder replaced by
  ``W + scale * rms(W) * N(0, I)`` (``rms(W) = ||W||_F / sqrt(numel W)``; a tensor that is all
  zeros is left alone), the noise from ``torch.Generator().manual_seed(k)`` drawn tensor by tensor
  in ``state_dict`` order, so one seed is one direction and its scales one "run";
- ``ckpt <run> epoch <e>``: pre-training checkpoints loaded into the base encoder's architecture,
  from ``<root>/seed<k>/epoch<e>/encoder.safetensors`` (run ``seed<k>``), from an ``index.json``
  in ``<root>`` listing pipelines (the sample models' format), and from explicit paths.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tfbound.errors import ConfigError
from tfbound.io.checkpoints import load_module_weights
from tfbound.json_input import loads as bounded_json
from tfbound.paths import relative_path
from tfbound.transfer.config import CheckpointEntry, FamilySpec

_SEED_DIR = re.compile(r"^seed(\d+)$")
_EPOCH_DIR = re.compile(r"^epoch(\d+)$")


@dataclass(frozen=True)
class Member:
    """One family member: how to rebuild it and the run it belongs to."""

    name: str
    kind: str  # "base" | "perturbation" | "checkpoint"
    run: str
    scale: float | None = None
    seed: int | None = None
    epoch: int | None = None
    path: Path | None = None

    def describe(self, base: Path) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "run": self.run}
        if self.scale is not None:
            out["scale"] = self.scale
        if self.seed is not None:
            out["seed"] = self.seed
        if self.epoch is not None:
            out["epoch"] = self.epoch
        if self.path is not None:
            out["path"] = relative_path(self.path, base)
        return out


def _inside(folder: Path, name: str, where: Path) -> Path:
    """``folder / name`` resolved (links followed); ``ConfigError`` if it leaves ``folder``."""
    top = folder.resolve()
    target = (top / name).resolve()
    if Path(name).is_absolute() or not target.is_relative_to(top):
        raise ConfigError(
            f"refused: checkpoint {name[:200]!r} lies outside the index's folder {top}",
            path=where,
        )
    return target


def _from_index(index: Path, pipeline: str | None) -> list[CheckpointEntry]:
    """Entries of an ``index.json`` with ``pipelines: {name: {checkpoints: [...]}}`` (format 1)."""
    try:
        data = bounded_json(index.read_text(encoding="utf-8"))
        pipelines = data["pipelines"]
        if pipeline is None:
            if len(pipelines) != 1:
                raise ConfigError(
                    f"index.json lists pipelines {sorted(pipelines)}: name one "
                    "(transfer.family.checkpoints.pipeline)",
                    path=index,
                )
            pipeline = next(iter(pipelines))
        if pipeline not in pipelines:
            raise ConfigError(
                f"index.json has no pipeline {pipeline!r} (has: {', '.join(sorted(pipelines))})",
                path=index,
            )
        rows = pipelines[pipeline]["checkpoints"]
        entries = [
            CheckpointEntry(
                _inside(index.parent, str(r["encoder"]), index),
                f"seed{int(r['seed'])}",
                None if r.get("epoch") is None else int(r["epoch"]),
            )
            for r in rows
        ]
    except ConfigError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"unreadable checkpoint index: {exc}", path=index) from exc
    missing = [e.encoder for e in entries if not e.encoder.is_file()]
    if missing:
        raise ConfigError(f"index.json names a missing checkpoint: {missing[0]}", path=index)
    return sorted(entries, key=lambda e: (e.run, -1 if e.epoch is None else e.epoch))


def scan_checkpoint_root(root: Path, pipeline: str | None = None) -> list[CheckpointEntry]:
    """Checkpoints under ``root``, sorted by seed then epoch.

    ``root`` holds either ``seed<k>/epoch<e>/encoder.safetensors`` or an ``index.json`` listing
    pipelines (``pipelines.<name>.checkpoints[].{encoder, seed, epoch}``, paths relative to it);
    ``pipeline`` names the one to read (needed when the index lists several).
    """
    if not root.is_dir():
        raise ConfigError("checkpoint folder not found", path=root)
    if not any(_SEED_DIR.match(p.name) for p in root.iterdir()) and (root / "index.json").is_file():
        return _from_index(root / "index.json", pipeline)
    found: list[tuple[int, int, Path]] = []
    for seed_dir in root.iterdir():
        ms = _SEED_DIR.match(seed_dir.name)
        if not (ms and seed_dir.is_dir()):
            continue
        for epoch_dir in seed_dir.iterdir():
            me = _EPOCH_DIR.match(epoch_dir.name)
            enc = epoch_dir / "encoder.safetensors"
            if me and enc.is_file():
                rel = f"{seed_dir.name}/{epoch_dir.name}/encoder.safetensors"
                found.append((int(ms.group(1)), int(me.group(1)), _inside(root, rel, root)))
    if not found:
        raise ConfigError(
            "no checkpoints in the layout seed<k>/epoch<e>/encoder.safetensors", path=root
        )
    return [CheckpointEntry(p, f"seed{s}", e) for s, e, p in sorted(found)]


def build_members(spec: FamilySpec, pipeline: str | None = None) -> list[Member]:
    """The family's members in a fixed order (see the module docstring).

    ``pipeline``: the name to read from a checkpoint ``index.json`` listing several pipelines
    when the config names none (the base config's folder name).
    """
    members: list[Member] = []
    if spec.include_base:
        members.append(Member("base", "base", "base", scale=0.0))
    if spec.perturbations is not None:
        for seed in spec.perturbations.seeds:
            for scale in spec.perturbations.scales:
                members.append(
                    Member(
                        f"perturb s={scale:g} seed={seed}",
                        "perturbation",
                        f"perturb-seed{seed}",
                        scale=float(scale),
                        seed=int(seed),
                    )
                )
    if spec.checkpoints is not None:
        entries: list[CheckpointEntry] = []
        for root in spec.checkpoints.roots:
            entries += scan_checkpoint_root(root, spec.checkpoints.pipeline or pipeline)
        entries += list(spec.checkpoints.paths)
        for e in entries:
            label = f"ckpt {e.run}" + ("" if e.epoch is None else f" epoch {e.epoch}")
            members.append(Member(label, "checkpoint", e.run, epoch=e.epoch, path=e.encoder))
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError(f"the family lists some members twice: {', '.join(dup)}")
    if len(members) < 2:
        raise ConfigError("the family needs at least two members (a reference and one more)")
    return members


@torch.no_grad()
def perturbed(encoder: nn.Module, scale: float, seed: int) -> nn.Module:
    """A copy of ``encoder`` with ``W + scale * rms(W) * N(0, I)`` on every float tensor."""
    out = copy.deepcopy(encoder)
    gen = torch.Generator().manual_seed(seed)
    for _, tensor in out.state_dict(keep_vars=True).items():
        if not tensor.is_floating_point():
            continue
        noise = torch.randn(tensor.shape, generator=gen, dtype=torch.float64)
        rms = float(tensor.detach().to(torch.float64).pow(2).mean().sqrt())
        if rms > 0:
            tensor.add_((scale * rms * noise).to(tensor.dtype))
    return out.eval()


def materialise(member: Member, base_encoder: nn.Module) -> nn.Module:
    """The member's encoder in eval mode (the base encoder itself is returned, not copied)."""
    if member.kind == "base":
        return base_encoder.eval()
    if member.kind == "perturbation":
        assert member.scale is not None and member.seed is not None
        return perturbed(base_encoder, member.scale, member.seed)
    assert member.path is not None
    enc = copy.deepcopy(base_encoder)
    load_module_weights(enc, member.path, "encoder")
    return enc.eval()


def describe_family(members: list[Member], base: Path, spec: FamilySpec) -> dict[str, Any]:
    """What the report says about the family."""
    kinds: dict[str, int] = {}
    for m in members:
        kinds[m.kind] = kinds.get(m.kind, 0) + 1
    out: dict[str, Any] = {
        "n_members": len(members),
        "members_by_kind": kinds,
        "runs": sorted({m.run for m in members}),
    }
    if spec.perturbations is not None:
        out["perturbation"] = (
            "W + scale * rms(W) * N(0, I) per floating-point tensor of the base encoder, "
            "noise from torch.Generator().manual_seed(seed); one seed = one run"
        )
    if spec.checkpoints is not None:
        roots = []
        for r in spec.checkpoints.roots:
            index = next(
                (q for q in (r / "index.json", r.parent / "index.json") if q.is_file()), None
            )
            roots.append(
                {
                    "root": relative_path(r, base),
                    "index_json": None if index is None else relative_path(index, base),
                    "outside_config_folder": not r.resolve().is_relative_to(base.resolve()),
                }
            )
        out["checkpoint_roots"] = roots
    return out


__all__ = [
    "Member",
    "build_members",
    "describe_family",
    "materialise",
    "perturbed",
    "scan_checkpoint_root",
]

"""``run_transfer(config) -> TransferReport``: the family, E_U and E_T per member, the fit.

Data (bound-spec 6.2):

- the decoder is refitted on ``pretrain_train`` (features of the corrupted inputs, MAE masks from
  the pretext seed, as ``tfbound estimate`` draws them);
- ``pretrain_val`` (held out; masks from the pretext seed + 1) is split, seeded, into a
  *reference* part, on which the reference member (least refit pretext risk: the family's
  pre-training optimum) is chosen, and an *estimate* part, on which
  ``E_U(h_j) = risk_j - risk_ref`` is estimated (separate parts: no winner's curse);
- the probe is fitted on ``downstream_train`` and ``E_T(h_j) = risk_j - risk_ref`` is estimated
  on the held-out labeled split (``downstream_test`` unless configured).

Both are paired per-example differences with a normal interval at ``level``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tfbound.adapters.chain import mlp_chain
from tfbound.bounds.margin import linear_head_norm, relu_path_norm
from tfbound.bounds.transfer import transfer_base_terms, transfer_fit_terms, tv_upper_term
from tfbound.errors import ConfigError, DataError
from tfbound.features import Corruption, ProgressFn, encode
from tfbound.io.datasets import load_inputs, load_labeled
from tfbound.io.digest import sha256_file
from tfbound.measures.excess import ExcessEstimate, paired_excess
from tfbound.measures.network import Affine
from tfbound.measures.transfer_fit import TransferFit, fit_transfer
from tfbound.models.build import build_head, build_module, feature_dim_of
from tfbound.models.heads import LinearHead, MLPHead
from tfbound.pretext import pretext_task
from tfbound.transfer.config import TransferConfig, load_transfer_config
from tfbound.transfer.excess import (
    decoder_predict,
    fit_configured_decoder,
    fit_probe,
    fit_ridge_decoder,
    ramp_losses,
    ridge_predict,
)
from tfbound.transfer.family import build_members, describe_family, materialise
from tfbound.transfer.features import draw_masks, masked_pretext_losses
from tfbound.transfer.report import TransferReport


def _chain(head: nn.Module) -> list[Affine]:
    chain = mlp_chain(head)
    assert chain is not None
    return chain


def _excess_dict(e: ExcessEstimate) -> dict[str, Any]:
    return {"value": e.value, "stderr": e.stderr, "interval": list(e.interval), "m": e.m}


def run_transfer(
    config: TransferConfig | str | Path, *, progress: ProgressFn | None = None
) -> TransferReport:
    """Build the family of ``config``, estimate ``E_U`` and ``E_T`` per member, fit (C, beta)."""
    cfg = config if isinstance(config, TransferConfig) else load_transfer_config(config)
    base = cfg.base
    assert base.pretext is not None and base.decoder is not None
    assert base.data.pretrain_train is not None and base.data.pretrain_val is not None
    assert cfg.heldout is not None
    warnings: list[str] = []
    batch = base.bound.batch_size
    c = base.bound.bias_const

    pre_x = np.asarray(load_inputs(base.data.pretrain_train))
    val_x = np.asarray(load_inputs(base.data.pretrain_val))
    down = load_labeled(base.data.downstream_train)
    held = load_labeled(cfg.heldout)
    for name, arr in (("pretrain_train", pre_x), ("pretrain_val", val_x)):
        if not np.isfinite(arr).all():
            raise DataError(f"inputs of {name} contain NaN or Inf")

    encoder = build_module(base.encoder)
    d = feature_dim_of(encoder, torch.from_numpy(np.asarray(down.x[:1], dtype=np.float32)))
    head = build_head(base.head, d)
    if cfg.probe.radius is not None:
        radius, radius_source = cfg.probe.radius, "transfer.probe.radius (fixed in the config)"
    elif isinstance(head, LinearHead):
        radius = linear_head_norm(_chain(head)[0], c)
        radius_source = (
            "the configured head's ||(theta, b/c)|| (read from a head fitted on the labeled "
            "sample: not fixed in advance)"
        )
    else:
        assert isinstance(head, MLPHead)
        radius = relu_path_norm(_chain(head), c)
        radius_source = "the configured MLP head's path norm (the probe is a linear head)"
        warnings.append(
            "the head is an MLP: E_T uses a linear probe with radius the head's path norm"
        )
    task = pretext_task(base.pretext)
    box = base.pretext.box
    masks_tr = draw_masks(task, encoder, pre_x, base.pretext.seed)
    masks_va = draw_masks(task, encoder, val_x, base.pretext.seed + 1)
    for masks, name in ((masks_tr, "pretrain_train"), (masks_va, "pretrain_val")):
        counted = masks.targets[masks.mask > 0]
        if counted.size and (counted.min() < box[0] or counted.max() > box[1]):
            raise DataError(f"pretext targets of {name} leave the box [{box[0]}, {box[1]}]")

    n_val = val_x.shape[0]
    order = np.random.default_rng(cfg.seed).permutation(n_val)
    n_ref = int(round(cfg.reference_fraction * n_val))
    if not 2 <= n_ref <= n_val - 2:
        raise ConfigError(
            f"pretrain_val has {n_val} examples: too few to split into a reference part and an "
            "estimate part of at least 2 each",
            path=cfg.path,
        )
    ref_idx, est_idx = np.sort(order[:n_ref]), np.sort(order[n_ref:])

    members = build_members(cfg.family, base.path.parent.name)
    base_sha = sha256_file(base.encoder.weights)
    for member in members:
        if member.kind == "checkpoint" and base_sha and sha256_file(member.path) == base_sha:
            warnings.append(
                f"'{member.name}' has the configured encoder's weights (same file hash)"
            )
    pre_losses: list[np.ndarray] = []
    probe_losses: list[np.ndarray] = []
    probe_train: list[float] = []
    for j, member in enumerate(members):
        enc = materialise(member, encoder)
        z_tr = encode(enc, pre_x, batch, corruption=Corruption(task, masks_tr.keep))
        z_va = encode(enc, val_x, batch, corruption=Corruption(task, masks_va.keep))
        if cfg.decoder_refit.kind == "ridge":
            w = fit_ridge_decoder(z_tr, masks_tr.targets, masks_tr.mask, cfg.decoder_refit.ridge)
            pred = ridge_predict(z_va, w)
        else:
            dec = fit_configured_decoder(
                build_module(base.decoder),
                z_tr,
                masks_tr.targets,
                masks_tr.mask,
                steps=cfg.decoder_refit.steps,
                lr=cfg.decoder_refit.lr,
                seed=cfg.seed,
            )
            pred = decoder_predict(dec, z_va, masks_va.targets.shape)
        pre_losses.append(masked_pretext_losses(pred, masks_va, box))
        zd_tr = encode(enc, np.asarray(down.x), batch)
        zd_te = encode(enc, np.asarray(held.x), batch)
        probe = fit_probe(
            zd_tr,
            down.y,
            radius=radius,
            bias_const=c,
            logistic_steps=cfg.probe.logistic_steps,
            ramp_steps=cfg.probe.ramp_steps,
        )
        probe_losses.append(ramp_losses(probe.scores(zd_te), held.y))
        probe_train.append(probe.train_ramp_risk)
        if progress is not None:
            progress("family members", j + 1, len(members))

    ref = int(np.argmin([float(losses[ref_idx].mean()) for losses in pre_losses]))
    e_u = [paired_excess(pl[est_idx], pre_losses[ref][est_idx], cfg.level) for pl in pre_losses]
    e_t = [paired_excess(pl, probe_losses[ref], cfg.level) for pl in probe_losses]
    others = [j for j in range(len(members)) if j != ref]
    fit = fit_transfer(
        [e_u[j].value for j in others],
        [e_t[j].value for j in others],
        e_u_se=[e_u[j].stderr for j in others],
        e_t_se=[e_t[j].stderr for j in others],
        runs=[members[j].run for j in others],
        beta_fixed=cfg.fit.beta,
        beta_grid=cfg.fit.beta_grid,
        noise_floor_z=cfg.fit.noise_floor_z,
        level=cfg.level,
        n_boot=cfg.fit.n_boot,
        seed=cfg.seed,
    )
    warnings += list(fit.warnings)
    if ref != 0 or members[0].kind != "base":
        warnings.append(
            f"the reference (least refit pretext risk on the reference part) is "
            f"'{members[ref].name}', not the configured encoder"
        )

    used_of = {j: fit.used[i] for i, j in enumerate(others)}
    member_rows = []
    for j, member in enumerate(members):
        row = member.describe(cfg.path.parent)
        left_out = None
        if j == ref:
            left_out = "reference"
        elif not used_of[j]:
            left_out = (
                "not positive"
                if e_u[j].value <= 0 or e_t[j].value <= 0
                else "inside the noise floor"
            )
        row.update(
            pretext_risk_reference_part=float(pre_losses[j][ref_idx].mean()),
            pretext_risk_estimate_part=float(pre_losses[j][est_idx].mean()),
            probe_train_risk=probe_train[j],
            probe_heldout_risk=float(probe_losses[j].mean()),
            e_u=_excess_dict(e_u[j]),
            e_t=_excess_dict(e_t[j]),
            reference=j == ref,
            used_in_fit=bool(used_of.get(j, False)),
            left_out=left_out,
        )
        member_rows.append(row)

    fit_dict = _fit_dict(fit, [members[j].name for j in others])
    terms = transfer_fit_terms(fit, cfg.level)
    base_j = next((j for j, m in enumerate(members) if m.kind == "base"), None)
    if base_j is not None:
        terms += transfer_base_terms(e_u[base_j], e_t[base_j], fit, cfg.level, base_j == ref)
    if cfg.heterogeneity.tv_upper is not None:
        terms.append(tv_upper_term(cfg.heterogeneity.tv_upper))
    if cfg.heterogeneity.enabled:
        from tfbound.transfer.heterogeneity import heterogeneity_terms  # imports transfer.features

        if cfg.heterogeneity.downstream == "downstream_train":
            het_x = np.asarray(down.x)
        elif base.data.downstream_test is not None:
            het_x = np.asarray(load_inputs(base.data.downstream_test))
        else:
            het_x = np.asarray(held.x)
        terms += heterogeneity_terms(
            encoder,
            task,
            val_x,
            het_x,
            delta_tv=cfg.heterogeneity.delta_tv,
            n_permutations=cfg.heterogeneity.n_permutations,
            seed=cfg.seed,
            mask_seed=base.pretext.seed + 1,
            batch_size=batch,
            labels=("pretrain_val", cfg.heterogeneity.downstream),
        )

    transfer_meta = {
        "probe_radius": radius,
        "probe_radius_source": radius_source,
        "probe_loss": "ramp phi_1(y f), f linear with ||(theta, b/c)|| <= probe_radius",
        "bias_const": c,
        "level": cfg.level,
        "beta_fixed": cfg.fit.beta,
        "decoder_refit": cfg.decoder_refit.kind,
        "base_encoder_sha256": base_sha,
        "pretext": base.pretext.kind,
        "pretext_box": list(box),
        "pretext_D": masks_va.n_counted,
    }
    data = {
        "pretrain_train": {"n_pretrain": int(pre_x.shape[0]), "use": "decoder refit"},
        "pretrain_val": {
            "n_pretrain_val": int(n_val),
            "reference_part": int(ref_idx.size),
            "estimate_part": int(est_idx.size),
            "use": "reference choice (reference part) and E_U (estimate part)",
        },
        "downstream_train": {"n": int(down.y.size), "use": "probe fit"},
        "heldout": {"name": cfg.heldout_name, "m": int(held.y.size), "use": "E_T"},
    }
    reference = {
        "name": members[ref].name,
        "index": ref,
        "chosen_on": f"pretrain_val reference part ({ref_idx.size} examples): least refit "
        "pretext risk",
        "pretext_risk_estimate_part": float(pre_losses[ref][est_idx].mean()),
        "probe_heldout_risk": float(probe_losses[ref].mean()),
    }
    family = describe_family(members, cfg.path.parent, cfg.family)
    warnings += [
        f"checkpoint root {str(r['root'])[:200]} lies outside the transfer config's folder "
        "(its weights come from elsewhere in the checkout)"
        for r in family.get("checkpoint_roots", [])
        if r["outside_config_folder"]
    ]
    return TransferReport(
        config=base.to_dict(),
        transfer={**cfg.to_dict(), **transfer_meta},
        family=family,
        data=data,
        reference=reference,
        members=tuple(member_rows),
        fit=fit_dict,
        terms=tuple(terms),
        warnings=tuple(warnings),
    )


def _fit_dict(fit: TransferFit, names: list[str]) -> dict[str, Any]:
    consistent_half = (
        None
        if fit.beta_interval is None
        else bool(fit.beta_interval[0] <= 0.5 <= fit.beta_interval[1])
    )
    return {
        "method": fit.method,
        "error_ratio": fit.error_ratio,
        "beta": fit.beta,
        "beta_interval": None if fit.beta_interval is None else list(fit.beta_interval),
        "c": fit.c,
        "c_interval": None if fit.c_interval is None else list(fit.c_interval),
        "level": fit.level,
        "beta_interval_contains_half": consistent_half,
        "identifiable": fit.identifiable,
        "e_u_span_decades": fit.e_u_span_decades,
        "n_points": fit.n_points,
        "n_used": fit.n_used,
        "left_out": dict(fit.excluded),
        "noise_floor_z": fit.noise_floor_z,
        "bootstrap": {
            "unit": fit.bootstrap_unit,
            "n_units": fit.n_units,
            "n_boot": fit.n_boot,
            "n_boot_valid": fit.n_boot_valid,
        },
        "beta_fixed": fit.beta_fixed,
        "c_envelope": fit.c_envelope,
        "envelope_member": None if fit.envelope_member is None else names[fit.envelope_member],
        "envelope_grid": [[b, c] for b, c in fit.envelope_grid],
        "c_envelope_all_positive": fit.c_envelope_all_positive,
        "n_left_out_above_envelope": fit.n_left_out_above_envelope,
        "sensitivity": [
            {"noise_floor_z": r.noise_floor_z, "n_used": r.n_used, "beta": r.beta}
            for r in fit.sensitivity
        ],
    }


__all__ = ["ProgressFn", "pretext_task", "run_transfer"]

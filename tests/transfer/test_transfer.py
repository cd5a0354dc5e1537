"""Transfer (bound-spec 6.2): the (C, beta) fit, the envelope, the family, E_U/E_T, the CLI."""

from __future__ import annotations

import builtins
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file
from typer.testing import CliRunner

from tests.helpers import REPO_ROOT
from tests.tolerances import FLOAT64_EXACT, FLOAT64_SOLVER, ITERATIVE
from tfbound.cli import app
from tfbound.config import load_config
from tfbound.errors import ConfigError
from tfbound.measures.excess import paired_excess
from tfbound.measures.transfer_fit import deming_slope, envelope_c
from tfbound.models.build import build_module
from tfbound.transfer import fit_transfer, load_transfer_config, run_transfer
from tfbound.transfer.config import FamilySpec, PerturbationSpec
from tfbound.transfer.excess import (
    fit_probe,
    fit_ridge_decoder,
    ramp_losses,
    ridge_predict,
)
from tfbound.transfer.family import build_members, perturbed, scan_checkpoint_root
from tfbound.transfer.features import PretextTargets, masked_pretext_losses

runner = CliRunner()

# ----------------------------------------------------------------------------- the fit


def synthetic_family(
    seed: int,
    *,
    c: float = 0.7,
    beta: float = 0.6,
    n_runs: int = 8,
    per_run: int = 4,
    decades: float = 2.5,
    noise: float = 0.1,
) -> dict[str, Any]:
    """A power law E_T = c E_U^beta observed with multiplicative noise in both variables."""
    rng = np.random.default_rng(seed)
    n = n_runs * per_run
    eu_true = 10 ** rng.uniform(-3.0, -3.0 + decades, n)
    et_true = c * eu_true**beta
    return {
        "e_u": eu_true * np.exp(rng.normal(0.0, noise, n)),
        "e_t": et_true * np.exp(rng.normal(0.0, noise, n)),
        "e_u_se": noise * eu_true,
        "e_t_se": noise * et_true,
        "runs": [f"run{i}" for i in np.repeat(np.arange(n_runs), per_run)],
    }


def test_fit_transfer_recovers_beta_and_c_in_90_of_100_trials() -> None:
    beta_hits = c_hits = 0
    errors = []
    for seed in range(100):
        fam = synthetic_family(seed)
        fit = fit_transfer(**fam, n_boot=300, seed=seed, level=0.95)
        assert fit.beta_interval is not None and fit.c_interval is not None
        assert fit.bootstrap_unit == "run" and fit.n_units == 8
        beta_hits += fit.beta_interval[0] <= 0.6 <= fit.beta_interval[1]
        c_hits += fit.c_interval[0] <= 0.7 <= fit.c_interval[1]
        assert fit.beta is not None
        errors.append(fit.beta - 0.6)
    assert beta_hits >= 90
    assert c_hits >= 85
    assert abs(float(np.median(errors))) < 0.02


def test_fit_transfer_without_errors_or_runs_is_total_least_squares() -> None:
    fam = synthetic_family(7, noise=0.05)
    fit = fit_transfer(fam["e_u"], fam["e_t"], n_boot=200)
    assert fit.error_ratio == 1.0 and "total least squares" in fit.method
    assert fit.bootstrap_unit == "point" and fit.n_units == len(fam["e_u"])
    x, y = np.log(fam["e_u"]), np.log(fam["e_t"])
    # TLS slope: the principal direction of the centred cloud
    _, _, vt = np.linalg.svd(np.stack([x - x.mean(), y - y.mean()], 1))
    assert fit.beta == pytest.approx(vt[0, 1] / vt[0, 0], rel=FLOAT64_SOLVER)
    assert fit.c == pytest.approx(math.exp(y.mean() - fit.beta * x.mean()), rel=FLOAT64_SOLVER)


def test_deming_slope_limits() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    y = 2.0 * x + rng.normal(0, 0.5, 50)
    ols = np.cov(x, y, bias=True)[0, 1] / np.var(x)
    assert float(deming_slope(x, y, 1e12)[0]) == pytest.approx(ols, rel=ITERATIVE)
    assert math.isnan(float(deming_slope(np.ones(5), np.arange(5.0))[0]))  # s_xx = 0


def test_envelope_dominates_every_member_used() -> None:
    for seed in range(20):
        fam = synthetic_family(seed, noise=0.3)
        fit = fit_transfer(**fam, n_boot=50, seed=seed, beta_fixed=0.5)
        assert fit.c_envelope is not None
        eu, et = fam["e_u"], fam["e_t"]
        used = np.array(fit.used)
        assert np.all(et[used] <= fit.c_envelope * eu[used] ** 0.5 * (1 + FLOAT64_EXACT))
        j = fit.envelope_member
        assert j is not None and et[j] == pytest.approx(fit.c_envelope * eu[j] ** 0.5)
        for b, c in fit.envelope_grid:  # every grid point dominates too
            assert np.all(et[used] <= c * eu[used] ** b * (1 + FLOAT64_EXACT))
    c_all, _ = envelope_c(np.array([0.1, 0.01, -1.0]), np.array([0.2, 0.05, 3.0]), 0.5)
    assert c_all == pytest.approx(max(0.2 / 0.1**0.5, 0.05 / 0.01**0.5))


def test_noise_floor_points_are_left_out_counted_and_the_rule_is_varied() -> None:
    e_u = np.array([1e-3, 2e-3, 1e-2, 3e-2, 1e-1, 1e-4, -1e-3])
    e_t = 0.5 * np.sqrt(np.abs(e_u))
    se_u = np.array([1e-4, 1e-4, 1e-3, 1e-3, 1e-2, 1e-4, 1e-4])  # 1e-4 +- 1e-4: noise floor
    fit = fit_transfer(e_u, e_t, e_u_se=se_u, e_t_se=0.01 * e_t, n_boot=100)
    assert dict(fit.excluded) == {"inside_noise_floor": 1, "not_positive": 1}
    assert fit.used == (True, True, True, True, True, False, False)
    assert fit.beta == pytest.approx(0.5, abs=ITERATIVE)
    z_rows = {r.noise_floor_z: r for r in fit.sensitivity}
    assert set(z_rows) == {0.0, 1.0, 2.0, 3.0}
    assert z_rows[0.0].n_used == 6 and z_rows[2.0].n_used == 5


def test_narrow_e_u_span_is_flagged_not_identifiable() -> None:
    rng = np.random.default_rng(0)
    e_u = np.linspace(0.01, 0.05, 10)
    fit = fit_transfer(e_u, e_u**0.5 * np.exp(rng.normal(0, 0.01, 10)), n_boot=50)
    assert not fit.identifiable and fit.e_u_span_decades is not None
    assert fit.e_u_span_decades < 1
    assert any("not identifiable" in w for w in fit.warnings)
    few = fit_transfer([0.1, 0.2], [0.1, 0.2], n_boot=10)
    assert few.beta is None and any("no fit" in w for w in few.warnings)


def test_fit_transfer_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        fit_transfer([0.1, 0.2], [0.1])
    with pytest.raises(ValueError):
        fit_transfer([0.1, float("nan")], [0.1, 0.2])
    with pytest.raises(ValueError):
        fit_transfer([0.1, 0.2], [0.1, 0.2], runs=["a"])


# ----------------------------------------------------------------------------- estimators


def test_paired_excess_and_ridge_decoder() -> None:
    e = paired_excess(np.array([1.0, 2.0, 4.0]), np.array([1.0, 1.0, 1.0]), 0.95)
    assert e.value == pytest.approx(4 / 3) and e.m == 3
    assert e.interval[1] - e.value == pytest.approx(1.959964 * e.stderr, rel=ITERATIVE)
    rng = np.random.default_rng(0)
    z = rng.normal(size=(40, 3))
    t = z @ rng.normal(size=(3, 2)) + 0.5
    w = fit_ridge_decoder(z, t, np.ones_like(t), ridge=0.0)
    assert np.allclose(ridge_predict(z, w), t, atol=FLOAT64_SOLVER)  # exact affine fit
    mask = np.zeros_like(t)
    mask[:, 1] = 1.0  # only column 1 counted
    losses = masked_pretext_losses(np.full_like(t, 2.0), PretextTargets(t, mask, None), (0.0, 1.0))
    assert losses == pytest.approx((np.clip(2.0, 0, 1) - t[:, 1]) ** 2)


def test_probe_stays_in_its_ball_and_fits_separable_data() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(200, 4))
    y = np.sign(z[:, 0] + 0.1)
    for radius in (0.5, 50.0):
        probe = fit_probe(z, y, radius=radius, bias_const=2.0, logistic_steps=150, ramp_steps=50)
        norm = math.sqrt(float(probe.theta @ probe.theta) + (probe.bias / 2.0) ** 2)
        assert norm <= radius * (1 + 1e-9)
        risk = float(ramp_losses(probe.scores(z), y).mean())
        assert risk == pytest.approx(probe.train_ramp_risk)
    assert probe.train_ramp_risk < 0.05  # at radius 50 the data are separated with margin


# ----------------------------------------------------------------------------- the family


def test_perturbation_is_seeded_relative_and_leaves_the_encoder_alone(tiny: Path) -> None:
    encoder = build_module(load_config(tiny).encoder)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    a, b = perturbed(encoder, 0.1, 3), perturbed(encoder, 0.1, 3)
    for k, v in encoder.state_dict().items():
        assert torch.equal(v, before[k])
        assert torch.equal(a.state_dict()[k], b.state_dict()[k])
        rms = float(v.pow(2).mean().sqrt())
        if rms > 0:
            rel = float((a.state_dict()[k] - v).pow(2).mean().sqrt()) / rms
            assert 0.03 < rel < 0.3  # scale 0.1 of the tensor's rms
    assert not a.training
    members = build_members(FamilySpec(True, PerturbationSpec((0.1, 1.0), (0, 1)), None))
    assert [m.name for m in members][:3] == ["base", "perturb s=0.1 seed=0", "perturb s=1 seed=0"]
    assert {m.run for m in members} == {"base", "perturb-seed0", "perturb-seed1"}


def write_checkpoints(tiny: Path, root: Path) -> None:
    """seed<k>/epoch<e>/encoder.safetensors: the tiny encoder shrunk toward zero (early epochs)."""
    encoder = build_module(load_config(tiny).encoder)
    for seed in (0, 1):
        for epoch in (1, 4, 16):
            folder = root / f"seed{seed}" / f"epoch{epoch}"
            folder.mkdir(parents=True)
            state = perturbed(encoder, 0.5 / epoch, 10 + seed).state_dict()
            save_file(
                {k: v.contiguous() for k, v in state.items()}, str(folder / "encoder.safetensors")
            )
    (root / "index.json").write_text("{}")


def test_checkpoint_layout_is_scanned_in_order(tiny: Path, tmp_path: Path) -> None:
    write_checkpoints(tiny, tmp_path / "ck")
    entries = scan_checkpoint_root(tmp_path / "ck")
    assert [(e.run, e.epoch) for e in entries] == [
        ("seed0", 1),
        ("seed0", 4),
        ("seed0", 16),
        ("seed1", 1),
        ("seed1", 4),
        ("seed1", 16),
    ]
    with pytest.raises(ConfigError, match="no checkpoints"):
        scan_checkpoint_root(tmp_path)


# ----------------------------------------------------------------------------- end to end


def write_transfer_yaml(tiny: Path, **section: Any) -> Path:
    transfer = {
        "family": {"perturbations": {"scales": [0.1, 0.3, 1.0], "seeds": [0, 1]}},
        "probe": {"logistic_steps": 100, "ramp_steps": 50},
        "fit": {"n_boot": 100},
        "heterogeneity": {"n_permutations": 20},
        **section,
    }
    path = tiny.parent / "transfer.yaml"
    path.write_text(yaml.safe_dump({"transfer": {"base": "tfbound.yaml", **transfer}}))
    return path


def test_run_transfer_end_to_end(tiny: Path) -> None:
    path = write_transfer_yaml(tiny)
    report = run_transfer(path)
    data = report.to_dict()
    assert data["kind"] == "transfer"
    assert data["family"]["n_members"] == 7
    assert [m["name"] for m in data["members"]][0] == "base"
    refs = [m for m in data["members"] if m["reference"]]
    assert len(refs) == 1 and refs[0]["e_u"]["value"] == 0.0 and refs[0]["e_t"]["value"] == 0.0
    assert data["reference"]["name"] == refs[0]["name"]
    pv = data["data"]["pretrain_val"]
    assert pv["reference_part"] + pv["estimate_part"] == pv["n_pretrain_val"] == 40
    for m in data["members"]:
        lo, hi = m["e_u"]["interval"]
        assert lo <= m["e_u"]["value"] <= hi
        assert m["used_in_fit"] == (m["left_out"] is None)
    assert data["fit"]["n_points"] == 6
    assert sum(data["fit"]["left_out"].values()) + data["fit"]["n_used"] == 6
    keys = set(data["terms"])
    assert {"transfer_beta", "transfer_c", "transfer_c_envelope", "transfer_e_u_base"} <= keys
    assert {"tv_lower_bound_inputs", "mmd2_unbiased_features"} <= keys
    assert data["transfer"]["base_encoder_sha256"]
    # deterministic
    assert run_transfer(path).to_dict() == data


def test_transfer_cli_json_markdown_and_plot(tiny: Path, tmp_path: Path) -> None:
    write_transfer_yaml(tiny)
    j, md, png = tmp_path / "t.json", tmp_path / "t.md", tmp_path / "t.png"
    result = runner.invoke(
        app,
        ["transfer", str(tiny.parent), "-q", "--json", str(j), "--markdown", str(md)]
        + ["--plot", str(png), "--format", "json"],
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == json.loads(j.read_text())
    assert md.read_text().startswith("## tfbound transfer")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = runner.invoke(app, ["transfer", str(tiny.parent), "-q"], terminal_width=120)
    assert table.exit_code == 0
    assert "members" in table.stdout and "beta =" in table.stdout


def test_transfer_cli_without_matplotlib_exits_3(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_transfer_yaml(tiny)
    real_import = builtins.__import__

    def no_matplotlib(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    result = runner.invoke(app, ["transfer", str(tiny.parent), "--plot", str(tmp_path / "x.png")])
    assert result.exit_code == 3
    assert "matplotlib" in result.stderr


def test_transfer_config_errors_exit_3(tiny: Path) -> None:
    path = write_transfer_yaml(tiny, bogus=1)
    result = runner.invoke(app, ["transfer", str(path), "-q"])
    assert result.exit_code == 3 and "bogus" in result.stderr
    raw = yaml.safe_load(tiny.read_text())
    del raw["pretext"], raw["decoder"]
    raw["data"].pop("pretrain_train"), raw["data"].pop("pretrain_val")
    tiny.write_text(yaml.safe_dump(raw))
    path = write_transfer_yaml(tiny)
    result = runner.invoke(app, ["transfer", str(path), "-q"])
    assert result.exit_code == 3 and "pretext" in result.stderr


def test_transfer_section_inside_tfbound_yaml(tiny: Path) -> None:
    raw = yaml.safe_load(tiny.read_text())
    raw["transfer"] = {
        "family": {"perturbations": {"scales": [0.5], "seeds": [0, 1]}},
        "heterogeneity": {"enabled": False},
        "fit": {"n_boot": 10},
        "probe": {"radius": 2.0},
    }
    tiny.write_text(yaml.safe_dump(raw))
    cfg = load_transfer_config(tiny.parent)  # no transfer.yaml: the tfbound.yaml's section
    assert cfg.probe.radius == 2.0 and cfg.family.perturbations is not None
    data = run_transfer(cfg).to_dict()
    assert data["transfer"]["probe_radius"] == 2.0
    assert not any(k.startswith("tv_") for k in data["terms"])


def test_checkpoint_index_json_of_pipelines(tiny: Path, tmp_path: Path) -> None:
    """The sample models' format: <root>/index.json with pipelines.<name>.checkpoints[]."""
    root = tmp_path / "checkpoints"
    write_checkpoints(tiny, root / "tiny")
    rows = [
        {"encoder": f"tiny/seed{s}/epoch{e}/encoder.safetensors", "seed": s, "epoch": e}
        for s in (1, 0)
        for e in (16, 1, 4)
    ]
    index = {"format": 1, "pipelines": {"tiny": {"checkpoints": rows}, "other": {}}}
    (root / "index.json").write_text(json.dumps(index))
    with pytest.raises(ConfigError, match="name one"):
        scan_checkpoint_root(root)
    entries = scan_checkpoint_root(root, "tiny")
    assert [(e.run, e.epoch) for e in entries][:3] == [("seed0", 1), ("seed0", 4), ("seed0", 16)]
    # the CLI names the pipeline after the base config's folder ("tiny")
    write_transfer_yaml(tiny, family={"perturbations": False}, heterogeneity={"enabled": False})
    result = runner.invoke(
        app, ["transfer", str(tiny.parent), "-q", "-f", "json", "--checkpoints", str(root)]
    )
    assert result.exit_code == 0, result.stderr
    assert len(json.loads(result.stdout)["members"]) == 7


def test_checkpoint_family_from_the_cli(tiny: Path, tmp_path: Path) -> None:
    write_checkpoints(tiny, tmp_path / "ck")
    write_transfer_yaml(tiny, family={"perturbations": False}, heterogeneity={"enabled": False})
    result = runner.invoke(
        app,
        ["transfer", str(tiny.parent), "-q", "-f", "json", "--checkpoints", str(tmp_path / "ck")],
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    names = [m["name"] for m in data["members"]]
    assert names[:2] == ["base", "ckpt seed0 epoch 1"] and len(names) == 7
    root = data["family"]["checkpoint_roots"][0]
    assert root["index_json"].endswith("index.json") and not root["index_json"].startswith("/")
    assert root["root"] == "../ck" and root["outside_config_folder"] is True
    assert any("lies outside the transfer config's folder" in w for w in data["warnings"])
    assert data["fit"]["bootstrap"]["unit"] in ("run", "point")


SAMPLES = REPO_ROOT / "sample_models"


@pytest.mark.skipif(
    not (SAMPLES / "checkpoints" / "index.json").is_file(), reason="no sample checkpoints"
)
def test_sample_ce_mlp_e_u_decreases_along_the_checkpoints(tmp_path: Path) -> None:
    from scipy.stats import spearmanr

    path = tmp_path / "transfer.yaml"
    section = {
        "base": str(SAMPLES / "ce_mlp" / "tfbound.yaml"),
        "family": {
            "include_base": False,
            "perturbations": False,
            "checkpoints": {"root": str(SAMPLES / "checkpoints")},
        },
        "probe": {"logistic_steps": 50, "ramp_steps": 0},
        "fit": {"n_boot": 50},
        "heterogeneity": {"enabled": False},
    }
    path.write_text(yaml.safe_dump({"transfer": section}))
    members = run_transfer(path).to_dict()["members"]
    for seed in ("seed0", "seed1"):
        rows = sorted((m["epoch"], m["e_u"]["value"]) for m in members if m["run"] == seed)
        epochs, e_u = zip(*rows, strict=True)
        assert spearmanr(epochs, e_u).statistic < -0.7
        late = [v for e, v in rows if e >= 8]  # after the first few epochs: monotone
        assert all(a >= b - 1e-4 for a, b in zip(late, late[1:], strict=False))
        assert rows[-1][1] < 0.5 * rows[0][1]

"""``--capacity {full,fast,off}`` and the progress phases of ``estimate``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, run_cli
from tfbound.errors import UsageError
from tfbound.keys import Role
from tfbound.pipeline import estimate


def _certificates(data: dict) -> dict:
    return {k: t["value"] for k, t in data["bounds"].items()}


def test_off_leaves_out_the_capacity_stage_and_no_certificate_moves(tiny: Path) -> None:
    full = estimate(tiny).to_dict()
    off = estimate(tiny, capacity="off").to_dict()
    assert _certificates(off) == _certificates(full)
    assert "grs_complexity" in full["terms"] and "grs_complexity" not in off["terms"]
    assert any("--capacity off" in w for w in off["warnings"])
    kept = {k for k, t in off["terms"].items() if t["role"] != Role.CAPACITY}
    assert kept == {k for k, t in full["terms"].items() if t["role"] != Role.CAPACITY}
    # an MLP has no per-layer norm pass to skip: fast is full
    assert estimate(tiny, capacity="fast").to_dict()["terms"] == full["terms"]
    with pytest.raises(UsageError):
        estimate(tiny, capacity="quick")


def test_fast_skips_a_transformers_norm_pass_and_keeps_its_feature_norm() -> None:
    sample = REPO_ROOT / "sample_models" / "mae_vit"
    fast = estimate(sample, capacity="fast").to_dict()
    full = estimate(sample).to_dict()
    assert "attention_qk_spectral_max" in full["terms"]
    assert "attention_qk_spectral_max" not in fast["terms"]
    assert "transformer_capacity_tt" not in fast["terms"]
    assert fast["terms"]["feature_norm"] == full["terms"]["feature_norm"]
    assert _certificates(fast) == _certificates(full)


def test_every_long_phase_reports_progress_and_a_pipe_gets_none(tiny: Path) -> None:
    seen: dict[str, tuple[int, int]] = {}
    estimate(tiny, progress=lambda task, done, total: seen.__setitem__(task, (done, total)))
    phases = {t.split(" (")[0] for t in seen}
    assert "PAC-Bayes and disagreement certificates" in phases  # signs are drawn in the pass
    assert "capacity norms" in phases and "features" in phases
    assert all(done == total for done, total in seen.values())  # each phase ran to its end
    code, out, err = run_cli("estimate", str(tiny), "-f", "json")
    assert code == 0 and out.startswith("{") and err == ""  # stderr is not a terminal here

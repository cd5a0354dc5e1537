"""The figures of ``inspect --plot``, ``compare --plot`` and ``transfer --plot``: valid PNGs read
back at their size, one row per layer, only the changed terms, the vacuous ones labelled, the
headline framed; and the CLI options end to end (a bad suffix is a usage error, exit 2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO_ROOT
from tests.helpers import run_cli as run
from tests.report.test_plot import report

pytest.importorskip("matplotlib")

import matplotlib  # noqa: E402

matplotlib.use("Agg", force=True)
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

MAE = REPO_ROOT / "sample_models" / "mae_vit"


def check_png(path: Path) -> tuple[int, int]:
    """A PNG that matplotlib reads back at the size its header states: (width, height)."""
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert mpimg.imread(path).shape[:2] == (height, width)
    return width, height


@pytest.fixture(scope="module")
def mae_inspect() -> Any:
    from tfbound.pipeline.inspect_config import inspect_config

    return inspect_config(MAE, None, None, False, "exact", None)


# ---------------------------------------------------------------------------------------------
# inspect


def test_inspect_figure_one_row_per_layer_and_a_heatmap(mae_inspect: Any) -> None:
    from tfbound.render.inspect_plot import inspect_figure

    fig = inspect_figure(mae_inspect)
    try:
        spectral, stable = fig.axes[0], fig.axes[1]
        n = len(mae_inspect.layers)
        assert n > 10
        names = [t.get_text() for t in spectral.get_yticklabels()]
        assert len(names) == n and names[0].startswith(mae_inspect.layers[0].name)
        assert len(spectral.patches) == len(stable.patches) == n
        assert spectral.get_title(loc="left") == "spectral norm"
        assert stable.get_title(loc="left").startswith("stable rank")
        heatmaps = [ax for ax in fig.axes if ax.images]
        assert len(heatmaps) == 2  # QK and VO, blocks x heads
        grid = heatmaps[0].images[0].get_array()
        assert grid.shape == (2, 4)  # mae_vit: 2 blocks of 4 heads
        assert "mae_vit" in fig._suptitle.get_text()
    finally:
        plt.close(fig)


def test_inspect_figure_without_heads_has_no_heatmap() -> None:
    import torch

    from tfbound.inspect import inspect_state_dict
    from tfbound.render.inspect_plot import inspect_figure

    result = inspect_state_dict({"a.weight": torch.eye(3) * 2, "b.weight": torch.ones(2, 3)})
    fig = inspect_figure(result)
    try:
        assert not any(ax.images for ax in fig.axes)
        assert len(fig.axes[0].get_yticklabels()) == 2
    finally:
        plt.close(fig)


def test_inspect_cli_plot(tmp_path: Path) -> None:
    out = tmp_path / "norms.png"
    code, stdout, err = run("inspect", str(MAE), "-q", "--plot", str(out), "--format", "json")
    assert code == 0, err
    assert "wrote" in err and json.loads(stdout)["layers"]
    width, height = check_png(out)
    assert width > height > 300
    code, _, err = run("inspect", str(MAE), "-q", "--plot", str(tmp_path / "x.gif"))
    assert code == 2 and ".png" in err and not (tmp_path / "x.gif").exists()
    code, _, err = run("inspect", str(MAE), "-q", "--plot", str(tmp_path / "no" / "x.png"))
    assert code == 3 and "folder does not exist" in err


# ---------------------------------------------------------------------------------------------
# compare


def _pair(tmp_path: Path) -> tuple[Path, Path, dict[str, Any], dict[str, Any]]:
    base, cand = report(), report(scale=3.0)  # scale 3: the margin bound becomes vacuous
    for rep, seed in ((base, 0), (cand, 1)):
        rep["config"] = {"encoder": {"arch": "mlp"}, "pretext": {"kind": "ce"},
                         "bound": {"seed": seed}}  # fmt: skip
    b, c = tmp_path / "base.json", tmp_path / "cand.json"
    b.write_text(json.dumps(base))
    c.write_text(json.dumps(cand))
    return b, c, base, cand


def _moved(base: dict[str, Any], cand: dict[str, Any]) -> set[str]:
    out = set()
    for section in ("terms", "bounds"):
        for key, term in base[section].items():
            other = cand[section].get(key, {}).get("value")
            if term["value"] is not None and other is not None and other != term["value"]:
                out.add(key)
    return out


def test_compare_figure_shows_only_the_changed_terms(tmp_path: Path) -> None:
    from tfbound.compare import compare_reports, read_report
    from tfbound.render.compare_plot import changed, compare_figure

    b, c, base, cand = _pair(tmp_path)
    rb, rc = read_report(b), read_report(c)
    data = compare_reports(rb, rc).to_dict()
    rows = changed(data, rb, rc)
    moved = _moved(base, cand)
    assert {r["key"] for r in rows} == moved
    assert "confidence_finetune" not in moved and "test_set_bound" not in moved
    fig = compare_figure(data, rb, rc, ["ce_mlp (seed 0)", "ce_mlp (seed 1)"])
    try:
        panels = [ax for ax in fig.axes if ax.get_visible() and ax.patches]
        titles = {ax.get_title(loc="left").split("\n")[0] for ax in panels}
        assert titles == moved
        assert all(len(ax.patches) == 2 for ax in panels)  # before and after, its own axis
        vacuous = [ax for ax in panels if any("vacuous" in t.get_text() for t in ax.texts)]
        assert [ax.get_title(loc="left").split("\n")[0] for ax in vacuous] == [
            "certified_test_error_bound"
        ]
        assert [t.get_text() for t in vacuous[0].texts if "vacuous" in t.get_text()] == [
            f" {0.9 + 6e-4 + 0.2:.3g} vacuous"
        ]  # the candidate only: the baseline's 0.5 is not
        legend = [t.get_text() for t in fig.legends[0].get_texts()]
        assert legend == ["before: ce_mlp (seed 0)", "after: ce_mlp (seed 1)"]
    finally:
        plt.close(fig)


def test_compare_figure_frames_a_moved_headline(tmp_path: Path) -> None:
    from tfbound.compare import compare_reports
    from tfbound.render.compare_plot import compare_figure

    base, cand = report(), report()
    cand["bounds"]["best_certified_test_error_bound"]["value"] = 0.3
    fig = compare_figure(compare_reports(base, cand).to_dict(), base, cand)
    try:
        panels = [ax for ax in fig.axes if ax.get_visible() and ax.patches]
        assert panels[0].get_gid() == "headline"
        assert panels[0].get_title(loc="left").startswith("best_certified_test_error_bound")
    finally:
        plt.close(fig)


def test_compare_figure_of_two_inspect_reports_draws_the_layer_measures(tmp_path: Path) -> None:
    import torch

    from tfbound.compare import compare_reports, read_report
    from tfbound.inspect import inspect_state_dict
    from tfbound.render.compare_plot import compare_figure
    from tfbound.render.inspect_render import inspect_json

    paths = []
    for scale in (1.0, 2.0):
        result = inspect_state_dict(
            {"a.weight": torch.eye(3) * scale, "b.weight": torch.ones(2, 3)}
        )
        path = tmp_path / f"inspect{scale}.json"
        path.write_text(json.dumps(inspect_json(result)))
        paths.append(read_report(path))
    fig = compare_figure(compare_reports(*paths).to_dict(), *paths)
    try:
        titles = [ax.get_title(loc="left") for ax in fig.axes if ax.get_visible() and ax.patches]
        assert titles and all(t.startswith("layers.a.") for t in titles)
        assert all("layers" in t.split("\n")[1] for t in titles)
    finally:
        plt.close(fig)


def test_compare_cli_plot(tmp_path: Path) -> None:
    b, c, _, _ = _pair(tmp_path)
    out = tmp_path / "moved.png"
    code, _, err = run("compare", str(b), str(c), "--plot", str(out))
    assert code == 0, err
    assert f"wrote {out}" in " ".join(err.split())
    check_png(out)
    svg = tmp_path / "moved.svg"
    assert run("compare", str(b), str(c), "--plot", str(svg))[0] == 0
    assert "</svg>" in svg.read_text()
    code, _, err = run("compare", str(b), str(c), "--plot", str(tmp_path / "x.jpg"))
    assert code == 2 and ".png" in err and not (tmp_path / "x.jpg").exists()


def test_plot_options_without_matplotlib_exit_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    b, c, _, _ = _pair(tmp_path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, _, err = run("compare", str(b), str(c), "--plot", str(tmp_path / "x.png"))
    assert code == 3 and "tfbound[plot]" in err and not (tmp_path / "x.png").exists()
    code, _, err = run("inspect", str(MAE), "-q", "--plot", str(tmp_path / "x.png"))
    assert code == 3 and "tfbound[plot]" in err


# ---------------------------------------------------------------------------------------------
# transfer


def _member(name: str, eu: float, et: float, used: bool) -> dict[str, Any]:
    return {"name": name, "e_u": {"value": eu, "stderr": eu / 5},
            "e_t": {"value": et, "stderr": et / 5}, "used_in_fit": used,
            "reference": False}  # fmt: skip


def test_transfer_figure(tmp_path: Path) -> None:
    from tfbound.render.transfer_plot import plot_transfer, transfer_figure

    members = [_member(f"m{i}", 10 ** (-3 + i / 3), 2 * (10 ** (-3 + i / 3)) ** 0.7, i % 3 != 0)
               for i in range(9)]  # fmt: skip
    members.append({**_member("ref", 0.0, 0.0, False), "reference": True})
    rep = {
        "config": {"encoder": {"arch": "mlp"}, "pretext": {"kind": "ce"}},
        "family": {"n_members": 10, "members_by_kind": {"perturbation": 10}},
        "reference": {"name": "ref"},
        "members": members,
        "fit": {"beta": 0.7, "c": 2.0, "beta_interval": [0.6, 0.8], "level": 0.95,
                "c_envelope": 1.5, "beta_fixed": 0.5, "envelope_member": "m4",
                "e_u_span_decades": 2.7, "identifiable": True},
    }  # fmt: skip
    fig = transfer_figure(rep)
    try:
        ax = fig.axes[0]
        assert "ce_mlp" in ax.get_title(loc="left")
        labels = ax.get_legend_handles_labels()[1]
        assert "used in the fit: 6" in labels and "left out (inside the noise floor): 3" in labels
        assert any(label.startswith("envelope member: m4") for label in labels)
        assert "1 member with E_U or E_T <= 0 not drawn" in ax.texts[-1].get_text()
    finally:
        plt.close(fig)
    out = tmp_path / "t.png"
    plot_transfer(rep, out)
    check_png(out)

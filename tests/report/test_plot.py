"""``tfbound plot``: PNG/SVG written complete, several reports, usage and input errors, and the
hint when matplotlib is missing."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import run_cli as run
from tfbound.keys import role_of


def term(key: str, value: float | None, status: str, quantity: str) -> dict[str, Any]:
    return {"key": key, "value": value, "status": status, "role": str(role_of(key)),
            "quantity": quantity, "formula": "f", "source": "s"}  # fmt: skip


def report(scale: float = 1.0, gap: float = 0.02, bound: bool = True) -> dict[str, Any]:
    err = "downstream_test_error"
    parts = {"downstream_empirical_risk": 0.3 * scale, "rirc_term": 2e-4 * scale,
             "confidence_finetune": 0.2}  # fmt: skip
    terms = {k: term(k, v, "certified", err) for k, v in parts.items()}
    terms["test_set_bound"] = term("test_set_bound", 0.35, "certified", err)
    terms["observed_test_error"] = term("observed_test_error", 0.3, "diagnostic", err)
    terms["capacity_ratio"] = term("capacity_ratio", 12.0 * scale, "estimated", "complexity")
    terms["pretext_generalization_gap"] = term("pretext_generalization_gap", gap, "estimated",
                                                "gap")  # fmt: skip
    terms["rirc_head"] = term("rirc_head", None, "proxy", "complexity")
    total = term("certified_test_error_bound", sum(parts.values()), "certified", err)
    total["components"] = list(parts)
    bounds = {
        "certified_test_error_bound": total,
        "pac_bayes_deterministic_bound": term(
            "pac_bayes_deterministic_bound", 0.4, "certified", err
        ),  # fmt: skip
        "best_certified_test_error_bound": term(
            "best_certified_test_error_bound", 0.4, "certified", err
        ),  # fmt: skip
    }
    return {
        "schema_version": "2.0",
        "tfbound_version": "test",
        "kind": "estimate",
        "terms": terms,
        "bounds": bounds if bound else {},
    }


@pytest.fixture
def reports(tmp_path: Path) -> list[str]:
    out = []
    for name, rep in [("a", report()), ("b", report(1.5, gap=-0.01)), ("c", report(bound=False))]:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(rep))
        out.append(str(path))
    return out


def test_plot_png_one_and_several(reports: list[str], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    one = tmp_path / "one.png"
    code, out, err = run("plot", reports[0], "-o", str(one))
    assert code == 0 and out == "" and "wrote" in err
    assert one.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    many = tmp_path / "many.svg"
    code, _, err = run("plot", *reports, "-o", str(many), "--label", "epoch 1", "--label",
                       "epoch 2", "--label", "no bound", "--title", "checkpoints")  # fmt: skip
    assert code == 0, err
    svg = many.read_text()
    assert svg.lstrip().startswith("<?xml") and "</svg>" in svg
    assert not list(tmp_path.glob(".*.tmp"))


def test_bars_and_panels_come_from_the_roles() -> None:
    from tfbound.render.plot import _main_bars, _side_panels

    reps = [("a", report()), ("c", report(bound=False))]
    assert _main_bars(reps) == [
        "best_certified_test_error_bound",
        "certified_test_error_bound",
        "pac_bayes_deterministic_bound",
        "test_set_bound",
    ]
    panels = _side_panels(reps)
    assert "rirc_term" not in str(panels) and "observed_test_error" not in str(panels)
    assert panels["complexity"] == ["capacity_ratio"]
    assert panels["proxies (not bounds)"] == ["rirc_head"]  # a proxy apart from the estimates
    assert panels["gap"] == ["pretext_generalization_gap"]  # one panel per quantity


def _figure(reps: list[tuple[str, dict[str, Any]]]) -> Any:
    pytest.importorskip("matplotlib")
    from tfbound.render.plot import reports_figure

    return reports_figure(reps)


def _texts(fig: Any) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_headline_is_drawn_first_widest_and_framed() -> None:
    import matplotlib.pyplot as plt

    fig = _figure([("ce_mlp", report())])
    try:
        main = fig.axes[0]
        heads = [p for p in main.patches if p.get_gid() == "headline"]
        assert len(heads) == 1
        head = heads[0]
        assert head.get_height() == pytest.approx(0.4)
        assert head.get_linewidth() > 1.5
        others = [p for p in main.patches if p.get_gid() != "headline"]
        assert all(head.get_width() > p.get_width() for p in others)
        assert all(head.get_x() < p.get_x() for p in others)
        bold = [t.get_text() for t in main.texts if t.get_fontweight() == "bold"]
        assert any(t.startswith("0.4") for t in bold)
    finally:
        plt.close(fig)


def test_vacuous_certificates_are_muted_and_labelled() -> None:
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    from tfbound.render.figures import MUTED

    fig = _figure([("ce_mlp", report(scale=3.0)), ("mae_vit", report())])
    try:
        main = fig.axes[0]
        labels = [t.get_text() for t in main.texts if "vacuous" in t.get_text()]
        # scale 3: the margin bound 0.9 + 6e-4 + 0.2 >= 1; the other report's 0.5 is not
        assert labels == [f"{0.9 + 6e-4 + 0.2:.3g}\nvacuous"]
        muted = [p for p in main.patches if to_hex(p.get_facecolor()) == MUTED.lower()]
        assert len(muted) == 3  # the three stacked components of the vacuous bound
        assert "vacuous" not in " ".join(t.get_text() for t in main.texts if "0.5" in t.get_text())
    finally:
        plt.close(fig)


def test_model_names_label_the_groups(tmp_path: Path) -> None:
    from tfbound.render.plot import default_labels

    def named(seed: int, kind: str = "ce") -> dict[str, Any]:
        rep = report()
        rep["config"] = {"encoder": {"arch": "mlp"}, "pretext": {"kind": kind},
                         "bound": {"seed": seed, "delta": 0.05}}  # fmt: skip
        return rep

    paths = []
    reps = [("r1", named(0)), ("r2", named(1)), ("r3", named(0, "mae")), ("r4", report())]
    for name, rep in reps:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(rep))
        paths.append(path)
    expected = ["ce_mlp (seed 0)", "ce_mlp (seed 1)", "mae_mlp", "r4"]
    assert default_labels(paths) == expected  # read from the files, as tfbound plot calls it
    assert default_labels(paths, [json.loads(p.read_text()) for p in paths]) == expected
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    fig = _figure([("ce_mlp (seed 0)", named(0)), ("mae_mlp", named(0, "mae"))])
    try:
        names = [t.get_text() for t in fig.axes[0].texts if t.get_fontsize() == 11]
        assert names == ["ce_mlp (seed 0)", "mae_mlp"]
    finally:
        plt.close(fig)


def test_incommensurable_numbers_never_share_an_axis() -> None:
    import matplotlib.pyplot as plt

    fig = _figure([("a", report()), ("b", report(1.5))])
    try:
        side = fig.axes[1:]
        titles = [ax.get_title(loc="left").split("\n")[0] for ax in side]
        assert sorted(titles) == ["capacity_ratio", "pretext_generalization_gap", "rirc_head"]
        assert all(len(ax.patches) <= 2 for ax in side)  # one bar per report, one term per axis
    finally:
        plt.close(fig)


def test_png_is_valid_and_readable(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib.image as mpimg

    from tfbound.render.plot import plot_reports

    out = tmp_path / "b.png"
    plot_reports([("a", report()), ("b", report(1.5))], out)
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    pixels = mpimg.imread(out)
    assert pixels.shape[:2] == (height, width)
    assert 800 < width < 3000 and 400 < height < 1500


def test_plot_usage_and_input_errors(reports: list[str], tmp_path: Path) -> None:
    out = tmp_path / "x.png"
    code, _, err = run("plot", reports[0], "-o", str(tmp_path / "x.gif"))
    assert code == 2 and ".png" in err
    code, _, err = run("plot", *reports[:2], "--label", "only one", "-o", str(out))
    assert code == 2 and "--label" in err
    assert run("plot")[0] == 2
    bad = tmp_path / "bad.json"
    bad.write_text('{"hello": 1}')
    code, _, err = run("plot", str(bad), "-o", str(out))
    assert code == 3 and "not a tfbound report" in err
    inspect = tmp_path / "inspect.json"
    inspect.write_text('{"kind": "tfbound.inspect", "schema_version": "2.0", "layers": []}')
    code, _, err = run("plot", str(inspect), "-o", str(out))
    assert code == 3 and "no terms to draw" in err
    code, _, err = run("plot", reports[0], "-o", str(tmp_path / "none" / "x.png"))
    assert code == 3 and "folder does not exist" in err
    assert not out.exists()


def test_plot_without_matplotlib_says_what_to_install(
    reports: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes "import matplotlib" fail
    out = tmp_path / "x.png"
    code, _, err = run("plot", reports[0], "-o", str(out))
    assert code == 3 and "tfbound[plot]" in err and not out.exists()

"""Golden renderings of every table at 60, 80, 120 and 200 columns, and of the markdown.

Inputs: a small hand-made report, the two sample reports, a transfer report of a tiny family
(saved under ``tests/golden/inputs/``), the gates and the comparison made from them, and
``inspect`` of the two sample encoders (computed here: exact and fast). After a deliberate change
to a renderer (or to the sample reports), regenerate everything with
``python -m pytest tests/report/test_golden.py --update-golden`` and review the diff by eye.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt

from tests.helpers import REPO_ROOT
from tfbound.compare import compare_reports
from tfbound.gates import evaluate_gates, parse_gates
from tfbound.inspect import inspect_checkpoint
from tfbound.plan import plan
from tfbound.render.compare_render import compare_markdown, compare_table
from tfbound.render.gates_render import gates_markdown, gates_table
from tfbound.render.inspect_render import inspect_markdown, inspect_report
from tfbound.render.layout import render_text
from tfbound.render.markdown import report_markdown
from tfbound.render.plan_render import plan_markdown, plan_table
from tfbound.render.table import report_table
from tfbound.render.transfer_render import transfer_markdown, transfer_table
from tfbound.report import Report, to_json
from tfbound.terms import Status, Term

GOLDEN = REPO_ROOT / "tests" / "golden"
INPUTS = GOLDEN / "inputs"
WIDTHS = (60, 80, 120, 200)
SAMPLES = REPO_ROOT / "sample_models"
MARGIN = "Mohri, Rostamizadeh, Talwalkar, Foundations of Machine Learning, 2nd ed., Thm 5.8"
TEST_ERROR = "downstream_test_error"


def sample_report() -> Report:
    """The section-2 route and its terms, a held-out check, a proxy and a diagnostic term."""
    c = Status.CERTIFIED

    def term(key: str, value: float, formula: str, **kw: object) -> Term:
        kw.setdefault("status", c)
        kw.setdefault("quantity", TEST_ERROR)
        kw.setdefault("source", MARGIN)
        return Term(key=key, value=value, formula=formula, **kw)  # type: ignore[arg-type]

    terms = (
        term("downstream_empirical_risk", 0.2125, "(1/n) sum_i phi_1(y_i f_k*(x_i)) (ramp loss)"),
        term("rirc_term", 0.1375, "2 * rirc"),
        term("confidence_finetune", 0.2349, "3 sqrt(log(2 k*(k*+1) / delta_1) / (2 n))"),
        term(
            "observed_test_error",
            0.128,
            "(1/m_test) sum_test 1{y f_hat(x) <= 0}",
            status=Status.DIAGNOSTIC,
            source="the test split",
        ),
        term(
            "test_set_bound",
            0.1822,
            "max{p : P(Bin(m_test, p) <= errors) >= delta_test}",
            source="Clopper and Pearson (1934): exact one-sided binomial inversion",
            confidence=0.9925,
        ),
        term(
            "spectral_complexity",
            1843.2,
            "prod_i ||W_i||_2 (sum_i (||W_i^T||_{2,1} / ||W_i||_2)^(2/3))^(3/2)",
            status=Status.PROXY,
            quantity="complexity",
            source="Bartlett, Foster, Telgarsky (2017): unverified constant",
        ),
        term(
            "tightness",
            3.2366,
            "certified_test_error_bound / test_set_bound",
            status=Status.DIAGNOSTIC,
            quantity="ratio",
            source="how loose the certificate is against the held-out bound",
        ),
    )
    bounds = (
        term(
            "best_certified_test_error_bound",
            0.5849,
            "min over the deterministic certificates computed: certified_test_error_bound",
            source="bound-spec 10.5: union bound over the certificates",
            confidence=0.9825,
            details={"chosen": "certified_test_error_bound"},
        ),
        term(
            "certified_test_error_bound",
            0.5849,
            "min_k [downstream_empirical_risk + rirc_term + confidence_finetune] (at k*)",
            confidence=0.9825,
            components=("downstream_empirical_risk", "rirc_term", "confidence_finetune"),
        ),
    )
    return Report(
        kind="estimate",
        config={"bound": {"delta": 0.025, "n_draws": 500, "seed": 0}},
        model={"encoder": "mlp 16 -> 12 -> 8", "head": "linear"},
        data={"n": 700, "m_test": 297},
        deltas={"delta": 0.025, "finetune": 0.0175, "test": 0.0075},
        terms=terms,
        bounds=bounds,
        warnings=("the section-2 bound is computed on 700 examples",),
        tfbound_version="0.0.0",
    )


# -- inputs ------------------------------------------------------------------------------------
def _make_inputs(tmp: Path) -> None:
    """Rewrite the saved inputs: the two sample reports and a tiny transfer report."""
    import tfbound
    from tests.conftest import write_pipeline
    from tests.transfer.test_transfer import write_transfer_yaml
    from tfbound.transfer import run_transfer

    INPUTS.mkdir(parents=True, exist_ok=True)
    for name in ("ce_mlp", "mae_vit"):
        report = tfbound.estimate(SAMPLES / name)
        (INPUTS / f"{name}.json").write_text(to_json(report.to_dict()), encoding="utf-8")
    transfer = run_transfer(write_transfer_yaml(write_pipeline(tmp / "tiny")))
    (INPUTS / "transfer.json").write_text(to_json(transfer.to_dict()), encoding="utf-8")


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((INPUTS / f"{name}.json").read_text(encoding="utf-8"))
    return data


GATES = parse_gates(
    {
        "best_certified_test_error_bound": "<= 0.45",
        "capacity_ratio": "<= +10%",
        "pac_bayes_deterministic_bound": "<= 0.5",
    }
)


def _gates() -> dict[str, Any]:
    cand, base = _load("mae_vit"), _load("ce_mlp")
    return evaluate_gates(GATES, cand, base).to_dict()


def _compare() -> dict[str, Any]:
    return compare_reports(
        _load("ce_mlp"), _load("mae_vit"), "ce_mlp.json", "mae_vit.json"
    ).to_dict()


def _inspect(name: str) -> Any:
    with contextlib.chdir(REPO_ROOT):  # the source is printed as given: relative, as a user would
        return inspect_checkpoint(
            Path("sample_models") / name / "encoder.safetensors", spectral="exact"
        )


TABLES: dict[str, Callable[[], object]] = {
    "estimate_hand_made": lambda: report_table(sample_report().to_dict()),
    "estimate_hand_made_verbose": lambda: report_table(sample_report().to_dict(), verbose=True),
    "estimate_ce_mlp": lambda: report_table(_load("ce_mlp")),
    "estimate_mae_vit": lambda: report_table(_load("mae_vit")),
    "inspect_ce_mlp": lambda: inspect_report(_inspect("ce_mlp")),
    "inspect_mae_vit": lambda: inspect_report(_inspect("mae_vit")),
    "gates": lambda: gates_table(_gates()),
    "compare": lambda: compare_table(_compare()),
    "compare_all": lambda: compare_table(_compare(), show_all=True),
    "transfer": lambda: transfer_table(_load("transfer")),
    "plan": lambda: plan_table(plan(_load("ce_mlp"), target=0.3).to_dict()),
}
MARKDOWN: dict[str, Callable[[], str]] = {
    "report.md": lambda: report_markdown(sample_report().to_dict()),
    "estimate_ce_mlp.md": lambda: report_markdown(_load("ce_mlp")),
    "estimate_mae_vit.md": lambda: report_markdown(_load("mae_vit")),
    "inspect_mae_vit.md": lambda: inspect_markdown(_inspect("mae_vit")),
    "gates.md": lambda: gates_markdown(_gates()),
    "compare.md": lambda: compare_markdown(_compare()),
    "transfer.md": lambda: transfer_markdown(_load("transfer")),
    "plan.md": lambda: plan_markdown(plan(_load("ce_mlp"), target=0.3).to_dict()),
}


@pytest.fixture(scope="module")
def inputs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> None:
    if request.config.getoption("--update-golden"):
        _make_inputs(tmp_path_factory.mktemp("golden"))


def _check(name: str, got: str, update_golden: bool) -> None:
    path = GOLDEN / name
    if update_golden:
        path.write_text(got, encoding="utf-8")
    assert path.is_file(), f"no golden file {path}: run pytest with --update-golden"
    assert got == path.read_text(encoding="utf-8"), f"{name} changed: see --update-golden"


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", sorted(TABLES))
def test_table_fits_its_width_whole_and_matches_its_golden_file(
    name: str, width: int, inputs: None, update_golden: bool
) -> None:
    text = render_text(TABLES[name](), width)
    lines = text.splitlines()
    too_wide = [line for line in lines if len(line) > width]
    assert not too_wide, f"{len(too_wide)} lines over {width} columns, e.g. {too_wide[0]!r}"
    assert "…" not in text, "a cell was cut"
    _check(f"{name}_{width}.txt", text, update_golden)


@pytest.mark.parametrize("name", sorted(MARKDOWN))
def test_markdown_matches_its_golden_file_and_has_no_stray_emphasis(
    name: str, inputs: None, update_golden: bool
) -> None:
    text = MARKDOWN[name]()
    html = MarkdownIt("commonmark").enable("table").render(text)
    # nothing in a report is meant as emphasis: '_' and '*' in formulas and names stay literal
    assert "<em>" not in html
    first = html.split("</h2>", 1)[1].lstrip().split("\n", 1)[0]  # the line under the title
    assert "<strong>" in first or name == "gates.md", first  # gates: the verdict is the title
    _check(name, text, update_golden)


def test_the_headline_comes_first_and_the_ramp_risk_is_explained() -> None:
    text = render_text(report_table(_load("ce_mlp")), 80)
    first = text.splitlines()[0]
    assert first.startswith("best_certified_test_error_bound = 0.3919")
    assert text.index("observed test error 0.1279") < text.index("certificates on your head")
    assert "ramp loss of the head rescaled" in text  # the 0.9998 is not the training error
    assert "formula" not in text.split("formulas and sources: --verbose")[0].lower()


def test_formulas_only_with_verbose_and_wrapped_at_spaces() -> None:
    report = _load("mae_vit")
    plain = render_text(report_table(report), 120)
    verbose = render_text(report_table(report, verbose=True), 120)
    assert report["terms"]["rirc_term"]["formula"] not in plain
    tokens = set(verbose.split())
    for term in report["terms"].values():  # every word of every formula is printed whole
        assert {w for w in term["formula"].split() if len(w) > 3} <= tokens, term["key"]

"""Golden renderings of a small hand-made report: the rich table at 80 and 120 columns and the
markdown. After a deliberate change to a renderer, regenerate them with
``python -m pytest tests/report/test_golden.py --update-golden`` and review the diff."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from tests.helpers import REPO_ROOT
from tfbound.render.markdown import report_markdown
from tfbound.render.table import report_table
from tfbound.report import Report
from tfbound.terms import Status, Term

GOLDEN = REPO_ROOT / "tests" / "golden"
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


def table_text(width: int) -> str:
    console = Console(
        file=io.StringIO(), width=width, color_system=None, highlight=False, record=True
    )
    console.print(report_table(sample_report().to_dict()))
    return console.export_text()


RENDERINGS = {
    "report_table_80.txt": lambda: table_text(80),
    "report_table_120.txt": lambda: table_text(120),
    "report.md": lambda: report_markdown(sample_report().to_dict()),
}


@pytest.mark.parametrize("name", sorted(RENDERINGS))
def test_rendering_matches_its_golden_file(name: str, update_golden: bool) -> None:
    got = RENDERINGS[name]()
    path = GOLDEN / name
    if update_golden:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(got, encoding="utf-8")
    assert path.is_file(), f"no golden file {path}: run pytest with --update-golden"
    assert got == path.read_text(encoding="utf-8"), f"{name} changed: see --update-golden"

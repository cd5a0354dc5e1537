"""Report's notebook face: repr, summary, HTML, DataFrame, JSON round trip."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import tfbound
from tests.helpers import gaussian_task
from tfbound.render.table import report_text


@pytest.fixture(scope="module")
def report() -> tfbound.Report:
    x, y = gaussian_task(300, 5, seed=1)
    xt, yt = gaussian_task(200, 5, seed=2)
    w = np.array([1.0, 0, 0, 0, 0])
    return tfbound.certify(x, y, w, 0.0, z_test=xt, y_test=yt, n_draws=500)


def test_repr_is_short_and_says_the_headline(report: tfbound.Report) -> None:
    text = repr(report)
    lead = report.headline()
    observed = report.get("observed_test_error")
    assert lead is not None and lead.key == "best_certified_test_error_bound"
    assert observed is not None and observed.value is not None and lead.value is not None
    assert len(text) < 300 and "\n" not in text
    assert f"{lead.key}={lead.value:.4g}" in text
    assert f"observed_test_error={observed.value:.4g}" in text
    counts = report.status_counts()
    assert sum(counts.values()) == len(report.terms) + len(report.bounds)
    assert all(f"{k}: {v}" in text for k, v in counts.items())


def test_summary_is_the_cli_table(report: tfbound.Report) -> None:
    assert report.summary() == report_text(report.to_dict(), 100)
    assert report.summary(width=80) == report_text(report.to_dict(), 80)


def test_html_escapes_and_wraps_the_summary(report: tfbound.Report) -> None:
    html = report._repr_html_()
    assert html.startswith("<p><b>Report(") and "<pre>" in html
    body = html.split("<pre>", 1)[1]
    assert "<" not in body.replace("</pre>", "")  # the table's text is escaped


def test_to_pandas_has_one_row_per_term(report: tfbound.Report) -> None:
    df = report.to_pandas()
    assert len(df) == len(report.terms) + len(report.bounds)
    assert list(df.columns)[:4] == ["key", "value", "status", "role"]
    for row in df.itertuples():
        t = report.get(row.key)
        assert t is not None and row.status == t.status.value and row.formula == t.formula
        if t.value is not None:
            assert row.value == t.value
        if t.interval is not None:
            assert (row.interval_lo, row.interval_hi) == tuple(t.interval)


def test_to_pandas_without_pandas_is_one_line(
    report: tfbound.Report, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"^Report.to_pandas needs pandas: pip install"):
        report.to_pandas()


def test_json_round_trip_through_the_one_reader(report: tfbound.Report, tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    report.write(path)
    assert path.read_text(encoding="utf-8") == report.to_json()
    again = tfbound.Report.read(path)
    assert again.to_dict() == report.to_dict()
    assert repr(again) == repr(report)
    from tfbound.compare import read_report

    assert read_report(path) == report.to_dict()  # check/compare read through the same door

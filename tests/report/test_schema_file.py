"""The committed ``docs/report.schema.json`` is current, and real reports validate against it."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from typer.testing import CliRunner

from tests.helpers import REPO_ROOT
from tfbound.cli import app
from tfbound.report import report_schema, to_json

ROOT = REPO_ROOT
SCHEMA_FILE = ROOT / "docs" / "report.schema.json"
SAMPLES = ("ce_mlp", "mae_vit")


def test_schema_file_is_current() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == to_json(report_schema()), (
        "docs/report.schema.json is stale: run 'tfbound schema > docs/report.schema.json'"
    )


@pytest.fixture(scope="module")
def sample_reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """``tfbound estimate`` once per sample model, the report read back from the written file."""
    folder = tmp_path_factory.mktemp("schema")
    out: dict[str, dict[str, Any]] = {}
    for name in SAMPLES:
        path = folder / f"{name}.json"
        result = CliRunner().invoke(
            app, ["estimate", str(ROOT / "sample_models" / name), "-q", "--json", str(path)]
        )
        assert result.exit_code == 0, result.stderr
        out[name] = json.loads(path.read_text())
    return out


@pytest.mark.parametrize("name", SAMPLES)
def test_sample_reports_validate_against_the_committed_schema(
    sample_reports: dict[str, dict[str, Any]], name: str
) -> None:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(sample_reports[name], schema, cls=jsonschema.Draft202012Validator)


def test_the_schema_rejects_what_it_should(sample_reports: dict[str, dict[str, Any]]) -> None:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    bad = json.loads(json.dumps(sample_reports["ce_mlp"]))
    bad["terms"]["rirc"]["status"] = "guessed"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)

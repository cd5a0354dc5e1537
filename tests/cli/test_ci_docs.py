"""docs/ci.md stays runnable: the GitHub Actions workflow's ``tfbound`` commands and the
pre-commit hook's ``entry``, run in order in-process on this repository's sample model.

The workflow's two other commands are emulated, and checked to be the ones emulated: the install
(the package under test is already installed) and ``git worktree add ../base ...`` (``../base``
is this checkout, standing in for the target branch).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tests.helpers import REPO_ROOT
from tfbound.cli import app

ROOT = REPO_ROOT
DOC = ROOT / "docs" / "ci.md"
SUMMARY = "summary.md"


def block_after(marker: str) -> str:
    """The fenced code block that follows ``<!-- marker -->`` in docs/ci.md."""
    text = DOC.read_text(encoding="utf-8")
    m = re.search(rf"<!-- {marker} -->\s*```[a-z]*\n(.*?)\n```", text, re.S)
    assert m is not None, f"no code block after <!-- {marker} --> in docs/ci.md"
    return m.group(1)


def workflow_steps() -> list[dict[str, Any]]:
    workflow = yaml.safe_load(block_after("ci-workflow"))
    (job,) = workflow["jobs"].values()
    steps: list[dict[str, Any]] = job["steps"]
    return steps


def workflow_commands() -> list[str]:
    """Every shell line of every ``run:`` in order (folded ``>-`` runs are one line)."""
    lines: list[str] = []
    for step in workflow_steps():
        if "run" in step:
            lines += [ln.strip() for ln in step["run"].splitlines() if ln.strip()]
    return lines


def invoke(command: str, summary: Path) -> tuple[int, str, str]:
    args = shlex.split(command)
    assert args[0] == "tfbound"
    result = CliRunner().invoke(
        app, args[1:], env={"COLUMNS": "160", "GITHUB_STEP_SUMMARY": str(summary)}
    )
    return result.exit_code, result.stdout, result.stderr


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkout-like folder where the workflow's commands are run once, in order."""
    top = tmp_path_factory.mktemp("ci")
    work = top / "work"
    work.mkdir()
    for name in ("sample_models", "pyproject.toml"):
        (work / name).symlink_to(ROOT / name)
    (top / "base").symlink_to(ROOT)  # what "git worktree add ../base" makes
    summary = work / SUMMARY
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        mp.delenv("GITHUB_STEP_SUMMARY", raising=False)
        for command in workflow_commands():
            if command.startswith("pip install"):
                assert "-c constraints.txt -e" in command
                continue
            if command.startswith("git worktree add ../base"):
                continue
            assert command.startswith("tfbound "), f"cannot emulate: {command}"
            code, out, err = invoke(command, summary)
            if command.startswith("tfbound plot") and not have_matplotlib():
                assert code == 3 and "tfbound[plot]" in err
                continue
            assert code == 0, f"{command}\nexit {code}\n{out}\n{err}"
    return work


def test_the_workflow_runs_the_commands_the_brief_names() -> None:
    tf = [c for c in workflow_commands() if c.startswith("tfbound ")]
    estimate = next(c for c in tf if c.startswith("tfbound estimate sample_models/ce_mlp"))
    assert "--json report.json" in estimate and "--gate" in shlex.split(estimate)
    assert any(c.startswith("tfbound check report.json") for c in tf)
    assert any(c.startswith("tfbound compare") for c in tf)
    uploads = [s for s in workflow_steps() if str(s.get("uses", "")).startswith("actions/upload")]
    assert uploads and uploads[0].get("if") == "always()"


def test_the_workflow_commands_exit_0_and_write_the_artefacts(workdir: Path) -> None:
    (upload,) = [s for s in workflow_steps() if "upload-artifact" in str(s.get("uses", ""))]
    paths = upload["with"]["path"].split()
    for name in paths:
        if name == "bound.png" and not have_matplotlib():
            continue
        assert (workdir / name).is_file() and (workdir / name).stat().st_size > 0, name
    report = json.loads((workdir / "report.json").read_text())
    assert report["kind"] == "estimate" and "certified_test_error_bound" in report["bounds"]
    gates = json.loads((workdir / "base.json").read_text())
    assert gates["schema_version"] == report["schema_version"]


def test_every_command_appended_to_the_step_summary(workdir: Path) -> None:
    text = (workdir / SUMMARY).read_text()
    for heading in ("## tfbound estimate", "## tfbound gates: ✅", "## tfbound check: ✅",
                    "## tfbound compare: `base.json` → `report.json`"):  # fmt: skip
        assert heading in text, heading


def test_a_tightened_gate_fails_the_sample_model_with_a_readable_list(workdir: Path) -> None:
    gates = workdir / "tight.yaml"
    gates.write_text('gates:\n  certified_test_error_bound: "<= 0.05"\n  capacity_ratio: "<= 50"\n')
    code, out, _ = invoke(
        f"tfbound check {workdir / 'report.json'} --gates {gates}", workdir / "other.md"
    )
    assert code == 1
    assert "1 of 2 gates failed" in out and "FAIL" in out and "is not <= 0.05" in out


def test_the_pre_commit_hook_entry_runs(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (workdir / ".tfbound-gates.yaml").write_text(block_after("hook-gates") + "\n")
    hook_config = yaml.safe_load(block_after("hook-config"))
    (hook,) = hook_config["repos"][0]["hooks"]
    assert re.search(hook["files"], "sample_models/ce_mlp/head.safetensors")
    assert re.search(hook["files"], ".tfbound-gates.yaml")
    monkeypatch.chdir(workdir)
    code, out, err = invoke(hook["entry"], workdir / "hook-summary.md")
    assert code == 0, out + err
    assert "all 3 gates passed" in out

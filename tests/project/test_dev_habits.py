"""The repository's own habits stay wired up: the pre-commit hooks are the checks .ci/run runs
(local tools, nothing fetched), and .ci/run also runs the tests that the default run deselects."""

from __future__ import annotations

import itertools
import tomllib

import yaml

from tests.helpers import REPO_ROOT

ROOT = REPO_ROOT
CHECKERS = ("ruff", "mypy")


def command_name(line: str) -> tuple[str, ...]:
    """``ruff format --check .`` -> ``("ruff", "format")``: the words before the first argument."""
    words = line.split()
    return tuple(itertools.takewhile(lambda w: not w.startswith("-") and w != ".", words))


def ci_lines() -> list[str]:
    """The commands .ci/run runs from its virtual environment, without the ``.venv/bin/``."""
    text = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    return [
        ln.removeprefix(".venv/bin/") for ln in text.splitlines() if ln.startswith(".venv/bin/")
    ]


def test_the_pre_commit_hooks_are_the_checks_that_ci_runs() -> None:
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text(encoding="utf-8"))
    (repo,) = config["repos"]
    assert repo["repo"] == "local"  # no hook repository to download
    hooks = repo["hooks"]
    assert all(hook["language"] == "system" for hook in hooks)  # the active environment's tools
    hook_checks = {command_name(hook["entry"]) for hook in hooks}
    ci_checks = {command_name(ln) for ln in ci_lines() if ln.split()[0] in CHECKERS}
    assert hook_checks == ci_checks == {("ruff", "check"), ("ruff", "format"), ("mypy",)}
    (mypy,) = [hook for hook in hooks if hook["id"] == "mypy"]
    assert mypy["pass_filenames"] is False  # mypy checks pyproject's `files`, as in CI


def test_ci_runs_the_tests_that_the_default_run_deselects() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    pytest_options = pyproject["tool"]["pytest"]["ini_options"]
    assert "-m 'not slow'" in pytest_options["addopts"]
    assert any(m.startswith("slow:") for m in pytest_options["markers"])
    assert "python -m pytest -m slow" in ci_lines()

"""The layering rules of docs/design.md, checked on the source (ast, no imports executed)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO_ROOT

PACKAGE = REPO_ROOT / "tfbound"

#: What a layer may not import (dependencies point down: measures -> bounds -> pipeline ...).
FORBIDDEN = {
    "measures": (
        "tfbound.bounds",
        "tfbound.pipeline",
        "tfbound.models",
        "tfbound.config",
        "tfbound.io",
        "tfbound.inspect",
        "tfbound.render",
        "tfbound.cli",
    ),
    "bounds": (
        "tfbound.models",
        "tfbound.inspect",
        "tfbound.config",
        "tfbound.io",
        "tfbound.pipeline",
        "tfbound.render",
        "tfbound.cli",
        "tfbound.transfer",
    ),
}
MAX_BOUND_MODULE_LINES = 420


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.append(node.module)
    return out


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layers_import_only_downwards(layer: str) -> None:
    bad = [
        f"{path.name} imports {name}"
        for path in sorted((PACKAGE / layer).glob("*.py"))
        for name in _imports(path)
        if name.startswith(FORBIDDEN[layer])
    ]
    assert bad == []


def test_only_bounds_make_terms() -> None:
    """No ``Term(`` outside tfbound/bounds in the estimate pipeline."""
    makers = [
        p.relative_to(PACKAGE).as_posix()
        for p in sorted((PACKAGE / "pipeline").glob("*.py"))
        if "Term(" in p.read_text(encoding="utf-8")
    ]
    assert makers == []


def test_no_bound_module_is_over_the_size_limit() -> None:
    sizes = {
        p.name: len(p.read_text(encoding="utf-8").splitlines())
        for p in (PACKAGE / "bounds").glob("*.py")
    }
    assert {k: v for k, v in sizes.items() if v > MAX_BOUND_MODULE_LINES} == {}


def test_bounds_take_no_modules() -> None:
    """No bound function takes an ``nn.Module``, a config or a loader (annotations read as text)."""
    bad = []
    for path in sorted((PACKAGE / "bounds").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        for needle in ("nn.Module", "Config", "load_inputs", "cfg:"):
            if needle in text:
                bad.append(f"{path.name}: {needle}")
    assert bad == []


@pytest.mark.parametrize("grad", [True, False])
def test_estimate_leaves_the_callers_grad_mode(grad: bool, tmp_path: Path) -> None:
    from tests.conftest import write_pipeline
    from tfbound.pipeline import estimate

    cfg = write_pipeline(tmp_path)
    with torch.set_grad_enabled(grad):
        report = estimate(cfg)
        assert torch.is_grad_enabled() is grad
        assert not torch.is_inference_mode_enabled()
    assert report.get("best_certified_test_error_bound") is not None

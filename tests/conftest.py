"""Shared fixtures: a tiny seeded pipeline written to a temporary folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file

from tests.helpers import single_threaded
from tfbound.models import MLP, LinearHead, MLPEncoder, MLPHead


def write_pipeline(
    folder: Path,
    *,
    n_train: int = 120,
    n_test: int = 80,
    head: str = "linear",
    seed: int = 0,
    with_pretext: bool = True,
    bound: dict[str, Any] | None = None,
) -> Path:
    """MLP encoder 16 -> 12 -> 8, a head fitted by a few steps, CE pretext data; the yaml path."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    encoder = MLPEncoder(16, [12], 8)
    decoder = MLP(8, [6], 4)
    w_true = torch.randn(16, generator=gen)

    def labeled(n: int) -> tuple[np.ndarray, np.ndarray]:
        x = torch.rand(n, 16, generator=gen)
        y = ((x - 0.5) @ w_true > 0).long()
        return x.numpy(), y.numpy()

    xtr, ytr = labeled(n_train)
    xte, yte = labeled(n_test)
    with torch.no_grad():
        z = encoder(torch.from_numpy(xtr))
    h: torch.nn.Module = LinearHead(8) if head == "linear" else MLPHead(8, 5)
    opt = torch.optim.Adam(h.parameters(), lr=0.05)
    ys = torch.from_numpy(ytr).float() * 2 - 1
    for _ in range(50):
        opt.zero_grad()
        loss = torch.nn.functional.softplus(-ys * h(z)).mean()
        loss.backward()
        opt.step()
    folder.mkdir(parents=True, exist_ok=True)
    save_file(encoder.state_dict(), str(folder / "encoder.safetensors"))
    save_file(decoder.state_dict(), str(folder / "decoder.safetensors"))
    save_file(
        {k: v.contiguous() for k, v in h.state_dict().items()}, str(folder / "head.safetensors")
    )
    np.savez(
        folder / "data.npz",
        train_x=xtr,
        train_y=ytr,
        test_x=xte,
        test_y=yte,
        pre_x=torch.rand(60, 16, generator=gen).numpy(),
        val_x=torch.rand(40, 16, generator=gen).numpy(),
    )
    cfg: dict[str, Any] = {
        "encoder": {
            "arch": "mlp",
            "weights": "encoder.safetensors",
            "input_dim": 16,
            "hidden": [12],
            "feature_dim": 8,
        },
        "head": {"arch": head, "weights": "head.safetensors"},
        "data": {
            "downstream_train": {"path": "data.npz", "x": "train_x", "y": "train_y"},
            "downstream_test": {"path": "data.npz", "x": "test_x", "y": "test_y"},
        },
        "bound": {"n_draws": 500, "seed": 0, **(bound or {})},
    }
    if with_pretext:
        cfg["decoder"] = {
            "arch": "mlp",
            "weights": "decoder.safetensors",
            "input_dim": 8,
            "hidden": [6],
            "output_dim": 4,
        }
        cfg["pretext"] = {
            "kind": "ce",
            "image_shape": [1, 4, 4],
            "block": [1, 1, 2, 2],
            "box": [0.0, 1.0],
            "seed": 0,
        }
        cfg["data"]["pretrain_train"] = {"path": "data.npz", "x": "pre_x"}
        cfg["data"]["pretrain_val"] = {"path": "data.npz", "x": "val_x"}
    path = folder / "tfbound.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_pipeline(tmp_path / "tiny")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite the golden files under tests/golden/ from the current renderers",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Tiny dense problems on one thread: faster, and immune to a busy machine (restored after).
    A test file opts in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    with single_threaded():
        yield


_SKIPPED_FOR_IMPORTS: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Record a test skipped because a package is missing (``pytest.importorskip``)."""
    if report.skipped and "could not import" in str(report.longrepr):
        _SKIPPED_FOR_IMPORTS.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Every package a test needs is installable (the README's test command installs them): a
    test skipped for a missing package fails the run."""
    if _SKIPPED_FOR_IMPORTS and exitstatus == 0:
        session.exitstatus = 1
        print(f"\nerror: tests skipped for a missing package: {', '.join(_SKIPPED_FOR_IMPORTS)}")

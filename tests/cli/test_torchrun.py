"""``torchrun --nproc_per_node 2 -m tfbound estimate``: two gloo processes, each encoding every
other row of every split, write the single-process report (to 1e-12)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, run_cli

pytestmark = pytest.mark.filterwarnings("ignore")


def _torchrun(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        + ["-m", "tfbound", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=240,
        check=False,
    )


def _numbers(data: object, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(data, dict):
        for k, v in data.items():
            out |= _numbers(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out |= _numbers(v, f"{prefix}[{i}]")
    elif isinstance(data, int | float) and not isinstance(data, bool):
        out[prefix] = float(data)
    return out


@pytest.mark.parametrize(
    ("sample", "extra"),
    [("ce_mlp", ()), ("mae_vit", ("--dtype", "float64"))],
    ids=["ce_mlp", "mae_vit-float64"],
)
def test_two_gloo_processes_write_the_single_process_report(
    tmp_path: Path, sample: str, extra: tuple[str, ...]
) -> None:
    config = str(REPO_ROOT / "sample_models" / sample)
    out = tmp_path / "two.json"
    done = _torchrun("estimate", config, *extra, "-q", "-f", "json", "--json", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    code, stdout, _ = run_cli("estimate", config, *extra, "-q", "-f", "json")
    assert code == 0
    one = _numbers(json.loads(stdout))
    two = _numbers(json.loads(out.read_text()))
    assert one.pop("model.encoder.feature_pass.processes") == 1
    assert two.pop("model.encoder.feature_pass.processes") == 2
    assert one.keys() == two.keys()
    worst = max(abs(two[k] - v) / max(abs(v), 1e-300) for k, v in one.items() if v)
    # float32 encoders give each row the same bits whatever its batch (ce_mlp's MLP does; a
    # ViT's attention does not, so it runs in float64 here): then only the order of the sums
    # differs between one process and two
    assert worst <= 1e-12, worst
    assert two["bounds.best_certified_test_error_bound.value"] == pytest.approx(
        one["bounds.best_certified_test_error_bound.value"], rel=1e-12
    )
    # only the first process wrote: one report, a single JSON document
    assert done.stdout.count('"bounds"') <= 1


def test_fit_head_under_torchrun_is_refused(tmp_path: Path) -> None:
    done = _torchrun("estimate", str(REPO_ROOT / "sample_models" / "ce_mlp"), "--fit-head")
    assert done.returncode != 0
    assert "run tfbound fit-head before torchrun" in done.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WORLD_SIZE": "abc"}, "must be integers"),
        ({"WORLD_SIZE": "2", "RANK": "5"}, "RANK must lie in"),
        ({"WORLD_SIZE": "2", "RANK": "0"}, "MASTER_ADDR and MASTER_PORT are not set"),
    ],
)
def test_junk_torchrun_variables_are_a_usage_error(env: dict[str, str], message: str) -> None:
    config = str(REPO_ROOT / "sample_models" / "ce_mlp")
    code, _, err = run_cli("estimate", config, "-q", env={"TORCHELASTIC_RUN_ID": "x", **env})
    assert code == 2 and message in err


def test_a_world_size_without_torchrun_changes_nothing() -> None:
    config = str(REPO_ROOT / "sample_models" / "ce_mlp")
    code, out, _ = run_cli("estimate", config, "-q", "-f", "json", env={"WORLD_SIZE": "2"})
    assert code == 0 and json.loads(out)["model"]["encoder"]["feature_pass"]["processes"] == 1

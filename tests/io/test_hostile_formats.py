"""Bad inputs of the new readers: one-line DataErrors (exit 3) that echo no unbounded value, and
size checks before anything is allocated or decoded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tfbound.config import ArraySource, ImageTransform, parse_config
from tfbound.errors import ConfigError, DataError
from tfbound.io import images, tables
from tfbound.io.datasets import labels_with_positive
from tfbound.io.sources import read_source

LONG = "z" * 5000


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert "\n" not in text and len(text) < 600 and LONG not in text
    return text


def test_csv_errors(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_text("a,b,label\n1,2,x\n3,4\n")
    with pytest.raises(DataError) as e:
        read_source(ArraySource(p, "a,b", "label", columns=("a", "b")), labeled=True)
    assert "line 3: 2 cells" in _one_line(e)
    p.write_text(f"a,b,label\n1,{LONG},x\n")
    with pytest.raises(DataError) as e:
        read_source(ArraySource(p, "a,b", "label", columns=("a", "b")), labeled=True)
    assert "not a number" in _one_line(e)
    p.write_text("a,b,label\n1,nan,x\n")
    with pytest.raises(DataError, match="NaN or Inf"):
        read_source(ArraySource(p, "a,b", None, columns=("a", "b")), labeled=False)
    with pytest.raises(DataError) as e:
        read_source(ArraySource(p, LONG, None), labeled=False)
    assert "no column" in _one_line(e)
    p.write_bytes(b"text,label\n\xff\xfe,1\n")
    with pytest.raises(DataError, match="not UTF-8"):
        read_source(ArraySource(p, "text", "label"), labeled=True)


def test_the_size_cap_comes_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "big.csv"
    p.write_text("text\n" + "hello\n" * 100)
    monkeypatch.setattr(tables, "MAX_TABLE_BYTES", 100)
    with pytest.raises(DataError, match="over the limit of 100"):
        read_source(ArraySource(p, "text"), labeled=False)


def test_labels_with_a_positive_class() -> None:
    y = labels_with_positive(np.array(["spam", "ham", "spam"], object), 3, "spam", "y", None)
    assert y.tolist() == [1.0, -1.0, 1.0]
    assert labels_with_positive(np.array([0, 1, 1]), 3, 0, "y", None).tolist() == [1, -1, -1]
    assert labels_with_positive(np.array(["0", "1"], object), 2, None, "y", None).tolist() == [
        -1,
        1,
    ]
    with pytest.raises(DataError, match="3 classes"):
        labels_with_positive(np.array(["a", "b", "c"], object), 3, "a", "y", None)
    with pytest.raises(DataError, match="not among"):
        labels_with_positive(np.array(["a", "b"], object), 2, LONG, "y", None)
    with pytest.raises(DataError, match="declare the positive class"):
        labels_with_positive(np.array(["spam", "ham"], object), 2, None, "y", None)


def test_parquet_refuses_binary_and_object_columns(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    import pickle

    blob = pickle.dumps(object())
    pq.write_table(pa.table({"x": pa.array([blob, blob]), "y": [0, 1]}), tmp_path / "p.parquet")
    with pytest.raises(DataError, match="binary and object columns are refused"):
        read_source(ArraySource(tmp_path / "p.parquet", "x", "y"), labeled=True)
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        read_source(ArraySource(tmp_path / "bad.parquet", "x"), labeled=False)


def test_a_saved_dataset_folder_holds_arrow_and_json_only(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "ds"
    datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]}).save_to_disk(str(folder))
    assert read_source(ArraySource(folder, "text", "label"), labeled=True).texts == ["a", "b"]
    (folder / "evil.pkl").write_bytes(b"\x80\x04")
    with pytest.raises(DataError, match="not an Arrow or JSON file"):
        read_source(ArraySource(folder, "text", "label"), labeled=True)
    (folder / "evil.pkl").unlink()
    with pytest.raises(DataError, match="'split:' names a split of a DatasetDict"):
        read_source(ArraySource(folder, "text", "label", split="train"), labeled=True)
    dd = tmp_path / "dd"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["a"]})}).save_to_disk(
        str(dd)
    )
    with pytest.raises(DataError, match="name the split"):
        read_source(ArraySource(dd, "text"), labeled=False)
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match="image folder"):
        read_source(ArraySource(tmp_path / "plain", "text"), labeled=False)


def test_images_refuse_bombs_and_non_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    Image.new("L", (64, 64)).save(tmp_path / "big.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    t = ImageTransform((8, 8), "L", 255.0)
    with pytest.raises(DataError, match="refused before decoding"):
        images.decode_image(tmp_path / "big.png", t)
    (tmp_path / "fake.png").write_text("not an image")
    with pytest.raises(DataError, match="not a readable PNG"):
        images.decode_image(tmp_path / "fake.png", t)
    Image.new("RGB", (4, 6), (255, 0, 51)).save(tmp_path / "rgb.png")
    norm = ImageTransform((3, 2), "RGB", 255.0, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    x = images.decode_image(tmp_path / "rgb.png", norm)
    assert x.shape == (3, 3, 2)
    np.testing.assert_allclose(x[:, 0, 0], [(1 - 0.5) / 0.5, -1.0, (0.2 - 0.5) / 0.5], atol=1e-6)


def test_image_folder_labels(tmp_path: Path) -> None:
    from PIL import Image

    for cls in ("a", "b", "c"):
        (tmp_path / "three" / cls).mkdir(parents=True)
        Image.new("L", (2, 2)).save(tmp_path / "three" / cls / "0.png")
    src = ArraySource(tmp_path / "three", "x", "y", transform=ImageTransform((2, 2), "L"))
    with pytest.raises(DataError, match="two class subfolders"):
        images.load_image_labeled(src)
    (tmp_path / "labels.csv").write_text("file,label\n../outside.png,1\n")
    with pytest.raises(DataError, match="not an image inside the folder"):
        images.load_image_labeled(
            ArraySource(
                tmp_path / "three",
                "x",
                "y",
                labels=tmp_path / "labels.csv",
                transform=ImageTransform((2, 2), "L"),
            )
        )


def test_config_of_the_new_sources(tmp_path: Path) -> None:
    def cfg(train: dict[str, object]) -> object:
        raw = {
            "encoder": {
                "arch": "mlp",
                "weights": "e.safetensors",
                "input_dim": 4,
                "feature_dim": 2,
            },
            "head": {"arch": "linear", "weights": "h.safetensors"},
            "data": {"downstream_train": train},
        }
        return parse_config(raw, tmp_path / "tfbound.yaml")

    c = cfg({"path": "t.csv", "x": ["a", "b"], "y": "l", "positive": "spam"})
    src = c.data.downstream_train  # type: ignore[attr-defined]
    assert src.columns == ("a", "b") and src.positive == "spam"
    assert c.to_dict()["data"]["downstream_train"]["x"] == ["a", "b"]  # type: ignore[attr-defined]
    img = {"path": "imgs", "transform": {"resize": [4, 4], "mode": "L", "mean": [0.5], "std": [2]}}
    t = cfg(img).data.downstream_train.transform  # type: ignore[attr-defined]
    assert t == ImageTransform((4, 4), "L", 255.0, (0.5,), (2.0,))
    for bad, match in (
        ({"path": "t.csv", "x": []}, "1 to"),
        ({"path": "t.csv", "x": ["a", "a"]}, "twice"),
        ({"path": "t.csv", "positive": [1]}, "label value"),
        ({"path": "i", "transform": {"resize": [0, 4]}}, "sides"),
        ({"path": "i", "transform": {"resize": [4, 4], "mode": "CMYK"}}, "mode"),
        ({"path": "i", "transform": {"resize": [4, 4], "std": [0, 1, 1]}}, "std"),
        ({"path": "i", "transform": {"resize": [4, 4], "bogus": 1}}, "unknown"),
    ):
        with pytest.raises(ConfigError, match=match):
            cfg(bad)
    json.dumps(c.to_dict())  # type: ignore[attr-defined]

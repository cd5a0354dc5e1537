"""Image folders: PNG, JPEG or BMP files decoded by Pillow a batch at a time, with a declared
transform (``tfbound.config.ImageTransform``).

Labels: the class subfolders (``path/cat/*.png``, ``path/dog/*.png``: two of them, the positive one
named by ``positive:`` unless they are named ``0`` and ``1``), or a labels file ``labels:`` (a CSV
with columns ``file``, a path relative to the folder, and ``label``). An unlabeled split reads
every image under the folder. Files are taken in sorted order.

Each file is checked before it is decoded: its size on disk, and its width x height from the
header (a decompression bomb is refused before any pixel is decoded).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tfbound.config import ArraySource, ImageTransform
from tfbound.errors import DataError, first_line
from tfbound.io.datasets import LabeledArrays, labels_with_positive
from tfbound.io.overlap import array_row_digests

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
PIL_FORMATS = ["PNG", "JPEG", "BMP"]
MAX_IMAGES = 10_000_000
MAX_IMAGE_FILE_BYTES = 64 * 2**20
MAX_PIXELS = 4096 * 4096  # width x height of one decoded image
MAX_LABELS_FILE_BYTES = 1 * 2**30
IMAGES_HINT = "pip install 'tfbound[images]' (the 'pillow' package)"


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError as exc:
        raise DataError(f"an image folder needs the optional 'pillow': {IMAGES_HINT}") from exc
    return Image


def decode_image(path: Path, transform: ImageTransform) -> np.ndarray:
    """One image as float32 ``(channels, height, width)`` after ``transform``."""
    image_mod = _pil()
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DataError("image file not readable", path=path) from exc
    if size > MAX_IMAGE_FILE_BYTES:
        raise DataError(f"image file of {size} bytes, over {MAX_IMAGE_FILE_BYTES}", path=path)
    try:
        with image_mod.open(path, formats=PIL_FORMATS) as im:
            w, h = im.size
            if w * h > MAX_PIXELS or w < 1 or h < 1:
                raise DataError(
                    f"image of {w} x {h} pixels, over the limit of {MAX_PIXELS} (refused before "
                    "decoding)",
                    path=path,
                )
            im = im.convert(transform.mode)
            th, tw = transform.resize
            if (w, h) != (tw, th):
                im = im.resize((tw, th), image_mod.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.float32)
    except DataError:
        raise
    except Exception as exc:  # Pillow raises UnidentifiedImageError, OSError, ...
        raise DataError(
            f"not a readable PNG, JPEG or BMP image: {type(exc).__name__}: {first_line(exc, 80)}",
            path=path,
        ) from exc
    arr = arr[None] if arr.ndim == 2 else np.transpose(arr, (2, 0, 1))
    arr = arr / np.float32(transform.scale)
    if transform.mean:
        arr = arr - np.asarray(transform.mean, np.float32)[:, None, None]
    if transform.std:
        arr = arr / np.asarray(transform.std, np.float32)[:, None, None]
    return np.ascontiguousarray(arr, dtype=np.float32)


class ImageInputs:
    """An image folder read as an ``(n, channels, height, width)`` float32 array: a slice
    decodes only its images; nothing decoded is kept."""

    is_text = False
    dtype = np.dtype(np.float32)
    ndim = 4

    def __init__(self, files: Sequence[Path], transform: ImageTransform) -> None:
        self.files = list(files)
        self.transform = transform
        h, w = transform.resize
        self.shape: tuple[int, ...] = (len(self.files), transform.channels, h, w)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice):
            raise TypeError("ImageInputs reads slices of rows")
        index = range(*key.indices(self.shape[0]))
        out = np.empty((len(index), *self.shape[1:]), dtype=np.float32)
        for row, i in enumerate(index):
            out[row] = decode_image(self.files[i], self.transform)
        return out

    def row_digests(self) -> list[bytes]:
        """Digests of the transformed images (as an array of the same values would have)."""
        return array_row_digests(self)

    def subset(self, keep: np.ndarray) -> ImageInputs:
        return ImageInputs([self.files[int(i)] for i in keep], self.transform)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """Every image decoded (the pipeline reads slices; only an MLP encoder's capacity terms
        read the whole training split this way)."""
        out = self[0 : self.shape[0]]
        return out if dtype is None else out.astype(dtype)


def _images_under(folder: Path) -> list[Path]:
    found: list[Path] = []
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            if p.is_symlink():
                raise DataError(f"'{p.name[:60]}' is a link (refused)", path=folder)
            found.append(p)
            if len(found) > MAX_IMAGES:
                raise DataError(f"more than {MAX_IMAGES} images", path=folder)
    return found


def _folder(source: ArraySource) -> tuple[Path, ImageTransform]:
    if not source.path.is_dir():
        raise DataError("an image split (with 'transform:') needs a folder", path=source.path)
    if source.transform is None:
        raise DataError("an image folder needs 'transform:'", path=source.path)
    return source.path, source.transform


def load_image_inputs(source: ArraySource) -> ImageInputs:
    folder, transform = _folder(source)
    files = _images_under(folder)
    if not files:
        raise DataError(f"no {', '.join(IMAGE_SUFFIXES)} images", path=folder)
    return ImageInputs(files, transform)


def load_image_labeled(source: ArraySource) -> LabeledArrays:
    folder, transform = _folder(source)
    if source.labels is not None:
        files, raw = _from_labels_file(folder, source.labels)
        name = "label"
    else:
        classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())
        if len(classes) != 2:
            shown = ", ".join(p.name[:30] for p in classes[:6])
            raise DataError(
                f"a labeled image folder needs two class subfolders (or 'labels:'), found "
                f"{len(classes)} ({shown})",
                path=folder,
            )
        files, raw = [], []
        for c in classes:
            inside = _images_under(c)
            files += inside
            raw += [c.name] * len(inside)
        name = "class folder"
    if len(files) < 2:
        raise DataError(f"a labeled split needs at least 2 images, found {len(files)}", path=folder)
    y = labels_with_positive(np.asarray(raw, dtype=object), len(raw), source.positive, name, folder)
    return LabeledArrays(x=ImageInputs(files, transform), y=y, source=source)  # type: ignore[arg-type]


def _from_labels_file(folder: Path, labels: Path) -> tuple[list[Path], list[str]]:
    from tfbound.io.tables import check_file_size

    check_file_size(labels, MAX_LABELS_FILE_BYTES)
    root = folder.resolve()
    files: list[Path] = []
    raw: list[str] = []
    try:
        with labels.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or not {"file", "label"} <= set(reader.fieldnames):
                raise DataError("a labels file needs the columns 'file' and 'label'", path=labels)
            for row in reader:
                rel = row["file"] or ""
                p = (folder / rel).resolve()
                if not p.is_relative_to(root) or p.suffix.lower() not in IMAGE_SUFFIXES:
                    raise DataError(
                        f"line {reader.line_num}: not an image inside the folder", path=labels
                    )
                if not p.is_file():
                    raise DataError(f"line {reader.line_num}: image not found", path=labels)
                files.append(p)
                raw.append((row["label"] or "").strip())
                if len(files) > MAX_IMAGES:
                    raise DataError(f"more than {MAX_IMAGES} rows", path=labels)
    except UnicodeDecodeError as exc:
        raise DataError("not UTF-8 text", path=labels) from exc
    except csv.Error as exc:
        raise DataError(f"not a readable CSV: {first_line(exc, 80)}", path=labels) from exc
    return files, raw


__all__ = [
    "IMAGE_SUFFIXES",
    "ImageInputs",
    "decode_image",
    "load_image_inputs",
    "load_image_labeled",
]

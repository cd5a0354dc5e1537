"""The sample models' recipes: architectures, pretext tasks, epochs, learning rates, the bundled
data and the ``tfbound.yaml`` that ``tfbound pretrain`` writes beside the weights."""

from __future__ import annotations

import filecmp
import importlib.resources
from pathlib import Path
from typing import Any

from tfbound.errors import DataError
from tfbound.pretext import ContextEncoderTask, MaskedAutoencoderTask, PretextTask
from tfbound.training.loops import MLPArch, ViTArch

#: The bundled sample data, shipped as package data (``tfbound/training/data``): the keys below,
#: 8x8 digits in [0, 1]; a byte-identical copy of ``sample_models/data/digits_splits.npz``.
SAMPLE_SPLITS_RESOURCE = ("tfbound.training", "data/digits_splits.npz")


def sample_splits() -> Path:
    """The path of the bundled sample data, found with ``importlib.resources`` (so it is there
    after a plain wheel install, not only in a source checkout)."""
    package, name = SAMPLE_SPLITS_RESOURCE
    resource = importlib.resources.files(package).joinpath(name)
    path = Path(str(resource))
    if not isinstance(resource, Path) or not path.is_file():
        raise DataError(
            "the bundled sample data is not a file on disk (tfbound installed without its "
            "package data?); pass --data FILE.npz",
            path=path,
        )
    return path


def is_sample_data(path: Path) -> bool:
    """Whether ``path`` holds the bundled sample data (this copy or the repository's)."""
    return path.is_file() and filecmp.cmp(path, sample_splits(), shallow=False)


#: Keys read from the data file (those of the sample data): config data name -> (x, y). The
#: ``pretrain_val``, ``downstream_test`` and pool arrays are optional; ``radreg`` is needed with
#: RadReg (unlabeled downstream inputs disjoint from the labeled and test splits).
DATA_KEYS: dict[str, tuple[str, str | None]] = {
    "pretrain_train": ("pretrain_train_x", None),
    "pretrain_val": ("pretrain_val_x", None),
    "downstream_train": ("downstream_train_x", "downstream_train_y"),
    "downstream_test": ("downstream_test_x", "downstream_test_y"),
    "radreg": ("radreg_x", None),
    "downstream_unlabeled": ("downstream_pool_x", None),
}
#: The sample models' recipes: architecture, pretext task, epochs, learning rate.
RECIPES: dict[str, tuple[MLPArch | ViTArch, PretextTask, int, float]] = {
    "ce": (MLPArch(), ContextEncoderTask((1, 8, 8), (2, 2, 4, 4)), 600, 3e-4),
    "mae": (ViTArch(), MaskedAutoencoderTask(0.5), 600, 3e-3),
}
#: The sample models' recipes were chosen among about 20 candidates partly on the labeled split.
SAMPLE_ENCODER_CANDIDATES = 20


def _pretext_config(task: PretextTask) -> dict[str, Any]:
    if isinstance(task, ContextEncoderTask):
        return {
            "kind": "ce",
            "image_shape": list(task.image_shape),
            "block": list(task.block),
            "box": [0.0, 1.0],
            "seed": 0,
        }
    return {"kind": "mae", "mask_ratio": task.mask_ratio, "box": [0.0, 1.0], "seed": 0}


def pipeline_config(
    arch: MLPArch | ViTArch,
    task: PretextTask,
    data_path: Path,
    present: set[str],
    encoder_candidates: int = 1,
) -> dict[str, Any]:
    """A ``tfbound.yaml`` mapping for weights in the same folder and the data file's keys.

    ``present``: the ``DATA_KEYS`` names found in the file (``pretrain_train`` and
    ``downstream_train`` are always written); the pool goes in as ``downstream_unlabeled``.
    """
    from tfbound.config import DataSpec

    wanted = ["pretrain_train", "pretrain_val", "downstream_train", "downstream_test"]
    if "downstream_unlabeled" in DataSpec.__dataclass_fields__:
        wanted.append("downstream_unlabeled")  # the pool: disjoint from the RadReg set
    data_cfg: dict[str, Any] = {}
    for name in wanted:
        if name in ("pretrain_train", "downstream_train") or name in present:
            x_key, y_key = DATA_KEYS[name]
            entry = {"path": Path(data_path).absolute().as_posix(), "x": x_key}
            data_cfg[name] = entry if y_key is None else {**entry, "y": y_key}
    return {
        "encoder": {"weights": "encoder.safetensors", **arch.encoder_config()},
        "decoder": {"weights": "decoder.safetensors", **arch.decoder_config(task)},
        "head": {"arch": "linear", "weights": "head.safetensors"},
        "pretext": _pretext_config(task),
        "data": data_cfg,
        "bound": {"delta": 0.05, "encoder_candidates": int(encoder_candidates), "seed": 0},
    }


__all__ = [
    "DATA_KEYS",
    "RECIPES",
    "SAMPLE_ENCODER_CANDIDATES",
    "SAMPLE_SPLITS_RESOURCE",
    "is_sample_data",
    "pipeline_config",
    "sample_splits",
]

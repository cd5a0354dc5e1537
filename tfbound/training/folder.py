"""``tfbound pretrain``: pre-train a sample recipe, fit the head and write a pipeline folder
(weights, ``tfbound.yaml``, ``pretrain.json``), complete or not at all."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tfbound.features import ProgressFn
from tfbound.json_input import loads as bounded_json
from tfbound.pretext import ContextEncoderTask, MaskedAutoencoderTask
from tfbound.training.loops import (
    MLPArch,
    RadRegOptions,
    accuracy,
    features,
    fit_linear_head,
    pretrain_ce,
    pretrain_mae,
    save_weights,
)
from tfbound.training.recipes import (
    DATA_KEYS,
    RECIPES,
    SAMPLE_ENCODER_CANDIDATES,
    is_sample_data,
    pipeline_config,
    sample_splits,
)


def _has_key(path: Path, key: str) -> bool:
    import numpy as np

    with np.load(path, allow_pickle=False) as npz:
        return key in npz.files


#: the marker field of the ``pretrain.json`` tfbound writes: only such a folder is replaced
MANIFEST = "pretrain.json"
MARKER_KEY = "written_by"
MARKER_VALUE = "tfbound pretrain"


def is_tfbound_folder(folder: Path) -> bool:
    """``folder`` holds a ``pretrain.json`` with tfbound's marker (a folder tfbound wrote)."""

    manifest = folder / MANIFEST
    if manifest.is_symlink() or not manifest.is_file():
        return False
    try:
        if manifest.stat().st_size > 16 * 2**20:
            return False
        data = bounded_json(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get(MARKER_KEY) == MARKER_VALUE


def check_replaceable(target: Path, inputs: tuple[Path, ...] = ()) -> None:
    """Refuse to replace ``target`` unless it is absent, an empty folder, or a folder tfbound
    wrote (``is_tfbound_folder``), and never when one of ``inputs`` lies inside it."""
    from tfbound.errors import InputError

    if not (target.exists() or target.is_symlink()):
        return
    if target.is_symlink() or not target.is_dir():
        raise InputError("refused: exists and is not a folder (a link or a file)", path=target)
    real = target.resolve()
    for p in inputs:
        if p.resolve().is_relative_to(real):
            raise InputError(
                f"refused: an input of this run lies inside the folder to replace ({p.name})",
                path=target,
            )
    if any(target.iterdir()) and not is_tfbound_folder(target):
        raise InputError(
            f"refused to replace: not a folder written by tfbound pretrain (no {MANIFEST} with "
            f"{MARKER_KEY!r}: {MARKER_VALUE!r}); remove it yourself or choose another --out-dir",
            path=target,
        )


def write_pipeline_folder(
    target: str | Path,
    modules: dict[str, nn.Module],
    config: dict[str, Any],
    *,
    header: str = "",
    extra: dict[str, str] | None = None,
    inputs: tuple[Path, ...] = (),
) -> None:
    """``<name>.safetensors`` per module, ``tfbound.yaml`` and ``extra`` text files, all or none.

    Written into a temporary folder beside ``target``, then renamed onto it. An existing
    ``target`` is replaced whole only when ``check_replaceable`` allows it (empty, or written by
    tfbound, holding none of ``inputs``); else ``InputError`` and nothing is touched.
    """
    import json
    import shutil
    import tempfile

    import yaml

    from tfbound.io.atomic import folder_mode

    extra = dict(extra or {})
    extra.setdefault(MANIFEST, json.dumps({MARKER_KEY: MARKER_VALUE}, indent=1) + "\n")

    target = Path(target).absolute()
    check_replaceable(target, inputs)
    note = (
        "# encoder_candidates: J encoders were looked at on the labeled split (bound-spec "
        "section 2); raise it if you pick among runs (seeds, lambdas) by their labeled results.\n"
    )
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        for name, module in modules.items():
            save_weights(module, tmp / f"{name}.safetensors")
        text = header + note + yaml.safe_dump(config, sort_keys=False)
        (tmp / "tfbound.yaml").write_text(text, encoding="utf-8")
        for name, content in extra.items():
            (tmp / name).write_text(content, encoding="utf-8")
        os.chmod(tmp, folder_mode())
        if target.exists():
            check_replaceable(target, inputs)  # again, just before: it may have changed
            old = Path(
                tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent)
            )
            os.replace(target, old / "previous")
            try:
                os.replace(tmp, target)
            except BaseException:
                os.replace(old / "previous", target)  # put the old folder back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def pretrain_folder(
    kind: str,
    out: str | Path,
    *,
    data: str | Path | None = None,
    radreg: float = 0.0,
    seed: int = 0,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int = 50,
    radreg_draws: int = 256,
    radreg_seed: int = 0,
    head_lambda: float = 1e-3,
    encoder_candidates: int | None = None,
    force: bool = False,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Pre-train ``kind`` (``ce`` or ``mae``: the sample recipes), fit the head, write ``out``.

    ``out`` receives ``encoder/decoder/head.safetensors``, ``tfbound.yaml`` (absolute data paths)
    and ``pretrain.json`` (settings, per-epoch losses, accuracies), complete or not at all: they are
    written to a temporary folder beside ``out``, then renamed. Returns the ``pretrain.json`` data.
    ``encoder_candidates`` (the ``J`` of bound-spec section 2) defaults to 20 on the bundled
    sample data (the recipes were picked partly on its labeled split), else 1.
    """
    import json

    from tfbound import __version__
    from tfbound.config import ArraySource
    from tfbound.errors import DataError, InputError, TrainingError, UsageError
    from tfbound.io.datasets import load_inputs, load_labeled

    if kind not in RECIPES:
        raise UsageError(f"unknown pipeline {kind!r}; expected one of {', '.join(RECIPES)}")
    arch, task, default_epochs, default_lr = RECIPES[kind]
    n_epochs = default_epochs if epochs is None else int(epochs)
    rate = default_lr if lr is None else float(lr)
    target = Path(out).absolute()
    if not target.parent.is_dir():
        raise InputError("cannot write: the folder does not exist", path=target.parent)
    if target.exists() and not (target.is_dir() and not any(target.iterdir())) and not force:
        raise UsageError(f"{target} exists; pass --force to replace it")
    data_path = (sample_splits() if data is None else Path(data)).absolute()
    check_replaceable(target, (data_path,))  # before any training: a refusal costs nothing
    if data_path.suffix != ".npz":
        raise DataError("--data must be an .npz file with the sample data's keys", path=data_path)
    n_candidates = encoder_candidates
    if n_candidates is None:
        n_candidates = SAMPLE_ENCODER_CANDIDATES if is_sample_data(data_path) else 1
    if n_candidates < 1:
        raise UsageError(f"encoder_candidates must be >= 1, got {n_candidates}")

    def src(name: str) -> ArraySource:
        return ArraySource(data_path, *DATA_KEYS[name])

    def present(name: str) -> bool:
        return _has_key(data_path, DATA_KEYS[name][0])

    x_pre = load_inputs(src("pretrain_train"))
    width = arch.input_dim
    if x_pre.reshape(x_pre.shape[0], -1).shape[1] != width:
        raise DataError(
            f"'{DATA_KEYS['pretrain_train'][0]}' has inputs of shape {tuple(x_pre.shape[1:])}; "
            f"the {kind} recipe reads {width} values per example (8x8 single-channel images)",
            path=data_path,
        )
    train = load_labeled(src("downstream_train"))
    test = load_labeled(src("downstream_test")) if present("downstream_test") else None
    options = None
    radreg_key = DATA_KEYS["radreg"][0]
    if radreg > 0:
        if not present("radreg"):
            raise DataError(
                f"RadReg needs unlabeled downstream inputs '{radreg_key}' (disjoint from the "
                "labeled and test splits)",
                path=data_path,
            )
        from tfbound.bounds.disagreement import check_pool_disjoint

        u = load_inputs(src("radreg"))
        others = [train.x] + ([test.x] if test is not None else [])
        if present("downstream_unlabeled"):
            others.append(load_inputs(src("downstream_unlabeled")))  # the pool sees no encoder
        check_pool_disjoint(u.reshape(u.shape[0], -1), *(o.reshape(o.shape[0], -1) for o in others))
        options = RadRegOptions(
            lam=float(radreg),
            unlabeled_x=torch.from_numpy(u.astype("float32")),
            n_draws=radreg_draws,
            seed=radreg_seed,
        )

    x = torch.from_numpy(x_pre.astype("float32"))
    try:
        if isinstance(arch, MLPArch):
            assert isinstance(task, ContextEncoderTask)
            res = pretrain_ce(
                arch,
                task,
                x,
                epochs=n_epochs,
                lr=rate,
                seed=seed,
                batch_size=batch_size,
                radreg=options,
                progress=progress,
            )
        else:
            assert isinstance(task, MaskedAutoencoderTask)
            res = pretrain_mae(
                arch,
                task,
                x,
                epochs=n_epochs,
                lr=rate,
                seed=seed,
                batch_size=batch_size,
                radreg=options,
                progress=progress,
            )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if progress is not None:
        progress("fitting the linear head", 0, 1)
    y01 = torch.from_numpy((train.y > 0).astype("int64"))
    z_train = features(res.encoder, torch.from_numpy(train.x.astype("float32")))
    head = fit_linear_head(z_train, y01, head_lambda)
    summary: dict[str, Any] = {
        MARKER_KEY: MARKER_VALUE,
        "tfbound_version": __version__,
        "pipeline": kind,
        "data": data_path.as_posix(),
        "seed": seed,
        "epochs": n_epochs,
        "lr": rate,
        "batch_size": batch_size,
        "head_lambda": head_lambda,
        "radreg": None
        if options is None
        else {
            "lambda": options.lam,
            "unlabeled_key": radreg_key,
            "m": int(options.unlabeled_x.shape[0]),
            "n_draws": options.n_draws,
            "seed": options.seed,
            "radius": options.radius,
            "normalize": options.normalize,
            "bias_const": options.bias_const,
            "per_epoch": list(res.radreg),
        },
        "pretext_train_mse_per_epoch": list(res.pretext_mse),
        "downstream_train_accuracy": accuracy(head, z_train, y01),
    }
    if test is not None:
        z_test = features(res.encoder, torch.from_numpy(test.x.astype("float32")))
        y_test = torch.from_numpy((test.y > 0).astype("int64"))
        summary["downstream_test_accuracy"] = accuracy(head, z_test, y_test)
    if progress is not None:
        progress("fitting the linear head", 1, 1)

    present_names = {name for name in DATA_KEYS if present(name)}
    config = pipeline_config(arch, task, data_path, present_names, n_candidates)
    header = (
        f"# Written by `tfbound pretrain {kind}` (seed {seed}, {n_epochs} epochs, lr {rate:g}, "
        + ("no RadReg" if options is None else f"RadReg lambda {options.lam:g} on '{radreg_key}'")
        + "); see pretrain.json.\n"
    )
    try:
        manifest = json.dumps(summary, indent=1, sort_keys=True, allow_nan=False) + "\n"
    except ValueError as exc:  # a NaN or Inf that the training checks missed: write nothing
        raise TrainingError(f"training gave a non-finite summary value: {exc}") from exc
    write_pipeline_folder(
        target,
        {"encoder": res.encoder, "decoder": res.decoder, "head": head},
        config,
        header=header,
        extra={MANIFEST: manifest},
        inputs=(data_path,),
    )
    return summary


__all__ = ["check_replaceable", "is_tfbound_folder", "pretrain_folder", "write_pipeline_folder"]

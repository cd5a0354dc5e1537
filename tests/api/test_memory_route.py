"""The in-memory route against the config route on the sample models, and what every public
call leaves as it found it (grad mode, each submodule's train/eval mode, the parameters)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import tfbound
from tests.api.conftest import Sample, load_sample
from tests.helpers import REPO_ROOT
from tfbound.errors import DataError, InputError, UsageError

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

#: what differs by construction: where the inputs came from (paths vs digests)
PROVENANCE = {"config", "model", "data"}


def _numbers(report: tfbound.Report) -> dict[str, Any]:
    d = report.to_dict()
    return {k: v for k, v in d.items() if k not in PROVENANCE}


@pytest.mark.parametrize("name", ["ce_mlp", "mae_vit"])
def test_the_in_memory_route_gives_the_config_routes_report(name: str) -> None:
    sample = load_sample(name)
    from_config = tfbound.estimate(REPO_ROOT / "sample_models" / name)
    in_memory = tfbound.estimate(**sample.kwargs())
    assert _numbers(in_memory) == _numbers(from_config)  # every term, bound, delta, warning
    assert len(from_config.terms) > 10 and from_config.get("pretext_heldout_risk") is not None
    a, b = from_config.to_dict(), in_memory.to_dict()
    for part in ("encoder", "head"):
        for field in ("parameters", "feature_dim", "head_norm"):
            assert a["model"][part].get(field) == b["model"][part].get(field)
    assert a["data"]["pretrain"] == b["data"]["pretrain"]
    for split in ("downstream_train", "downstream_test"):
        assert "path" in a["data"][split] and "path" not in b["data"][split]
        assert b["data"][split]["source"] == "memory"
        assert len(b["data"][split]["sha256"]) == 64
        same = {k: v for k, v in a["data"][split].items() if k != "path"}
        assert same.items() <= b["data"][split].items()
    assert b["config"]["source"] == "memory" and b["config"]["bound"] == a["config"]["bound"]
    assert "path" not in json.dumps(b["config"])


def test_datasets_dataloaders_and_tensors_give_the_arrays_report(ce_mlp: Sample) -> None:
    kw = ce_mlp.kwargs()
    reference = _numbers(tfbound.estimate(**kw))
    (x, y), (xt, yt) = kw["train"], kw["test"]
    tensors = {**kw, "train": (torch.from_numpy(x), torch.from_numpy(y)), "test": (xt, yt)}
    assert _numbers(tfbound.estimate(**tensors)) == reference
    dataset = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    loader = DataLoader(TensorDataset(torch.from_numpy(xt), torch.from_numpy(yt)), batch_size=7)
    streamed = {**kw, "train": dataset, "test": loader}
    report = tfbound.estimate(**streamed)
    assert _numbers(report) == reference
    assert report.to_dict()["data"]["downstream_train"]["dataset"] == "TensorDataset"


class _Counting(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """A map-style dataset that records the largest number of items read by one slice."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y, self.reads = x, y, 0

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.reads += 1
        return torch.from_numpy(self.x[i]), torch.tensor(self.y[i])


def test_a_dataset_is_read_in_batches() -> None:
    """A ViT encoder needs no whole-split statistic: the test split is read item by item, each
    pass at most batch_size items at once (checked through the encoder's batch sizes). Without
    a pool: the pool's disjointness check reads every other split whole (docs/python.md)."""
    sample = load_sample("mae_vit")
    kw = sample.kwargs()
    xt, yt = kw["test"]
    test = _Counting(xt, yt)
    sizes: list[int] = []
    hook = sample.encoder.register_forward_pre_hook(lambda m, a: sizes.append(a[0].shape[0]))
    try:
        tfbound.estimate(**{**kw, "test": test, "pool": None, "batch_size": 64})
    finally:
        hook.remove()
    assert max(sizes) <= 64
    # the labels once, the first row (its shape) once, the test pass once
    assert test.reads == 2 * len(xt) + 1


def _snapshot(*modules: nn.Module) -> tuple[list[bool], list[torch.Tensor]]:
    modes = [m.training for top in modules for m in top.modules()]
    params = [p.detach().clone() for top in modules for p in top.state_dict().values()]
    return modes, params


def _mixed_modes(*modules: nn.Module) -> None:
    for top in modules:
        top.train()
        subs = list(top.modules())
        if len(subs) > 1:
            subs[1].eval()  # a frozen submodule inside a training module


def _calls(sample: Sample) -> dict[str, Any]:
    kw = sample.kwargs()
    x, y = kw["train"]
    w = sample.head.linear.weight.detach().numpy().reshape(-1)
    b = float(sample.head.linear.bias.detach())
    z = tfbound.api.estimate  # noqa: F841 - the module is importable as tfbound.api
    from tfbound.features import encode

    feats = encode(sample.encoder, x)
    return {
        "estimate (memory)": lambda: tfbound.estimate(**kw),
        "estimate (config)": lambda: tfbound.estimate(REPO_ROOT / "sample_models" / sample.name),
        "certify": lambda: tfbound.certify(feats, y, w, b, n_draws=500),
        "inspect": lambda: tfbound.inspect(sample.encoder),
    }


@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("call", ["estimate (memory)", "estimate (config)", "certify", "inspect"])
def test_public_calls_leave_grad_mode_modes_and_parameters(
    ce_mlp: Sample, call: str, grad: bool
) -> None:
    modules = (ce_mlp.encoder, ce_mlp.head, ce_mlp.decoder)
    fn = _calls(ce_mlp)[call]
    _mixed_modes(*modules)
    modes, params = _snapshot(*modules)
    with torch.set_grad_enabled(grad):
        result = fn()
        assert torch.is_grad_enabled() is grad
        assert not torch.is_inference_mode_enabled()
    after_modes, after_params = _snapshot(*modules)
    assert after_modes == modes and False in modes and True in modes
    assert all(torch.equal(a, b) for a, b in zip(params, after_params, strict=True))
    assert all(p.requires_grad for m in modules for p in m.parameters())
    assert result is not None
    for m in modules:
        m.eval()


def test_certify_matches_the_estimate_on_the_same_features(ce_mlp: Sample) -> None:
    """Certify on h(x) gives the frozen-encoder certificates of the estimate with h, and the
    observed test error counted here."""
    from tfbound.features import encode

    kw = ce_mlp.kwargs()
    (x, y), (xt, yt) = kw["train"], kw["test"]
    enc = ce_mlp.encoder
    z, zt, zp = encode(enc, x), encode(enc, xt), encode(enc, kw["pool"])
    w = ce_mlp.head.linear.weight.detach().double().numpy().reshape(-1)
    b = float(ce_mlp.head.linear.bias.detach())
    got = tfbound.certify(z, y, w, b, z_test=zt, y_test=yt, z_pool=zp, encoder_candidates=20)
    full = tfbound.estimate(**{**kw, "pretext": None})
    for key in (
        "certified_test_error_bound",
        "pac_bayes_deterministic_bound",
        "disagreement_bound",
        "test_set_bound",
        "rirc",
    ):
        a, c = got.get(key), full.get(key)
        assert a is not None and c is not None, key
        assert a.to_dict() == c.to_dict(), key
    # the observed test error from the head's scores, computed here in float64
    yt_pm = 2.0 * yt - 1.0
    errors = int(np.sum(yt_pm * (zt.astype(np.float32).astype(np.float64) @ w + b) <= 0))
    observed = got.get("observed_test_error")
    assert observed is not None and observed.value == pytest.approx(errors / len(yt), abs=1e-12)
    assert any("certify: features given" in w for w in got.warnings)


def test_heads_are_read_from_plain_torch_modules(ce_mlp: Sample) -> None:
    kw = ce_mlp.kwargs()
    lin = nn.Linear(32, 1)
    with torch.no_grad():
        lin.weight.copy_(ce_mlp.head.linear.weight)
        lin.bias.copy_(ce_mlp.head.linear.bias)
    kw_plain = {**kw, "pretext": None}
    assert _numbers(tfbound.estimate(**{**kw_plain, "head": lin})) == _numbers(
        tfbound.estimate(**kw_plain)
    )
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Linear(32, 8), nn.ReLU(), nn.Linear(8, 1))
    report = tfbound.estimate(**{**kw_plain, "head": seq})
    assert report.get("certified_test_error_bound") is not None
    assert report.to_dict()["model"]["head"]["class"] == "Sequential"


def test_in_memory_errors_are_one_line(ce_mlp: Sample) -> None:
    kw = ce_mlp.kwargs()
    with pytest.raises(UsageError, match="not both"):
        tfbound.estimate(REPO_ROOT / "sample_models" / "ce_mlp", encoder=ce_mlp.encoder)
    with pytest.raises(UsageError, match="head must be"):
        tfbound.estimate(**{**kw, "head": nn.Linear(32, 2)})
    with pytest.raises(InputError, match="feature dimension mismatch"):
        tfbound.estimate(**{**kw, "head": nn.Linear(5, 1)})
    x, y = kw["train"]
    with pytest.raises(DataError, match="must be binary"):
        tfbound.estimate(**{**kw, "train": (x, y + 2)})
    with pytest.raises(InputError, match="delta"):
        tfbound.estimate(**{**kw, "delta": 2.0})
    with pytest.raises(InputError, match="unknown key"):
        tfbound.estimate(**{**kw, "dleta": 0.1})
    with pytest.raises(DataError, match="float32 or float64"):
        tfbound.estimate(**{**kw, "train": (x.astype(np.int64), y)})


def test_bound_options_override_a_config() -> None:
    path = REPO_ROOT / "sample_models" / "ce_mlp"
    report = tfbound.estimate(path, encoder_candidates=1)
    assert report.to_dict()["config"]["bound"]["encoder_candidates"] == 1
    base = tfbound.estimate(path)
    a, b = report.get("certified_test_error_bound"), base.get("certified_test_error_bound")
    assert a is not None and b is not None and a.value is not None and b.value is not None
    assert a.value < b.value  # a union over 1 candidate instead of 20 is tighter

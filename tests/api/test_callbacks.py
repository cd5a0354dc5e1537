"""The Lightning and Hugging Face callbacks with the real packages on a tiny model: reports every
epoch, headline numbers logged, a failing gate stops training, and the training itself is the
same with and without the callback (same seed, same final weights)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from tests.helpers import gaussian_task
from tfbound.models import LinearHead, MLPEncoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

D_IN = 6


def _data() -> dict[str, Any]:
    x, y = gaussian_task(160, D_IN, seed=3)
    xt, yt = gaussian_task(100, D_IN, seed=4)
    return {
        "x": x.astype(np.float32),
        "y": ((y + 1) / 2).astype(np.float32),
        "test": (xt.astype(np.float32), ((yt + 1) / 2).astype(np.float32)),
    }


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = MLPEncoder(D_IN, [8], 4, "relu")
        self.head = LinearHead(4)
        self.drop = nn.Dropout(0.2)  # draws from the global RNG: a callback must not shift it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.encoder(x)))


def _loss(net: _Net, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.binary_cross_entropy_with_logits(net(x), y)


# -- Lightning --------------------------------------------------------------------------------


def _lightning_run(tmp_path: Path, callback: Any, epochs: int = 2) -> tuple[Any, Any]:
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader, TensorDataset

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = _Net()
            self.encoder, self.head = self.net.encoder, self.net.head

        def training_step(self, batch: Any, _: int) -> torch.Tensor:
            return _loss(self.net, *batch)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.2)

    d = _data()
    pl.seed_everything(0, verbose=False)
    module = Module()
    loader = DataLoader(
        TensorDataset(torch.from_numpy(d["x"]), torch.from_numpy(d["y"])),
        batch_size=32,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=CSVLogger(tmp_path / "logs"),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[] if callback is None else [callback],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice on num_workers and log intervals
        trainer.fit(module, loader)
    return module, trainer


def test_lightning_callback_reports_logs_and_leaves_training_as_it_was(tmp_path: Path) -> None:
    from tfbound.callbacks.lightning import TfboundCallback

    d = _data()
    callback = TfboundCallback(
        train=(d["x"], d["y"]), test=d["test"], save_dir=tmp_path / "reports", n_draws=500
    )
    with_cb, trainer = _lightning_run(tmp_path / "a", callback)
    without, _ = _lightning_run(tmp_path / "b", None)
    for a, b in zip(with_cb.state_dict().values(), without.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    points = callback.monitor.checkpoints
    assert [p.epoch for p in points] == [1, 2]
    assert len(list((tmp_path / "reports").glob("*.json"))) == 2
    # the last report is the one of the final weights, computed here afresh
    import tfbound

    again = tfbound.estimate(
        encoder=with_cb.encoder, head=with_cb.head, train=(d["x"], d["y"]), test=d["test"],
        n_draws=500,
    )  # fmt: skip
    assert points[-1].report.to_dict()["terms"] == again.to_dict()["terms"]
    logged = (Path(trainer.logger.log_dir) / "metrics.csv").read_text()
    assert "tfbound/best_certified_test_error_bound" in logged
    assert "tfbound/observed_test_error" in logged


def test_lightning_callback_stops_on_a_failing_gate(tmp_path: Path) -> None:
    from tfbound.callbacks.lightning import TfboundCallback

    d = _data()
    callback = TfboundCallback(
        train=(d["x"], d["y"]), test=d["test"], gates={"test_set_bound": "<= 0.0001"}, n_draws=200
    )
    _, trainer = _lightning_run(tmp_path, callback, epochs=5)
    assert trainer.current_epoch == 1  # stopped after the first report
    point = callback.monitor.checkpoints[-1]
    assert point.gates is not None and not point.gates.passed


def test_the_finetuned_route_keeps_the_starting_encoder(tmp_path: Path) -> None:
    from tfbound.callbacks.lightning import TfboundCallback

    d = _data()
    callback = TfboundCallback(train=(d["x"], d["y"]), test=d["test"], finetuned=True, n_draws=200)
    module, _ = _lightning_run(tmp_path, callback, epochs=1)
    ref = callback.monitor.reference
    assert ref is not None and not any(p.requires_grad for p in ref.parameters())
    report = callback.monitor.reports[-1]
    assert report.get("finetuned_test_error_bound") is not None
    frozen = report.get("certified_test_error_bound")
    assert frozen is not None and frozen.status.value == "diagnostic"
    assert not torch.equal(
        ref.state_dict()["net.0.weight"], module.encoder.state_dict()["net.0.weight"]
    )


# -- Hugging Face -----------------------------------------------------------------------------


def _hf_run(tmp_path: Path, callback: Any, epochs: int = 2) -> tuple[Any, Any]:
    from transformers import Trainer, TrainingArguments

    class HFNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = _Net()

        def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loss": _loss(self.net, x, labels)}

    class Rows(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
        def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
            self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)

        def __len__(self) -> int:
            return len(self.x)

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            return {"x": self.x[i], "labels": self.y[i]}

    d = _data()
    torch.manual_seed(0)
    model = HFNet()
    args = TrainingArguments(
        output_dir=str(tmp_path / "hf"),
        num_train_epochs=epochs,
        per_device_train_batch_size=32,
        learning_rate=0.2,
        optim="sgd",
        lr_scheduler_type="constant",
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_strategy="no",
        seed=0,
        data_seed=0,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=Rows(d["x"], d["y"]),
        callbacks=[] if callback is None else [callback],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    return model, trainer


def _hf_getters() -> dict[str, Any]:
    return {"encoder": lambda m: m.net.encoder, "head": lambda m: m.net.head}


def test_huggingface_callback_reports_logs_and_leaves_training_as_it_was(tmp_path: Path) -> None:
    from tfbound.callbacks.huggingface import TfboundTrainerCallback

    d = _data()
    callback = TfboundTrainerCallback(
        train=(d["x"], d["y"]), test=d["test"], n_draws=500, **_hf_getters()
    )
    with_cb, trainer = _hf_run(tmp_path / "a", callback)
    without, _ = _hf_run(tmp_path / "b", None)
    for a, b in zip(with_cb.state_dict().values(), without.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert [p.epoch for p in callback.monitor.checkpoints] == [1, 2]
    logged = [h for h in trainer.state.log_history if "tfbound/test_set_bound" in h]
    assert len(logged) == 2 and logged[-1]["epoch"] == pytest.approx(2.0)


def test_huggingface_callback_every_n_steps_and_gate_stop(tmp_path: Path) -> None:
    from tfbound.callbacks.huggingface import TfboundTrainerCallback

    d = _data()
    callback = TfboundTrainerCallback(
        unit="step",
        every=3,
        train=(d["x"], d["y"]),
        test=d["test"],
        gates={"test_set_bound": "<= 0.0001"},
        n_draws=200,
        **_hf_getters(),
    )
    _, trainer = _hf_run(tmp_path, callback, epochs=3)
    assert [p.step for p in callback.monitor.checkpoints] == [3]
    assert trainer.state.global_step == 3  # stopped at the first report

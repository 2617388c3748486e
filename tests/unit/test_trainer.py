"""Trainer factory (devices, strategy, accumulation, step-based validation) and callbacks."""

from __future__ import annotations

import csv

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lmops.config import HardwareConfig, LmopsError
from lmops.io import write_csv
from lmops.training.callbacks import MetricHistory, ThroughputLogger
from lmops.training.progress import StepProgressBar
from lmops.training.trainer import (
    accumulation,
    build_trainer,
    expected_world_size,
    resolve_devices,
)
from tests.unit.tiny import HW

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def hw(**changes) -> HardwareConfig:
    values = {"accelerator": "cpu", "devices": "1", "progress_bar": False}
    values.update(changes)
    return HardwareConfig(**values)


def test_resolve_devices() -> None:
    assert resolve_devices(hw(devices="auto")) == "auto"
    assert resolve_devices(hw(devices="2")) == 2
    assert resolve_devices(hw(devices="-1")) == -1
    assert resolve_devices(hw(devices="0,1")) == [0, 1]
    for bad in ("two", "0", "-3"):
        with pytest.raises(LmopsError, match="hardware.devices"):
            resolve_devices(hw(devices=bad))


def test_expected_world_size() -> None:
    assert expected_world_size(hw(devices="auto")) == 1  # one process on CPU
    assert expected_world_size(hw(devices="2", num_nodes=3)) == 6
    assert expected_world_size(hw(devices="0,1,2")) == 3


def test_accumulation() -> None:
    assert accumulation(32, 8, 2) == 2
    assert accumulation(16, 16, 1) == 1
    with pytest.raises(LmopsError, match="micro_batch_size"):
        accumulation(30, 8, 1)
    with pytest.raises(LmopsError):
        accumulation(16, 16, 2)  # two devices of 16 overshoot a global batch of 16


def test_unsupported_strategy_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(LmopsError, match="hardware.strategy"):
        build_trainer(
            hw(strategy="horovod"),
            max_steps=1,
            precision="32-true",
            val_every=1,
            limit_val_batches=1,
            grad_clip=0.0,
            accumulate=1,
            default_root_dir=tmp_path,
        )


def test_build_trainer_settings(tmp_path) -> None:
    trainer = build_trainer(
        HW,
        max_steps=50,
        precision="bf16-mixed",
        val_every=10,
        limit_val_batches=3,
        grad_clip=0.5,
        accumulate=4,
        default_root_dir=tmp_path,
    )
    assert trainer.max_steps == 50
    assert trainer.val_check_interval == 40  # micro-batches: 10 optimizer steps x 4
    assert trainer.check_val_every_n_epoch is None
    assert trainer.num_sanity_val_steps == 0
    assert trainer.limit_val_batches == 3
    assert trainer.gradient_clip_val == 0.5
    assert trainer.accumulate_grad_batches == 4
    assert trainer.precision == "bf16-mixed"
    assert trainer.loggers == []  # logger=None: no lightning_logs/ in stage outputs
    assert trainer.checkpoint_callback is None
    assert trainer.default_root_dir == str(tmp_path)
    with pytest.raises(LmopsError):
        build_trainer(
            HW,
            max_steps=1,
            precision="32-true",
            val_every=1,
            limit_val_batches=1,
            grad_clip=0.0,
            accumulate=0,
            default_root_dir=tmp_path,
        )


class Regression(L.LightningModule):
    """A linear model; logs the loss per step and a value only on some steps."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.val_batches = 0
        self.train_batches = 0

    def training_step(self, batch, batch_idx):
        self.train_batches += 1
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train/loss", loss, on_step=True, on_epoch=False)
        if self.global_step % 3 == 0:
            self.log("train/sometimes", torch.tensor(float(self.global_step)), on_step=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.val_batches += 1
        x, y = batch
        self.log("val/loss", torch.nn.functional.mse_loss(self.layer(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def loaders(n_train: int = 16, batch: int = 4) -> tuple[DataLoader, DataLoader]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_train, 4, generator=g)
    y = x.sum(dim=1, keepdim=True)
    return DataLoader(TensorDataset(x, y), batch_size=batch), DataLoader(
        TensorDataset(x, y), batch_size=batch
    )


def test_step_based_validation_across_epochs_with_accumulation(tmp_path) -> None:
    # 4 batches per epoch, 2 micro-batches per step: an epoch is 2 steps; validate every 3 steps
    train, val = loaders()
    module = Regression()
    history = MetricHistory()
    trainer = build_trainer(
        HW,
        max_steps=12,
        precision="32-true",
        val_every=3,
        limit_val_batches=2,
        grad_clip=1.0,
        accumulate=2,
        default_root_dir=tmp_path,
        callbacks=[history],
    )
    trainer.fit(module, train, val)
    assert trainer.global_step == 12
    assert module.train_batches == 24
    assert [s for s, _ in history.series("val/loss")] == [3, 6, 9, 12]
    assert module.val_batches == 4 * 2  # limit_val_batches per validation
    assert [s for s, _ in history.series("train/loss")] == list(range(1, 13))
    # a metric logged only on some steps appears only on those steps (no stale repeats)
    assert history.series("train/sometimes") == [(1, 0.0), (4, 3.0), (7, 6.0), (10, 9.0)]
    losses = [v for _, v in history.series("val/loss")]
    assert losses[-1] < losses[0]


def test_metric_history_rows_make_the_history_csv(tmp_path) -> None:
    train, val = loaders()
    history = MetricHistory()
    trainer = build_trainer(
        HW,
        max_steps=6,
        precision="32-true",
        val_every=3,
        limit_val_batches=1,
        grad_clip=0.0,
        accumulate=1,
        default_root_dir=tmp_path,
        callbacks=[history],
    )
    trainer.fit(Regression(), train, val)
    write_csv(tmp_path / "history.csv", history.rows)  # as the stages write it for dvc plots
    with (tmp_path / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["step", "train/loss", "train/sometimes", "val/loss"]
    assert [r["step"] for r in rows] == ["1", "2", "3", "4", "5", "6"]
    assert [r["val/loss"] != "" for r in rows] == [False, False, True, False, False, True]
    assert all(float(r["train/loss"]) >= 0 for r in rows)
    assert history.rows[2]["step"] == 3 and isinstance(history.rows[2]["val/loss"], float)


def test_throughput_logger_excludes_warmup_and_counts_tokens(tmp_path) -> None:
    train, val = loaders(n_train=64)
    history = MetricHistory()
    trainer = build_trainer(
        HW,
        max_steps=9,
        precision="32-true",
        val_every=100,
        limit_val_batches=0,
        grad_clip=0.0,
        accumulate=1,
        default_root_dir=tmp_path,
        callbacks=[
            ThroughputLogger(
                tokens_per_step=4, every_n_steps=4, flops_per_token=1.0, peak_flops=None
            ),
            history,
        ],
    )
    trainer.fit(Regression(), train, val)
    points = history.series("train/tokens_per_sec")
    assert [s for s, _ in points] == [5, 9]  # clock starts after step 1
    assert all(v > 0 for _, v in points)


def test_progress_bar_counts_steps_of_max_steps_and_shows_loss_and_throughput(
    tmp_path, capsys
) -> None:
    # 4 batches per epoch, 2 micro-batches per step: 6 steps span 3 epochs
    train, val = loaders()
    bar = StepProgressBar(metrics_every_s=0.0)  # read metrics every step: no timing in the test
    throughput = ThroughputLogger(
        tokens_per_step=8, every_n_steps=1, flops_per_token=1.0, peak_flops=None
    )
    trainer = build_trainer(
        hw(progress_bar=True),
        max_steps=6,
        precision="32-true",
        val_every=3,
        limit_val_batches=1,
        grad_clip=0.0,
        accumulate=2,
        default_root_dir=tmp_path,
        callbacks=[throughput, bar],
    )
    assert trainer.progress_bar_callback is bar
    trainer.fit(Regression(), train, val)
    tqdm_bar = bar.train_progress_bar
    assert (tqdm_bar.n, tqdm_bar.total) == (6, 6)  # optimizer steps, not batches or epochs
    assert tqdm_bar.desc.startswith("steps")
    postfix = bar.get_metrics(trainer, trainer.lightning_module)
    assert set(postfix) == {"loss", "val_loss", "tok/s"}  # and no v_num
    assert float(postfix["loss"]) >= 0 and postfix["loss"] == f"{float(postfix['loss']):.3f}"
    assert float(postfix["tok/s"].replace(",", "")) > 0
    captured = capsys.readouterr()
    shown = captured.out + captured.err  # Lightning's tqdm writes to stdout
    assert "Epoch" not in shown and "v_num" not in shown and "6/6" in shown


def test_build_trainer_adds_the_step_bar_only_with_a_progress_bar(tmp_path) -> None:
    def trainer_with(progress_bar: bool) -> L.Trainer:
        return build_trainer(
            hw(progress_bar=progress_bar),
            max_steps=5,
            precision="32-true",
            val_every=5,
            limit_val_batches=1,
            grad_clip=0.0,
            accumulate=1,
            default_root_dir=tmp_path,
        )

    assert isinstance(trainer_with(True).progress_bar_callback, StepProgressBar)
    assert trainer_with(False).progress_bar_callback is None

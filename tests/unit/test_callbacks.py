"""Training callbacks: MFU, the non-finite loss guard, best weights and early stopping.

A scripted module stands in for the GPT: one linear layer trained by SGD (its weights change
every step), a training loss that turns NaN from a chosen step, and validation losses read from
a list, so each test knows exactly which step is best or bad.
"""

from __future__ import annotations

import itertools
import warnings
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import torch.nn as nn
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from lmops.config import HardwareConfig, LmopsError, PretrainConfig
from lmops.training import callbacks
from lmops.training.callbacks import (
    BestWeights,
    NonFiniteGuard,
    NonFiniteLossError,
    ThroughputLogger,
    mfu,
    pretrain_callbacks,
    snapshot_state,
)
from lmops.training.trainer import build_trainer
from tests.unit.tiny import HW

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Scripted(L.LightningModule):
    """``self.model`` is trained for real; ``val_losses[i]`` is what validation round i logs."""

    def __init__(self, val_losses: list[float] = (), nan_from_step: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = nn.Linear(4, 1)
        self.val_losses = list(val_losses)
        self.nan_from_step = nan_from_step  # 1-based optimizer step whose loss is NaN onwards
        self.rounds = 0

    def training_step(self, batch: tuple[torch.Tensor], batch_idx: int) -> torch.Tensor:
        (x,) = batch
        loss = (self.model(x) - 1.0).pow(2).mean()
        step = self.global_step + 1  # the step this batch is part of
        if self.nan_from_step is not None and step >= self.nan_from_step:
            loss = loss * float("nan")
        self.log("train/loss", loss, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor], batch_idx: int) -> None:
        pass

    def on_validation_epoch_end(self) -> None:
        self.log("val/loss", torch.tensor(self.val_losses[self.rounds]))
        self.rounds += 1

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


class WeightRecorder(Callback):
    """A copy of the weights after every optimizer step, by step number."""

    def __init__(self) -> None:
        self.by_step: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        state = pl_module.model.state_dict()
        self.by_step[trainer.global_step] = {k: v.clone() for k, v in state.items()}


def loader(n: int = 4000, batch_size: int = 4) -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(n, 4)), batch_size=batch_size)


def trainer(tmp_path, callbacks, *, max_steps=50, val_every=5, accumulate=1, **kw) -> L.Trainer:
    return build_trainer(
        HW,
        max_steps=max_steps,
        precision="32-true",
        val_every=val_every,
        limit_val_batches=1,
        grad_clip=1.0,
        accumulate=accumulate,
        default_root_dir=tmp_path,
        callbacks=callbacks,
        **kw,
    )


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


# --------------------------------------------------------------------------- MFU


def test_mfu_math() -> None:
    # 124M-parameter GPT-2 at 1024 tokens: ~6 * 124e6 + 12 * 12 * 768 * 1024 FLOPs per token
    fpt = 6 * 124e6 + 12 * 12 * 768 * 1024
    assert mfu(fpt, 500_000, 989e12, 1) == pytest.approx(fpt * 500_000 / 989e12)
    assert mfu(fpt, 1_000_000, 989e12, 2) == pytest.approx(mfu(fpt, 500_000, 989e12, 1))


def peak_resolved_for(device: torch.device, peak_flops: float | None = None) -> float | None:
    """The peak FLOP/s a ThroughputLogger settles on at train start on ``device``."""
    throughput = ThroughputLogger(
        tokens_per_step=1, every_n_steps=1, flops_per_token=1.0, peak_flops=peak_flops
    )
    throughput.on_train_start(SimpleNamespace(global_step=0), SimpleNamespace(device=device))
    return throughput._peak_flops


def test_peak_flops_from_lightning_by_gpu_name_or_from_param(monkeypatch) -> None:
    cuda = torch.device("cuda", 0)
    for name, bf16_peak in [
        ("NVIDIA H100 80GB HBM3", 989.4e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
    ]:
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None, n=name: n)
        assert peak_resolved_for(cuda) == pytest.approx(bf16_peak), name
        assert peak_resolved_for(cuda, peak_flops=100e12) == 100e12  # hardware.peak_tflops wins
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Some Future GPU")
    with pytest.warns(UserWarning, match="FLOPs not found"):
        assert peak_resolved_for(cuda) is None  # no made-up peak for a GPU Lightning lacks


@pytest.mark.parametrize("peak_tflops", [None, 2.0])
def test_tokens_per_sec_and_mfu_from_params(tmp_path, monkeypatch, peak_tflops) -> None:
    # 2 micro-batches per step; 100 tokens per optimizer step
    cfg = PretrainConfig(val_every=1000)
    hw = HardwareConfig(accelerator="cpu", devices="1", peak_tflops=peak_tflops)
    cbs = pretrain_callbacks(cfg, hw, tokens_per_step=100, flops_per_token=1e3, log_every_n_steps=5)
    clock = itertools.count(start=0.0, step=2.0)  # each reading is 2 s after the last
    monkeypatch.setattr(callbacks, "perf_counter", lambda: next(clock))
    run = trainer(tmp_path, cbs.all, max_steps=21, val_every=1000, accumulate=2)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="FLOPs not found")  # none asked for on a CPU
        run.fit(Scripted(), loader(), loader(8))
    rates = cbs.history.series("train/tokens_per_sec")
    assert [s for s, _ in rates] == [6, 11, 16, 21]  # the clock starts after step 1
    assert all(rate == pytest.approx(5 * 100 / 2.0) for _, rate in rates)
    if peak_tflops is None:
        assert cbs.history.series("train/mfu") == []  # a CPU has no known peak
    else:
        expected = 1e3 * 250 / 2e12
        assert cbs.history.series("train/mfu") == [(s, pytest.approx(expected)) for s, _ in rates]


# --------------------------------------------------------------------------- NaN guard


@pytest.mark.parametrize(
    ("cfg", "says", "does_not_say"),
    [
        (
            PretrainConfig(val_every=10, lr=3e-3, warmup_steps=7, grad_clip=0.0),
            ["pretrain.lr (now 0.003)", "pretrain.warmup_steps (now 7)", "pretrain.grad_clip"],
            ["bf16"],
        ),
        (
            PretrainConfig(val_every=10, grad_clip=1.0, precision="16-mixed"),
            ["pretrain.lr", "bf16-mixed"],
            ["grad_clip"],  # already enabled: not a useful suggestion
        ),
    ],
)
def test_guard_stops_on_nan_and_says_what_to_change(tmp_path, cfg, says, does_not_say) -> None:
    cbs = pretrain_callbacks(cfg, HW, tokens_per_step=16, flops_per_token=1.0, log_every_n_steps=5)
    run = trainer(tmp_path, cbs.all, max_steps=100, val_every=10)
    with pytest.raises(NonFiniteLossError) as caught:
        run.fit(Scripted(val_losses=[1.0] * 10, nan_from_step=23), loader(), loader(8))
    message = str(caught.value)
    assert isinstance(caught.value, LmopsError)  # stage scripts print it as one line
    assert "non-finite (nan) at step 23" in message and caught.value.step == 23
    assert all(s in message for s in says) and not any(s in message for s in does_not_say)
    assert "kept" not in message  # no weights are kept: no promise of any
    assert run.global_step == 25  # noticed at the next check, far before max_steps


def test_guard_keeps_diverged_weights_out_of_checkpoints(tmp_path) -> None:
    guard = NonFiniteGuard(check_every_n_steps=1000, hint="")  # only the checkpoint save checks
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=12, save_top_k=-1)
    run = trainer(
        tmp_path, [guard, saver], max_steps=100, val_every=1000, enable_checkpointing=True
    )
    with pytest.raises(NonFiniteLossError, match="step 23"):
        run.fit(Scripted(nan_from_step=23), loader(), loader(8))
    saved = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert saved == ["epoch=0-step=12.ckpt"]  # the step-24 save was refused
    state = torch.load(tmp_path / "ckpt" / saved[0], weights_only=False)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values())


def test_guard_passes_a_finite_run_without_copying_weights(tmp_path, monkeypatch) -> None:
    def no_copies(*args, **kwargs):
        raise AssertionError("the guard copied the weights")

    monkeypatch.setattr(callbacks, "snapshot_state", no_copies)
    monkeypatch.setattr(callbacks, "full_state_dict", no_copies)
    guard = NonFiniteGuard(check_every_n_steps=3, hint="")
    run = trainer(tmp_path, [guard], max_steps=25, val_every=10)
    run.fit(Scripted(val_losses=[1.0] * 3), loader(), loader(8))
    assert run.global_step == 25


def test_snapshot_refuses_non_finite_weights_and_keeps_ties() -> None:
    tied = nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 5, bias=False))
    tied[1].weight = tied[0].weight
    state = snapshot_state(tied)
    assert state["0.weight"] is state["1.weight"]  # copied once, still shared
    assert state["0.weight"].data_ptr() != tied[0].weight.data_ptr()  # a copy, not a view
    with torch.no_grad():
        tied[0].weight[0, 0] = float("inf")
    assert snapshot_state(tied) is None


# --------------------------------------------------------------------------- best weights


def test_best_weights_are_those_of_the_best_validation_step(tmp_path) -> None:
    best = BestWeights()
    recorder = WeightRecorder()
    losses = [3.0, 2.0, 2.5, 1.5, 1.7, float("nan")]  # rounds at steps 5, 10, ..., 30
    run = trainer(tmp_path, [recorder, best], max_steps=30, val_every=5)
    run.fit(Scripted(val_losses=losses), loader(), loader(8))
    assert best.best_step == 20 and best.best_val_loss == 1.5
    assert_same_state(best.state, recorder.by_step[20])
    assert not torch.equal(best.state["weight"], recorder.by_step[30]["weight"])

    restored = BestWeights()
    restored.load_state_dict(best.state_dict())  # travels in Lightning checkpoints
    assert restored.best_step == 20 and restored.best_val_loss == 1.5
    model = nn.Linear(4, 1)
    assert restored.load_best(model)
    assert_same_state(model.state_dict(), recorder.by_step[20])
    assert not BestWeights().load_best(model)


# --------------------------------------------------------------------------- early stopping


@pytest.mark.parametrize(("patience", "stopped_at"), [(2, 20), (3, 25), (0, 40)])
def test_early_stopping_counts_validation_rounds(tmp_path, patience: int, stopped_at: int) -> None:
    cfg = PretrainConfig(val_every=5, early_stopping_patience=patience)
    cbs = pretrain_callbacks(cfg, HW, tokens_per_step=16, flops_per_token=1.0, log_every_n_steps=5)
    assert (cbs.early_stopping is None) == (patience == 0)
    losses = [3.0, 2.0, 2.5, 2.6, 2.7, 2.8, 2.9, 3.0]  # best at round 2 (step 10)
    run = trainer(tmp_path, cbs.all, max_steps=40, val_every=5)
    run.fit(Scripted(val_losses=losses), loader(), loader(8))
    assert run.global_step == stopped_at
    assert cbs.best.best_step == 10 and cbs.best.best_val_loss == 2.0
    assert [s for s, _ in cbs.history.series("val/loss")] == list(range(5, stopped_at + 1, 5))

"""Callbacks of a training run: throughput and MFU, metric history for ``dvc plots``, a guard
against non-finite losses, best-weights selection and early stopping on validation loss.

None of them synchronizes the device every step: the history keeps the logged tensors and turns
them into numbers in batches, throughput synchronizes only at its measurement boundaries, and
the loss guard collects losses as tensors and looks at them every few steps. The stage gets all
of them, configured from params, from :func:`pretrain_callbacks`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import lightning as L
import torch
import torch.nn as nn
from lightning.fabric.utilities.throughput import get_available_flops
from lightning.pytorch.callbacks import Callback, EarlyStopping

from lmops.config import HardwareConfig, LmopsError, PretrainConfig
from lmops.training.strategies import full_state_dict, is_sharded, load_full_state_dict

__all__ = [
    "BestWeights",
    "MetricHistory",
    "NonFiniteGuard",
    "NonFiniteLossError",
    "PretrainCallbacks",
    "ThroughputLogger",
    "mfu",
    "pretrain_callbacks",
]


def mfu(flops_per_token: float, tokens_per_sec: float, peak_flops: float, world_size: int) -> float:
    """Model FLOPs utilization: the model's FLOP/s (``flops_per_token`` x the tokens/s of all
    processes) over the peak of all ``world_size`` devices together."""
    return flops_per_token * tokens_per_sec / (peak_flops * world_size)


def _synchronize(module: L.LightningModule) -> None:
    if module.device.type == "cuda":
        torch.cuda.synchronize(module.device)


class ThroughputLogger(Callback):
    """Logs ``train/tokens_per_sec`` (all processes together) every ``every_n_steps`` steps,
    and ``train/mfu`` beside it when the device's peak FLOP/s is known.

    ``tokens_per_step`` is the tokens of one optimizer step over all processes (batch_size x
    block_size). ``peak_flops`` is one device's peak FLOP/s (``hardware.peak_tflops``); ``None``
    asks Lightning's table of GPUs by the CUDA device name, for bf16: MFU is quoted against the
    bf16 peak whatever the training precision, as nanoGPT and PaLM do. Lightning knows no peak
    for CPUs or GPUs missing from its table (it warns about the latter); then no MFU is logged
    rather than a made-up one. The clock starts after the first optimizer step (allocation,
    warm-up, compilation and lazy initialization are not throughput) and stops while validation
    runs.
    """

    def __init__(
        self,
        *,
        tokens_per_step: int,
        every_n_steps: int,
        flops_per_token: float,
        peak_flops: float | None,
    ) -> None:
        self.tokens_per_step = tokens_per_step
        self.every_n_steps = every_n_steps
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops
        self._peak_flops: float | None = None  # resolved for the device at train start
        self._reset_window(None)
        self._last_step = -1
        self._validation_started: float | None = None

    def _reset_window(self, start: float | None) -> None:
        self._window_start = start
        self._window_steps = 0
        self._paused = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset_window(None)
        self._last_step = trainer.global_step
        self._peak_flops = self.peak_flops
        if self._peak_flops is None:
            self._peak_flops = get_available_flops(pl_module.device, torch.bfloat16)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        step = trainer.global_step
        if step == self._last_step:
            return  # still accumulating micro-batches
        self._last_step = step
        if self._window_start is None:
            _synchronize(pl_module)
            self._reset_window(perf_counter())
            return
        self._window_steps += 1
        if self._window_steps < self.every_n_steps:
            return
        _synchronize(pl_module)
        now = perf_counter()
        elapsed = now - self._window_start - self._paused
        if elapsed > 0:
            rate = self._window_steps * self.tokens_per_step / elapsed
            # CPU tensors: logging them costs no host-to-device copy
            pl_module.log("train/tokens_per_sec", torch.tensor(rate), on_step=True, on_epoch=False)
            if self._peak_flops:
                value = mfu(self.flops_per_token, rate, self._peak_flops, trainer.world_size)
                pl_module.log("train/mfu", torch.tensor(value), on_step=True, on_epoch=False)
        self._reset_window(now)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validation_started = perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._validation_started is not None:
            self._paused += perf_counter() - self._validation_started
            self._validation_started = None


def _same_value_object(seen: Any, value: Any) -> bool:
    """Whether ``value`` is the very object recorded before. Lightning hands out a fresh
    ``detach()`` view of the stored tensor on every read, so compare storage: a new ``self.log``
    clones into new memory, and holding the old view keeps its address from being reused."""
    if isinstance(seen, torch.Tensor) and isinstance(value, torch.Tensor):
        return seen.device == value.device and seen.data_ptr() == value.data_ptr()
    return seen is value


class MetricHistory(Callback):
    """Every metric logged during ``fit``, one row per optimizer step: ``{"step": 100,
    "train/loss": 2.3, "val/loss": 2.5, ...}``.

    A metric enters a row only in the step it was logged (Lightning re-reports the last value of
    a metric that was not logged again; we compare tensor storage to skip those), so the rows
    are exactly what a CSV for ``dvc plots`` or a "did val loss fall" check needs.
    Training metrics are read after Lightning has collected them (at the next batch start,
    validation start or train end) so metrics logged by other callbacks' ``on_train_batch_end``
    are included whatever the callback order.
    """

    _CONVERT_EVERY = 512  # pending tensors before turning them into floats (one device sync)

    def __init__(self) -> None:
        self._rows: dict[int, dict[str, Any]] = {}
        self._seen: dict[str, Any] = {}  # name -> last value recorded (the tensor, kept alive)
        self._pending_step: int | None = None
        self._trainer: L.Trainer | None = None
        self._last_step = -1
        self._unconverted = 0

    # ------------------------------------------------------------------ public

    @property
    def rows(self) -> list[dict[str, float | int]]:
        """Rows sorted by step, values as Python numbers."""
        self._convert()
        return [dict(self._rows[s]) for s in sorted(self._rows)]

    def series(self, name: str) -> list[tuple[int, float]]:
        """``[(step, value), ...]`` of one metric, e.g. ``series("val/loss")``."""
        return [(r["step"], r[name]) for r in self.rows if name in r]

    def state_dict(self) -> dict[str, Any]:
        """The rows so far travel in resume checkpoints: a resumed run's history.csv has the
        steps before the interruption too."""
        if self._trainer is not None:
            # a checkpoint is written at the end of a step, before that step's row is flushed
            self._flush_pending(self._trainer)
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._rows = {int(r["step"]): dict(r) for r in state_dict.get("rows", [])}

    # ------------------------------------------------------------------ hooks

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if trainer.global_step != self._last_step:  # an optimizer step just happened
            self._last_step = trainer.global_step
            self._pending_step = trainer.global_step

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._flush_pending(trainer)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_step = trainer.global_step
        self._trainer = trainer

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush_pending(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush_pending(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._collect(trainer, trainer.global_step)

    # ------------------------------------------------------------------ internals

    def _flush_pending(self, trainer: L.Trainer) -> None:
        if self._pending_step is not None:
            self._collect(trainer, self._pending_step)
            self._pending_step = None

    def _collect(self, trainer: L.Trainer, step: int) -> None:
        for name, value in trainer.callback_metrics.items():
            if _same_value_object(self._seen.get(name), value):
                continue  # not logged again since we last recorded it
            self._seen[name] = value
            row = self._rows.setdefault(step, {"step": step})
            row[name] = value.detach() if isinstance(value, torch.Tensor) else value
            self._unconverted += 1
        if self._unconverted >= self._CONVERT_EVERY:
            self._convert()

    def _convert(self) -> None:
        for row in self._rows.values():
            for name, value in row.items():
                if isinstance(value, torch.Tensor):
                    row[name] = value.item()
        self._unconverted = 0


# --------------------------------------------------------------------------- NaN guard


class NonFiniteLossError(LmopsError):
    """The training loss became NaN or infinite; ``step`` is the first optimizer step seen bad."""

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step


class NonFiniteGuard(Callback):
    """Stops training with :class:`NonFiniteLossError` once a training loss is NaN or inf; the
    message names the step and ``hint``, what to change.

    Why not stop at once: that needs a device sync every step. Losses are kept as tensors and
    checked together every ``check_every_n_steps`` optimizer steps, before every validation
    and checkpoint save (so a checkpoint never holds the weights of a diverged run) and at the
    end of training; a NaN is therefore noticed at most ``check_every_n_steps`` steps late, and
    the message names the first bad step. Under DDP the decision is taken by all processes
    together. It keeps no copy of the weights: the fix is a changed ``pretrain`` param, and
    a run with other params starts afresh (its resume checkpoints are keyed by the params).
    """

    def __init__(self, *, check_every_n_steps: int, hint: str) -> None:
        self.check_every_n_steps = check_every_n_steps
        self.hint = hint
        self._pending: list[tuple[int, torch.Tensor]] = []  # (optimizer step, loss), unchecked
        self._last_step = -1

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_step = trainer.global_step
        self._pending.clear()

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        step = trainer.global_step
        if isinstance(loss, torch.Tensor):
            # the step this micro-batch belongs to: the one it completes or the next
            self._pending.append((step if step != self._last_step else step + 1, loss.detach()))
        if step == self._last_step:
            return  # accumulating: no optimizer step yet
        self._last_step = step
        if step % self.check_every_n_steps == 0:
            self._check(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._check(trainer)  # raising here keeps the diverged weights out of the checkpoint

    def _check(self, trainer: L.Trainer) -> None:
        pending, self._pending = self._pending, []
        bad_step: int | None = None
        value: float | None = None
        if pending:
            losses = torch.stack([loss.float().reshape(()) for _, loss in pending])
            finite = torch.isfinite(losses).tolist()  # the one device sync of this check
            if not all(finite):
                first = finite.index(False)
                bad_step, value = pending[first][0], float(losses[first])
        if not trainer.strategy.reduce_boolean_decision(bad_step is not None, all=False):
            return
        # another process saw the bad loss: this one knows only that it came by now
        step = trainer.global_step if bad_step is None else bad_step
        shown = "" if value is None else f" ({value})"
        raise NonFiniteLossError(
            f"the training loss became non-finite{shown} at step {step}; training stopped. "
            f"{self.hint}",
            step=step,
        )


# --------------------------------------------------------------------------- best weights


def _training_model(pl_module: L.LightningModule) -> nn.Module:
    """The plain network whose weights a bundle stores (``module.model`` for our modules)."""
    model = getattr(pl_module, "model", None)
    return model if isinstance(model, nn.Module) else pl_module


def snapshot_state(model: nn.Module) -> dict[str, torch.Tensor] | None:
    """A CPU copy of ``model.state_dict()``, or ``None`` when any floating tensor is NaN/inf.

    The finiteness check is one device sync for the whole model. Tensors shared between keys
    (tied embeddings) are copied once and stay shared in the copy.
    """
    if is_sharded(model):
        # FSDP2: the full weights, gathered on rank 0 (a collective: every rank runs this
        # hook). Local shards would not survive a resume: a checkpoint keeps rank 0's
        # callback state only. The other ranks hold an empty dict; load_best broadcasts.
        state = full_state_dict(model)
        floats = [v for v in state.values() if torch.is_floating_point(v)]
        return None if floats and not all(bool(torch.isfinite(v).all()) for v in floats) else state
    state = model.state_dict()
    floats = [v for v in state.values() if torch.is_floating_point(v)]
    if floats and not bool(torch.stack([torch.isfinite(v).all() for v in floats]).all()):
        return None
    copies: dict[tuple[int, torch.device], torch.Tensor] = {}
    out: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        key = (value.data_ptr(), value.device)
        if key not in copies:
            copies[key] = value.detach().to("cpu", copy=True)
        out[name] = copies[key]
    return out


class BestWeights(Callback):
    """Keeps a CPU copy of the weights with the lowest ``val/loss`` seen so far.

    Checked after every validation round (those of ``fit`` and a ``validate`` call alike; the
    sanity check excluded); a round improves when its loss is finite and lower than the best.
    :attr:`best_step`, :attr:`best_val_loss` and :attr:`state` say what was kept; the copy
    travels in Lightning checkpoints (:meth:`state_dict`) so a resumed run still knows its best
    weights.
    """

    monitor = "val/loss"

    def __init__(self) -> None:
        self.state: dict[str, torch.Tensor] | None = None
        self.best_step: int | None = None
        self.best_val_loss: float | None = None

    def load_best(self, model: nn.Module) -> bool:
        """Copy the best weights into ``model``; False when none were kept."""
        if self.state is None:
            return False
        load_full_state_dict(model, self.state)  # FSDP2: rank 0's full copy, broadcast
        return True

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        current = float(value)  # one sync per validation round
        if not math.isfinite(current):
            return
        if self.best_val_loss is not None and current >= self.best_val_loss:
            return
        state = snapshot_state(_training_model(pl_module))
        # under FSDP only rank 0 sees the gathered weights: decide together
        if not trainer.strategy.reduce_boolean_decision(state is None, all=False):
            self.state, self.best_step, self.best_val_loss = state, trainer.global_step, current

    def state_dict(self) -> dict[str, Any]:
        return {
            "best_step": self.best_step,
            "best_val_loss": self.best_val_loss,
            "state": self.state,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_step = state_dict.get("best_step")
        self.best_val_loss = state_dict.get("best_val_loss")
        self.state = state_dict.get("state")


# --------------------------------------------------------------------------- the stage's set


@dataclass
class PretrainCallbacks:
    """The callbacks of a pretraining run; pass :attr:`all` to the Trainer and read the others
    after ``fit`` (history rows, best weights)."""

    history: MetricHistory
    throughput: ThroughputLogger
    guard: NonFiniteGuard
    best: BestWeights
    early_stopping: EarlyStopping | None = None

    @property
    def all(self) -> list[Callback]:
        callbacks: list[Callback] = [self.throughput, self.guard, self.best, self.history]
        if self.early_stopping is not None:
            callbacks.append(self.early_stopping)
        return callbacks


def _nonfinite_hint(cfg: PretrainConfig) -> str:
    hints = [
        f"lower pretrain.lr (now {cfg.lr:g})",
        f"raise pretrain.warmup_steps (now {cfg.warmup_steps})",
    ]
    if cfg.grad_clip <= 0:
        hints.append("enable pretrain.grad_clip (e.g. 1.0)")
    if cfg.precision.startswith("16"):
        hints.append("use pretrain.precision bf16-mixed (fp16 overflows)")
    return "To fix it, " + " or ".join(hints)


def pretrain_callbacks(
    cfg: PretrainConfig,
    hw: HardwareConfig,
    *,
    tokens_per_step: int,
    flops_per_token: float,
    log_every_n_steps: int,
) -> PretrainCallbacks:
    """Everything the pretrain stage attaches to its Trainer, configured from params.

    ``tokens_per_step`` is the global tokens of one optimizer step (``batch_size x block_size``),
    ``flops_per_token`` the model's (``GPT.flops_per_token()``). Tokens/s and MFU (peak from
    ``hardware.peak_tflops``, else Lightning's table of GPUs) are logged and the loss guard
    checks every ``log_every_n_steps`` steps; early stopping runs when
    ``pretrain.early_stopping_patience`` > 0, counted in validation rounds without a lower
    ``val/loss``.
    """
    early = None
    if cfg.early_stopping_patience > 0:
        early = EarlyStopping(
            monitor=BestWeights.monitor,
            mode="min",
            patience=cfg.early_stopping_patience,
            check_on_train_epoch_end=False,  # count validation rounds, not epochs
            check_finite=True,
        )
    return PretrainCallbacks(
        history=MetricHistory(),
        throughput=ThroughputLogger(
            tokens_per_step=tokens_per_step,
            every_n_steps=log_every_n_steps,
            flops_per_token=flops_per_token,
            peak_flops=None if hw.peak_tflops is None else hw.peak_tflops * 1e12,
        ),
        guard=NonFiniteGuard(check_every_n_steps=log_every_n_steps, hint=_nonfinite_hint(cfg)),
        best=BestWeights(),
        early_stopping=early,
    )

"""Callbacks of a training run: throughput and MFU, metric history for ``dvc plots``, a guard
against non-finite losses, best-weights selection and early stopping on validation loss.

None of them synchronizes the device every step: the history keeps the logged tensors and turns
them into numbers in batches, throughput synchronizes only at its measurement boundaries, and
the loss guard collects losses as tensors and looks at them every few steps. The stage gets all
of them, configured from params, from :func:`pretrain_callbacks`.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn as nn
from lightning.pytorch.callbacks import Callback, EarlyStopping

from lmops.config import HardwareConfig, LmopsError, PretrainConfig
from lmops.io import atomic_write_text
from lmops.training.strategies import full_state_dict, is_sharded, load_full_state_dict

__all__ = [
    "PEAK_BF16_TFLOPS",
    "BestWeights",
    "MetricHistory",
    "NonFiniteGuard",
    "NonFiniteLossError",
    "PretrainCallbacks",
    "ThroughputLogger",
    "mfu",
    "peak_flops_per_device",
    "pretrain_callbacks",
]

# Dense (no sparsity) bf16/fp16 tensor-core peak per GPU, in TFLOP/s, from the vendors' data
# sheets; matched as substrings of ``torch.cuda.get_device_name()`` in this order, so the more
# specific names come first ("H100 PCIe" before "H100", "L40S" before "L4"). MFU is quoted
# against this peak whatever the training precision, as nanoGPT and PaLM do.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("GH200", 989.0),
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("V100", 125.0),
    ("T4", 65.0),
    ("RTX 4090", 165.0),
)


def peak_flops_per_device(device: torch.device, peak_tflops: float | None = None) -> float | None:
    """Peak FLOP/s of one ``device``: ``peak_tflops`` (``hardware.peak_tflops``) when given,
    else the table entry for this CUDA device's name; ``None`` when unknown (CPUs, other GPUs),
    in which case no MFU is logged rather than a made-up one."""
    if peak_tflops is not None:
        return float(peak_tflops) * 1e12
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(device).lower()
    for key, tflops in PEAK_BF16_TFLOPS:
        if key.lower() in name:
            return tflops * 1e12
    return None


def mfu(flops_per_token: float, tokens_per_sec: float, peak_flops: float, world_size: int) -> float:
    """Model FLOPs utilization: the model's FLOP/s (``flops_per_token`` x the tokens/s of all
    processes) over the peak of all ``world_size`` devices together."""
    return flops_per_token * tokens_per_sec / (peak_flops * world_size)


def _synchronize(module: L.LightningModule) -> None:
    if module.device.type == "cuda":
        torch.cuda.synchronize(module.device)


class ThroughputLogger(Callback):
    """Logs ``train/tokens_per_sec`` (all processes together) every ``every_n_steps`` steps,
    and ``train/mfu`` beside it when the FLOPs per token and the device's peak are known.

    Give either ``tokens_per_batch``, the tokens in one micro-batch on one process
    (micro_batch_size x block_size), or ``tokens_per_step``, the tokens of one optimizer step
    over all processes (batch_size x block_size). ``peak_flops`` is one device's peak FLOP/s;
    ``None`` looks it up from the CUDA device name (see :func:`peak_flops_per_device`). The clock
    starts after the first optimizer step (allocation, warm-up, compilation and lazy
    initialization are not throughput) and stops while validation runs.
    """

    def __init__(
        self,
        tokens_per_batch: int | None = None,
        every_n_steps: int = 10,
        *,
        tokens_per_step: int | None = None,
        flops_per_token: float | None = None,
        peak_flops: float | None = None,
    ) -> None:
        if (tokens_per_batch is None) == (tokens_per_step is None):
            raise ValueError("give exactly one of tokens_per_batch and tokens_per_step")
        if (tokens_per_batch or tokens_per_step or 0) <= 0 or every_n_steps <= 0:
            raise ValueError("tokens per batch/step and every_n_steps must be > 0")
        self.tokens_per_batch = tokens_per_batch
        self.tokens_per_step = tokens_per_step
        self.every_n_steps = every_n_steps
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops
        self._peak_flops: float | None = None  # resolved for the device at train start
        self._clock = time.perf_counter  # replaceable, so tests can control elapsed time
        self._reset_window(None)
        self._last_step = -1
        self._validation_started: float | None = None

    def _reset_window(self, start: float | None) -> None:
        self._window_start = start
        self._window_tokens = 0
        self._window_steps = 0
        self._paused = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset_window(None)
        self._last_step = trainer.global_step
        self._peak_flops = peak_flops_per_device(pl_module.device)
        if self.peak_flops is not None:
            self._peak_flops = self.peak_flops

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self.tokens_per_batch is not None:
            self._window_tokens += self.tokens_per_batch * trainer.world_size
        step = trainer.global_step
        if step == self._last_step:
            return  # still accumulating micro-batches
        self._last_step = step
        if self.tokens_per_step is not None:
            self._window_tokens += self.tokens_per_step
        if self._window_start is None:
            _synchronize(pl_module)
            self._reset_window(self._clock())
            return
        self._window_steps += 1
        if self._window_steps < self.every_n_steps:
            return
        _synchronize(pl_module)
        now = self._clock()
        elapsed = now - self._window_start - self._paused
        if elapsed > 0:
            rate = self._window_tokens / elapsed
            # CPU tensors: logging them costs no host-to-device copy
            pl_module.log("train/tokens_per_sec", torch.tensor(rate), on_step=True, on_epoch=False)
            if self.flops_per_token and self._peak_flops:
                value = mfu(self.flops_per_token, rate, self._peak_flops, trainer.world_size)
                pl_module.log("train/mfu", torch.tensor(value), on_step=True, on_epoch=False)
        self._reset_window(now)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validation_started = self._clock()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._validation_started is not None:
            self._paused += self._clock() - self._validation_started
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

    def to_csv(self, path: str | Path | None = None, names: list[str] | None = None) -> str:
        """Wide CSV (``step`` then one column per metric, empty where not logged); written
        atomically to ``path`` when given. Returns the text."""
        rows = self.rows
        if names is None:
            names = sorted({k for r in rows for k in r if k != "step"})
        buffer = io.StringIO()
        writer = csv.DictWriter(
            buffer, fieldnames=["step", *names], extrasaction="ignore", lineterminator="\n"
        )
        writer.writeheader()
        for r in rows:
            if any(n in r for n in names):
                writer.writerow(r)
        text = buffer.getvalue()
        if path is not None:
            atomic_write_text(Path(path), text)
        return text

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


# --------------------------------------------------------------------------- weight snapshots


def _training_model(pl_module: L.LightningModule) -> nn.Module:
    """The plain network whose weights a bundle stores (``module.model`` for our modules)."""
    model = getattr(pl_module, "model", None)
    return model if isinstance(model, nn.Module) else pl_module


def snapshot_state(model: nn.Module) -> dict[str, torch.Tensor] | None:
    """A CPU copy of ``model.state_dict()``, or ``None`` when any floating tensor is NaN/inf.

    The finiteness check is one device sync for the whole model. Tensors shared between keys
    (tied embeddings) are copied once and stay shared in the copy. Under FSDP2 the values are
    DTensors: each process checks and copies its own local shards.
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


class NonFiniteLossError(LmopsError):
    """The training loss became NaN or infinite; ``step`` is the first optimizer step seen bad,
    ``last_good_step`` the step of the weights the guard kept (``None`` if none were kept)."""

    def __init__(self, message: str, step: int, last_good_step: int | None) -> None:
        super().__init__(message)
        self.step = step
        self.last_good_step = last_good_step


class NonFiniteGuard(Callback):
    """Stops training with :class:`NonFiniteLossError` once a training loss is NaN or inf, and
    keeps a CPU copy of the last weights known to be good.

    Why not stop at once: that needs a device sync every step. Losses are kept as tensors and
    checked together every ``check_every_n_steps`` optimizer steps, before every validation
    and checkpoint save (so a checkpoint never holds the weights of a diverged run) and at the
    end of training; a NaN is therefore noticed at most ``check_every_n_steps`` steps late, and
    the message names the first bad step. Every ``snapshot_every_n_steps`` steps (0 = never) a
    check that passes also copies the weights to CPU (:attr:`last_good_state`, with
    :attr:`last_good_step`) after verifying they are finite, so the stage can save them when the
    run fails. Under DDP the decision is taken by all processes together.
    """

    def __init__(
        self,
        check_every_n_steps: int = 10,
        snapshot_every_n_steps: int = 0,
        hint: str = "lower the learning rate or enable gradient clipping",
    ) -> None:
        if check_every_n_steps <= 0 or snapshot_every_n_steps < 0:
            raise ValueError("check_every_n_steps must be > 0 and snapshot_every_n_steps >= 0")
        self.check_every_n_steps = check_every_n_steps
        self.snapshot_every_n_steps = snapshot_every_n_steps
        self.hint = hint
        self.last_good_state: dict[str, torch.Tensor] | None = None
        self.last_good_step: int | None = None
        self._pending: list[tuple[int, torch.Tensor]] = []  # (optimizer step, loss), unchecked
        self._last_step = -1

    # ------------------------------------------------------------------ public

    def load_last_good(self, model: nn.Module) -> bool:
        """Copy the kept weights into ``model``; False when there are none."""
        if self.last_good_state is None:
            return False
        model.load_state_dict(self.last_good_state)
        return True

    # ------------------------------------------------------------------ hooks

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_step = trainer.global_step
        self._trainer = trainer
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
        snapshot = self.snapshot_every_n_steps > 0 and step % self.snapshot_every_n_steps == 0
        if snapshot or step % self.check_every_n_steps == 0:
            self._check(trainer)
            if snapshot:
                self._snapshot(trainer, pl_module)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._check(trainer)  # raising here keeps the diverged weights out of the checkpoint

    # ------------------------------------------------------------------ internals

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
        self._fail(trainer.global_step if bad_step is None else bad_step, value)

    def _snapshot(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state = snapshot_state(_training_model(pl_module))
        if not trainer.strategy.reduce_boolean_decision(state is None, all=False):
            self.last_good_state, self.last_good_step = state, trainer.global_step
            return
        # a finite loss but non-finite weights: the update of this very step blew up
        self._fail(trainer.global_step, None, what="the weights")

    def _fail(self, step: int, value: float | None, what: str = "the training loss") -> None:
        shown = "" if value is None else f" ({value})"
        kept = (
            f"the weights of step {self.last_good_step} are kept"
            if self.last_good_step is not None
            else "no earlier good weights were kept"
        )
        raise NonFiniteLossError(
            f"{what} became non-finite{shown} at step {step}; training stopped and {kept}; "
            f"{self.hint}",
            step=step,
            last_good_step=self.last_good_step,
        )


class BestWeights(Callback):
    """Keeps a CPU copy of the weights with the lowest ``monitor`` (``val/loss``) seen so far.

    Checked after every validation round (those of ``fit`` and a ``validate`` call alike; the
    sanity check excluded); a round improves when its value is finite and lower than the best by
    more than ``min_delta``. :attr:`best_step`, :attr:`best_val_loss` and :attr:`state` say what
    was kept; the copy travels in Lightning checkpoints (:meth:`state_dict`) so a resumed run
    still knows its best weights.
    """

    def __init__(self, monitor: str = "val/loss", min_delta: float = 0.0) -> None:
        self.monitor = monitor
        self.min_delta = min_delta
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
        if self.best_val_loss is not None and current >= self.best_val_loss - self.min_delta:
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
    after ``fit`` (history rows, best weights, the guard's last good weights)."""

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
    hints = [f"lower pretrain.lr (now {cfg.lr:g})"]
    if cfg.grad_clip <= 0:
        hints.append("enable pretrain.grad_clip (e.g. 1.0)")
    if cfg.precision.startswith("16"):
        hints.append("use pretrain.precision bf16-mixed (fp16 overflows)")
    return "to fix it, " + " or ".join(hints)


def pretrain_callbacks(
    cfg: PretrainConfig,
    hw: HardwareConfig,
    *,
    tokens_per_step: int,
    flops_per_token: float,
    log_every_n_steps: int = 10,
) -> PretrainCallbacks:
    """Everything the pretrain stage attaches to its Trainer, configured from params.

    ``tokens_per_step`` is the global tokens of one optimizer step (``batch_size x block_size``),
    ``flops_per_token`` the model's (``GPT.flops_per_token()``). Tokens/s and MFU (peak from
    ``hardware.peak_tflops`` or the GPU's name) are logged and the loss guard checks every
    ``log_every_n_steps`` steps; the guard keeps a copy of the weights at every validation step
    (``pretrain.val_every``); early stopping runs when ``pretrain.early_stopping_patience`` > 0,
    counted in validation rounds without a lower ``val/loss``.
    """
    early = None
    if cfg.early_stopping_patience > 0:
        early = EarlyStopping(
            monitor="val/loss",
            mode="min",
            patience=cfg.early_stopping_patience,
            check_on_train_epoch_end=False,  # count validation rounds, not epochs
            check_finite=True,
        )
    return PretrainCallbacks(
        history=MetricHistory(),
        throughput=ThroughputLogger(
            every_n_steps=log_every_n_steps,
            tokens_per_step=tokens_per_step,
            flops_per_token=flops_per_token,
            peak_flops=None if hw.peak_tflops is None else hw.peak_tflops * 1e12,
        ),
        guard=NonFiniteGuard(
            check_every_n_steps=log_every_n_steps,
            snapshot_every_n_steps=cfg.val_every,
            hint=_nonfinite_hint(cfg),
        ),
        best=BestWeights(monitor="val/loss"),
        early_stopping=early,
    )

"""Callbacks: throughput measurement and an in-memory metric history for ``dvc plots``.

Both avoid per-step device syncs: the history keeps the logged tensors and turns them into
numbers in batches, and throughput synchronizes the GPU only at its measurement boundaries.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from lmops.io import atomic_write_text

__all__ = ["MetricHistory", "ThroughputLogger"]


def _synchronize(module: L.LightningModule) -> None:
    if module.device.type == "cuda":
        torch.cuda.synchronize(module.device)


class ThroughputLogger(Callback):
    """Logs ``train/tokens_per_sec`` (all processes together) every ``every_n_steps`` steps.

    ``tokens_per_batch`` is the tokens in one micro-batch on one process (micro_batch_size x
    block_size). The clock starts after the first optimizer step (allocation, warm-up and lazy
    initialization are not throughput) and stops while validation runs.
    """

    def __init__(self, tokens_per_batch: int, every_n_steps: int = 10) -> None:
        if tokens_per_batch <= 0 or every_n_steps <= 0:
            raise ValueError("tokens_per_batch and every_n_steps must be > 0")
        self.tokens_per_batch = tokens_per_batch
        self.every_n_steps = every_n_steps
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

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self._window_tokens += self.tokens_per_batch * trainer.world_size
        step = trainer.global_step
        if step == self._last_step:
            return  # still accumulating micro-batches
        self._last_step = step
        if self._window_start is None:
            _synchronize(pl_module)
            self._reset_window(time.perf_counter())
            return
        self._window_steps += 1
        if self._window_steps < self.every_n_steps:
            return
        _synchronize(pl_module)
        now = time.perf_counter()
        elapsed = now - self._window_start - self._paused
        if elapsed > 0:
            rate = torch.tensor(self._window_tokens / elapsed)  # CPU tensor: no device copy
            pl_module.log("train/tokens_per_sec", rate, on_step=True, on_epoch=False)
        self._reset_window(now)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validation_started = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._validation_started is not None:
            self._paused += time.perf_counter() - self._validation_started
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

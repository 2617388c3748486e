"""The training progress bar: optimizer steps of ``max_steps`` and the numbers worth watching.

Lightning's default bar counts batches per epoch and shows the logger's version: on our
step-based runs (``max_epochs=-1``, an endless stream of windows) it read ``Epoch 0/-2`` and
``v_num: b5ae``, neither of which tells a person anything. This bar counts optimizer steps
across epochs (so gradient accumulation does not inflate it), up to ``max_steps``, and shows the
training loss, the last validation loss and tokens/s.
"""

from __future__ import annotations

import math
from time import perf_counter
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

__all__ = ["StepProgressBar"]


class StepProgressBar(TQDMProgressBar):
    """``steps:  20%|██   | 120/600 [00:17<01:10, 6.85it/s, loss=2.315, val_loss=2.41, tok/s=14,020]``

    The metrics are read at most every ``metrics_every_s`` seconds: turning a logged tensor into
    a number waits for the device, which must not happen every step on a GPU.
    """

    # logged name -> (label in the bar, format)
    METRICS: dict[str, tuple[str, str]] = {
        "train/loss": ("loss", "{:.3f}"),
        "val/loss": ("val_loss", "{:.3f}"),
        "train/tokens_per_sec": ("tok/s", "{:,.0f}"),
    }

    def __init__(self, description: str = "steps", metrics_every_s: float = 1.0) -> None:
        super().__init__()
        self.description = description
        self.metrics_every_s = metrics_every_s
        self._metrics_read = -math.inf

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        bar = self.train_progress_bar
        bar.total = trainer.max_steps if trainer.max_steps > 0 else None
        bar.initial = 0
        bar.n = trainer.global_step  # a resumed run starts where it stopped
        bar.set_description(self.description, refresh=False)
        bar.refresh()

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        """Nothing: steps run across epoch boundaries, so the bar is not reset per epoch."""

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        bar = self.train_progress_bar
        step = trainer.global_step
        if bar is None or bar.disable or step == bar.n:
            return  # disabled, or still accumulating micro-batches of this step
        if not self._should_update(step, bar.total):
            return
        now = perf_counter()
        if now - self._metrics_read >= self.metrics_every_s or step == bar.total:
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            self._metrics_read = now
        bar.n = step
        bar.refresh()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Nothing: the base class would read the metrics (a device sync) at every epoch end."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        """Loss, validation loss and tokens/s as short strings; no ``v_num``."""
        logged = trainer.callback_metrics
        out: dict[str, Any] = {}
        for name, (label, fmt) in self.METRICS.items():
            if name in logged:
                out[label] = fmt.format(float(logged[name]))
        return out

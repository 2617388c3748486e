"""Prompt -> response fine-tuning of the GPT as a LightningModule.

The loss is the GPT's own token-level cross-entropy over the response and EOS positions (prompt
positions carry -100); packed batches pass ``position_ids`` and ``segment_ids`` so each example
attends only to itself, as it would alone. With LoRA applied to ``model`` only the adapters have
``requires_grad``, and only they reach the optimizer (:meth:`GPT.configure_param_groups` skips
frozen parameters).
"""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import MeanMetric

from lmops.config import FinetuneConfig
from lmops.models.gpt import GPT
from lmops.training.base_module import TrainingModule

__all__ = ["SFTModule"]

Batch = dict[str, torch.Tensor]


class SFTModule(TrainingModule):
    """``train/loss``; ``val/loss`` and ``val/ppl`` weighted by response tokens."""

    def __init__(self, model: GPT, cfg: FinetuneConfig) -> None:
        super().__init__(cfg)
        self.model = model
        self.val_loss = MeanMetric(nan_strategy="disable")

    def _loss(self, batch: Batch) -> torch.Tensor:
        packing = {k: batch[k] for k in ("position_ids", "segment_ids") if k in batch}
        _, loss = self.model(batch["input_ids"], batch["labels"], **packing)
        return loss

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log_train_step(loss)
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self.val_loss.update(self._loss(batch), weight=(batch["labels"] != -100).sum())

    def on_validation_epoch_end(self) -> None:
        loss = self.val_loss.compute()
        self.log("val/loss", loss, sync_dist=True)
        self.log("val/ppl", torch.exp(loss), sync_dist=True)
        self.val_loss.reset()

    def param_groups(self) -> list[dict[str, Any]]:
        return self.model.configure_param_groups(self.cfg.weight_decay)

"""What every training stage's LightningModule shares: AdamW over decay / no-decay groups, the
warmup + cosine schedule, gradient clipping that works under every precision of the schema, and
the learning rate in the training log.

One base, so that a fix reaches every stage at once: clipping under ``bf16-mixed`` used to work
for pretraining only, while fine-tuning crashed on it.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from lmops.config import FinetuneConfig, PretrainConfig
from lmops.training.schedule import (
    current_lr,
    fused_allowed,
    make_adamw,
    warmup_cosine_scheduler,
)

__all__ = ["TrainingModule"]


class TrainingModule(L.LightningModule):
    """Base of the causal-LM and fine-tuning modules; subclasses say which parameters train
    (:meth:`param_groups`) and what a step computes."""

    def __init__(
        self, cfg: PretrainConfig | FinetuneConfig, betas: tuple[float, float] = (0.9, 0.999)
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.betas = betas

    def param_groups(self) -> list[dict[str, Any]]:
        """AdamW groups of the trainable parameters (weight decay on matrices only)."""
        raise NotImplementedError

    def configure_optimizers(self) -> dict:
        cfg = self.cfg
        optimizer = make_adamw(
            self.param_groups(), lr=cfg.lr, betas=self.betas, allow_fused=fused_allowed(self)
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": warmup_cosine_scheduler(
                optimizer, cfg.warmup_steps, cfg.max_steps, cfg.lr, cfg.min_lr
            ),
        }

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip by norm ourselves when there is no grad scaler, so the fused AdamW can stay.

        Lightning refuses to clip for any fused optimizer under mixed precision, because with
        fp16's grad scaler the gradients would still be scaled. Without a scaler (bf16-mixed,
        and fp16 on a CPU) the gradients are true values, so clipping is exactly what it is at
        32-true. With a scaler (fp16 on a GPU) Lightning's path unscales first; there
        ``fused_allowed`` already chose the unfused optimizer.
        """
        plugin = self.trainer.precision_plugin
        no_scaler = isinstance(plugin, MixedPrecision) and plugin.scaler is None
        if gradient_clip_val and no_scaler and gradient_clip_algorithm in (None, "norm"):
            torch.nn.utils.clip_grad_norm_(self.parameters(), gradient_clip_val)
            return
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def log_train_step(self, loss: torch.Tensor) -> None:
        """``train/loss`` and ``train/lr`` as tensors: no device sync. Not on the progress bar:
        a progress-bar value becomes a Python number every step, which is a sync."""
        self.log("train/loss", loss, on_step=True, on_epoch=False)
        self.log("train/lr", current_lr(self), on_step=True, on_epoch=False)

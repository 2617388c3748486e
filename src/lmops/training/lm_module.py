"""Causal-LM pretraining as a LightningModule around the plain :class:`~lmops.models.gpt.GPT`."""

from __future__ import annotations

import lightning as L
import torch
from torchmetrics import MeanMetric

from lmops.config import PretrainConfig
from lmops.models.gpt import GPT, GPTConfig
from lmops.training.schedule import (
    current_lr,
    fused_allowed,
    make_adamw,
    warmup_cosine_scheduler,
)

__all__ = ["CausalLMModule"]


class CausalLMModule(L.LightningModule):
    """Next-token prediction on ``(x, y)`` LongTensor batches of shape [B, T].

    The nn.Module lives in ``self.model`` so export saves ``module.model.state_dict()`` with the
    GPT's own keys. Per training step the only work besides forward/backward is two ``self.log``
    calls that keep tensors as they are (no ``.item()``), so the loop stays close to plain PyTorch.
    """

    def __init__(
        self, gpt_config: GPTConfig, cfg: PretrainConfig, *, loss_on_progress_bar: bool = False
    ) -> None:
        super().__init__()
        self.gpt_config = gpt_config
        self.cfg = cfg
        # a progress-bar value is converted to a Python number every step: a device sync
        self.loss_on_progress_bar = loss_on_progress_bar
        self.model = GPT(gpt_config)
        # token-weighted mean over all validation batches (and processes), NaN kept visible
        self.val_loss = MeanMetric(nan_strategy="disable")
        self.test_loss = MeanMetric(nan_strategy="disable")

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.model(idx, targets)

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        x, y = batch
        _, loss = self.model(x, y)
        self.log(
            "train/loss", loss, on_step=True, on_epoch=False, prog_bar=self.loss_on_progress_bar
        )
        self.log("train/lr", current_lr(self), on_step=True, on_epoch=False)
        return loss

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], metric: MeanMetric) -> None:
        x, y = batch
        _, loss = self.model(x, y)
        metric.update(loss, weight=(y != -100).sum())

    def _log_eval(self, split: str, metric: MeanMetric) -> None:
        loss = metric.compute()  # already reduced over processes by torchmetrics
        # sync_dist on equal values is a no-op in effect; it silences Lightning's DDP warning
        self.log(f"{split}/loss", loss, sync_dist=True)
        self.log(f"{split}/ppl", torch.exp(loss), sync_dist=True)
        metric.reset()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.val_loss)

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val", self.val_loss)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.test_loss)

    def on_test_epoch_end(self) -> None:
        self._log_eval("test", self.test_loss)

    def configure_optimizers(self) -> dict:
        cfg = self.cfg
        optimizer = make_adamw(
            self.model.configure_param_groups(cfg.weight_decay),
            lr=cfg.lr,
            betas=(cfg.beta1, cfg.beta2),
            allow_fused=fused_allowed(self),
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": warmup_cosine_scheduler(
                optimizer, cfg.warmup_steps, cfg.max_steps, cfg.lr, cfg.min_lr
            ),
        }

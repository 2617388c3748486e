"""Causal-LM pretraining as a LightningModule around the plain :class:`~lmops.models.gpt.GPT`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torchmetrics import MeanMetric

from lmops.config import ModelConfig, PretrainConfig
from lmops.models.gpt import GPT
from lmops.training.base_module import TrainingModule

__all__ = ["CausalLMModule"]


class CausalLMModule(TrainingModule):
    """Next-token prediction on ``(x, y)`` LongTensor batches of shape [B, T].

    The nn.Module lives in ``self.model`` so export saves ``module.model.state_dict()`` with the
    GPT's own keys. Training metrics (``train/loss``, ``train/lr``, ``train/grad_norm``) are
    logged as tensors (no ``.item()``, no device sync) and only on the steps where Lightning hands
    metrics to the logger (the Trainer's ``log_every_n_steps``): a ``self.log`` call costs about
    half a millisecond of Python on this CPU, a few percent of a small model's step.

    ``compile=True`` (``hardware.compile``) compiles the GPT's forward in place in
    :meth:`configure_model`, once the strategy has placed (or sharded) it: ``nn.Module.compile``
    keeps the parameter names, so checkpoints and bundles look the same as without it.
    ``parallelize`` is applied there first, e.g. FSDP2's ``fully_shard`` per block, for
    strategies that expect the module to shard itself (Lightning's ``ModelParallelStrategy``).
    """

    def __init__(
        self,
        model_config: ModelConfig,
        cfg: PretrainConfig,
        *,
        compile: bool = False,
        parallelize: Callable[[CausalLMModule], None] | None = None,
    ) -> None:
        super().__init__(cfg, betas=(cfg.beta1, cfg.beta2))
        self.compile_model = compile
        self.parallelize = parallelize
        self.model = GPT(model_config)
        self._model_configured = False
        # token-weighted mean over all validation batches (and processes), NaN kept visible
        self.val_loss = MeanMetric(nan_strategy="disable")
        self.test_loss = MeanMetric(nan_strategy="disable")

    def configure_model(self) -> None:
        """Shard, then compile, once: Lightning calls this hook again for every fit/validate."""
        if self._model_configured:
            return
        self._model_configured = True
        if self.parallelize is not None:
            self.parallelize(self)
        if self.compile_model:
            # in place: torch.compile(model) would prefix every state_dict key with _orig_mod.
            self.model.compile()

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.model(idx, targets)

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        x, y = batch
        _, loss = self.model(x, y)
        if self._logging_step():
            self.log_train_step(loss)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # after AMP unscaling, before clipping: the norm the clipping threshold is compared with
        if not self._logging_step():
            return
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if grads:
            norm = torch.nn.utils.get_total_norm(grads)
            if hasattr(norm, "full_tensor"):  # a DTensor under FSDP2: the global norm
                norm = norm.full_tensor()
            self.log("train/grad_norm", norm, on_step=True, on_epoch=False)

    def _logging_step(self) -> bool:
        """Whether the optimizer step being taken is one whose metrics reach the logger."""
        every = self.trainer.log_every_n_steps
        return every <= 1 or (self.trainer.global_step + 1) % every == 0

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

    def param_groups(self) -> list[dict[str, Any]]:
        return self.model.configure_param_groups(self.cfg.weight_decay)

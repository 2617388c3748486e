"""Sequence-classification fine-tuning as a LightningModule around :class:`SequenceClassifier`."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from lmops.config import FinetuneConfig, LmopsError
from lmops.models.gpt import GPT
from lmops.models.heads import SequenceClassifier
from lmops.training.base_module import TrainingModule

__all__ = ["ClassifierModule"]

Batch = dict[str, torch.Tensor]  # {"input_ids": [B, T], "lengths": [B], "labels": [B]}


class ClassifierModule(TrainingModule):
    """Cross-entropy fine-tuning with accuracy and macro-F1 per evaluation split.

    One torchmetrics object per split and quantity (``val_acc``, ``test_acc``, ...) so that
    validation during fit and a later ``trainer.test`` never share state. With
    ``cfg.freeze_backbone`` only the head trains and the backbone stays in eval mode (no dropout
    noise in features that cannot adapt to it).
    """

    def __init__(
        self,
        model: SequenceClassifier,
        cfg: FinetuneConfig,
        num_labels: int,
    ) -> None:
        super().__init__(cfg)
        if model.num_labels != num_labels:
            raise LmopsError(
                f"classifier head has {model.num_labels} outputs but the data has {num_labels} "
                "labels; rebuild the SequenceClassifier with num_labels from labels.json"
            )
        self.model = model
        self.num_labels = num_labels
        if cfg.freeze_backbone:
            model.backbone.requires_grad_(False)
        elif cfg.freeze_layers:
            _freeze_bottom(model.backbone, cfg.freeze_layers)
        for split in ("val", "test"):
            setattr(self, f"{split}_loss", MeanMetric(nan_strategy="disable"))
            # accuracy over all examples (micro), F1 averaged over classes (macro: minority counts)
            setattr(self, f"{split}_acc", MulticlassAccuracy(num_labels, average="micro"))
            setattr(self, f"{split}_f1", MulticlassF1Score(num_labels, average="macro"))

    def train(self, mode: bool = True) -> ClassifierModule:
        super().train(mode)
        if self.cfg.freeze_backbone:
            self.model.backbone.eval()
        return self

    def on_train_start(self) -> None:
        # Lightning 2.6 keeps the modes it finds (and restores them after validation) rather
        # than calling train(), so settle the frozen backbone's mode here once
        if self.cfg.freeze_backbone:
            self.model.backbone.eval()

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, lengths)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        logits = self.model(batch["input_ids"], batch["lengths"])
        loss = F.cross_entropy(logits.float(), batch["labels"])
        self.log_train_step(loss)
        return loss

    def _evaluate(self, batch: Batch, split: str) -> None:
        logits = self.model(batch["input_ids"], batch["lengths"])
        labels = batch["labels"]
        loss = F.cross_entropy(logits.float(), labels)
        preds = logits.argmax(dim=-1)
        loss_metric = getattr(self, f"{split}_loss")
        acc = getattr(self, f"{split}_acc")
        f1 = getattr(self, f"{split}_f1")
        loss_metric.update(loss, weight=labels.numel())
        acc.update(preds, labels)
        f1.update(preds, labels)
        # Metric objects: Lightning computes, syncs across processes and resets them per epoch
        self.log(f"{split}/loss", loss_metric, on_step=False, on_epoch=True)
        self.log(f"{split}/acc", acc, on_step=False, on_epoch=True)
        self.log(f"{split}/f1", f1, on_step=False, on_epoch=True)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        """Class probabilities [B, num_labels]."""
        return torch.softmax(self.model(batch["input_ids"], batch["lengths"]).float(), dim=-1)

    def param_groups(self) -> list[dict[str, Any]]:
        wd = self.cfg.weight_decay
        groups = self.model.backbone.configure_param_groups(wd)  # empty when frozen
        for group in groups:  # the LR scheduler scales each group's own lr
            group["lr"] = self.cfg.lr * self.cfg.backbone_lr_scale
        head_decay, head_no_decay = [], []
        for name, p in self.model.named_parameters():
            if name.startswith("backbone.") or not p.requires_grad:
                continue
            (head_decay if p.dim() >= 2 else head_no_decay).append(p)
        groups += [
            {"params": head_decay, "weight_decay": wd},
            {"params": head_no_decay, "weight_decay": 0.0},
        ]
        return [g for g in groups if g["params"]]


def _freeze_bottom(backbone: GPT, n_layers: int) -> None:
    """Keep the embeddings and the first ``n_layers`` blocks as pretrained: the lower layers hold
    general features a small labeled set would only blur."""
    blocks = backbone.transformer.h
    if n_layers > len(blocks):
        raise LmopsError(
            f"finetune.freeze_layers is {n_layers} but the model has {len(blocks)} blocks; "
            f"use at most {len(blocks)} (or finetune.freeze_backbone: true)"
        )
    for name in ("wte", "wpe"):
        if name in backbone.transformer:
            backbone.transformer[name].requires_grad_(False)
    for block in blocks[:n_layers]:
        block.requires_grad_(False)

"""Metric suites on held-out data, computed with torchmetrics so every stage counts the same way."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassCalibrationError,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassMatthewsCorrCoef,
    MulticlassPrecision,
    MulticlassRecall,
)
from torchmetrics.text import Perplexity


@torch.no_grad()
def perplexity(
    model: torch.nn.Module,
    tokens: np.ndarray,
    block_size: int,
    batch_size: int,
    max_batches: int | None = None,
) -> dict[str, float]:
    """Perplexity over consecutive, non-overlapping windows from the start of ``tokens``.

    Non-overlapping windows (not random ones, as in training) make the figure reproducible and
    comparable between runs that share a tokenizer.
    """
    n_windows = (len(tokens) - 1) // block_size
    if n_windows < 1:
        raise ValueError(f"need more than {block_size} tokens for perplexity, got {len(tokens)}")
    if max_batches is not None:
        n_windows = min(n_windows, max_batches * batch_size)
    metric = Perplexity()
    model.eval()
    for start in range(0, n_windows, batch_size):
        idx = range(start, min(start + batch_size, n_windows))
        chunk = np.stack([tokens[i * block_size : i * block_size + block_size + 1] for i in idx])
        chunk = torch.from_numpy(chunk.astype(np.int64))
        logits, _ = model(chunk[:, :-1])
        metric.update(logits.float(), chunk[:, 1:])
    ppl = float(metric.compute())
    return {"ppl": ppl, "loss": math.log(ppl), "tokens": float(n_windows * block_size)}


@torch.no_grad()
def predict_classes(
    model: torch.nn.Module, batches: Iterable[dict[str, torch.Tensor]]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(predicted ids, class probabilities, true ids) over all batches."""
    model.eval()
    preds, probs, target = [], [], []
    for batch in batches:
        logits = model(batch["input_ids"], batch["lengths"])
        p = torch.softmax(logits.float(), dim=-1)
        probs.append(p)
        preds.append(p.argmax(dim=-1))
        target.append(batch["labels"])
    return torch.cat(preds), torch.cat(probs), torch.cat(target)


def classification_metrics(
    preds: torch.Tensor,
    target: torch.Tensor,
    num_labels: int,
    probs: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Accuracy, macro-F1, the confusion matrix (rows: true label, columns: predicted), Matthews
    correlation and per-class precision and recall; with ``probs`` also the calibration error.

    Keys: ``acc``, ``f1``, ``confusion``, ``mcc`` (0 where undefined, e.g. one class only),
    ``precision_per_class`` and ``recall_per_class`` (lists indexed by label id; 0 for a class
    never predicted / never present), and, when ``probs`` (N x num_labels class probabilities, as
    :func:`predict_classes` returns them) is given, ``ece``: expected calibration error of the top
    probability, 15 equal-width bins, L1.
    """
    acc = MulticlassAccuracy(num_classes=num_labels, average="micro")(preds, target)
    f1 = MulticlassF1Score(num_classes=num_labels, average="macro")(preds, target)
    confusion = MulticlassConfusionMatrix(num_classes=num_labels)(preds, target)
    mcc = MulticlassMatthewsCorrCoef(num_classes=num_labels)(preds, target)
    precision = MulticlassPrecision(num_classes=num_labels, average=None)(preds, target)
    recall = MulticlassRecall(num_classes=num_labels, average=None)(preds, target)
    scores: dict[str, Any] = {
        "acc": float(acc),
        "f1": float(f1),
        "confusion": confusion.tolist(),
        "mcc": float(mcc),
        "precision_per_class": precision.tolist(),
        "recall_per_class": recall.tolist(),
    }
    if probs is not None:
        ece = MulticlassCalibrationError(num_classes=num_labels, n_bins=15, norm="l1")
        scores["ece"] = float(ece(probs, target))
    return scores

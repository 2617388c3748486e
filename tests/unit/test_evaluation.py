"""Evaluation metrics agree with hand-computed values; perplexity of a known model is exact."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lmops.evaluation.metrics import classification_metrics, perplexity, predict_classes
from lmops.evaluation.report import markdown_report, plot_confusion


class UniformLM(torch.nn.Module):
    """Assigns equal probability to every token: perplexity must equal the vocabulary size."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab

    def forward(self, idx: torch.Tensor, targets=None):
        return torch.zeros(*idx.shape, self.vocab), None


def test_uniform_model_perplexity_is_vocab_size() -> None:
    tokens = np.arange(1000, dtype=np.uint16) % 50
    out = perplexity(UniformLM(50), tokens, block_size=16, batch_size=8, max_batches=3)
    assert out["ppl"] == pytest.approx(50.0, rel=1e-4)
    assert out["loss"] == pytest.approx(math.log(50), rel=1e-4)
    assert out["tokens"] == 3 * 8 * 16


def test_perplexity_needs_a_window() -> None:
    with pytest.raises(ValueError, match="need more than"):
        perplexity(UniformLM(5), np.zeros(10, dtype=np.uint16), block_size=16, batch_size=2)


def test_classification_metrics_by_hand() -> None:
    target = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1])
    preds = torch.tensor([0, 0, 1, 1, 1, 1, 1, 0])
    m = classification_metrics(preds, target, 2)
    assert m["acc"] == pytest.approx(6 / 8)
    f1_neg = 2 * (2 / 3 * 2 / 3) / (2 / 3 + 2 / 3)
    f1_pos = 2 * (4 / 5 * 4 / 5) / (4 / 5 + 4 / 5)
    assert m["f1"] == pytest.approx((f1_neg + f1_pos) / 2)
    assert m["confusion"] == [[2, 1], [1, 4]]


def mcc_by_formula(confusion: list[list[int]]) -> float:
    """Gorodkin's multiclass MCC from a confusion matrix (rows true, columns predicted)."""
    k = len(confusion)
    s = sum(map(sum, confusion))
    c = sum(confusion[i][i] for i in range(k))
    t = [sum(confusion[i]) for i in range(k)]  # times class i occurs
    p = [sum(row[i] for row in confusion) for i in range(k)]  # times class i is predicted
    num = c * s - sum(pi * ti for pi, ti in zip(p, t, strict=True))
    return num / math.sqrt((s * s - sum(pi * pi for pi in p)) * (s * s - sum(ti * ti for ti in t)))


def test_classification_mcc_and_per_class_by_hand() -> None:
    target = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1])
    preds = torch.tensor([0, 0, 1, 1, 1, 1, 1, 0])
    m = classification_metrics(preds, target, 2)
    # tp=4 tn=2 fp=1 fn=1: (tp*tn - fp*fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = 7/15
    assert m["mcc"] == pytest.approx(7 / 15)
    assert m["precision_per_class"] == pytest.approx([2 / 3, 4 / 5])
    assert m["recall_per_class"] == pytest.approx([2 / 3, 4 / 5])
    assert "ece" not in m  # no probabilities, no calibration

    # three classes; class 2 is never predicted: its precision is 0, not NaN
    target = torch.tensor([0, 0, 1, 1, 1, 2, 2, 0, 1])
    preds = torch.tensor([0, 1, 1, 1, 0, 1, 0, 0, 1])
    m = classification_metrics(preds, target, 3)
    assert m["confusion"] == [[2, 1, 0], [1, 3, 0], [1, 1, 0]]
    assert m["mcc"] == pytest.approx(mcc_by_formula([[2, 1, 0], [1, 3, 0], [1, 1, 0]]))
    assert m["precision_per_class"] == pytest.approx([2 / 4, 3 / 5, 0.0])
    assert m["recall_per_class"] == pytest.approx([2 / 3, 3 / 4, 0.0])


def test_classification_ece_by_hand() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7]])
    target = torch.tensor([0, 1, 1, 1])
    preds = probs.argmax(-1)
    m = classification_metrics(preds, target, 2, probs=probs)
    # top probabilities 0.9 (right), 0.6 (wrong), 0.8 (right), 0.7 (right) fall in four different
    # bins of width 1/15, so ECE = mean |confidence - correct| = (0.1 + 0.6 + 0.2 + 0.3) / 4
    assert m["ece"] == pytest.approx((0.1 + 0.6 + 0.2 + 0.3) / 4)
    assert m["acc"] == pytest.approx(3 / 4)  # the existing keys stay as they were

    # two predictions sharing a bin are averaged first: |mean conf - accuracy| weighted by count
    probs = torch.tensor([[0.62, 0.38], [0.61, 0.39], [0.1, 0.9]])
    target = torch.tensor([0, 1, 1])
    m = classification_metrics(probs.argmax(-1), target, 2, probs=probs)
    assert m["ece"] == pytest.approx(2 / 3 * abs(0.615 - 0.5) + 1 / 3 * abs(0.9 - 1.0))


def test_predict_classes_uses_lengths() -> None:
    class LastToken(torch.nn.Module):
        def forward(self, input_ids, lengths):
            last = input_ids[torch.arange(len(lengths)), lengths - 1]
            return torch.nn.functional.one_hot(last, 3).float() * 5

    batch = {
        "input_ids": torch.tensor([[2, 0, 0], [1, 2, 1]]),
        "lengths": torch.tensor([1, 2]),
        "labels": torch.tensor([2, 2]),
    }
    preds, probs, target = predict_classes(LastToken(), [batch])
    assert preds.tolist() == [2, 2] and target.tolist() == [2, 2]
    assert torch.allclose(probs.sum(-1), torch.ones(2))


def test_report_and_plot(tmp_path) -> None:
    text = markdown_report({"test/acc": 0.75}, ["neg", "pos"], [[2, 1], [1, 4]])
    assert "| test/acc | 0.7500 |" in text and "| **pos** | 1 | 4 |" in text
    png = plot_confusion([[2, 1], [1, 4]], ["neg", "pos"], tmp_path / "c.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

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

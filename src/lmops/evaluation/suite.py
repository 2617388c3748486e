"""The evaluate stage's work: held-out perplexity of the LM, test-set scores of the classifier,
and the reports a person reads (Markdown, confusion matrix, per-example predictions).

Split from :mod:`lmops.evaluation.metrics` (how a number is computed) so that this file says
which numbers the pipeline reports and where each lands.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from lmops.config import EvaluateConfig, LmopsError
from lmops.data.datamodules import LabeledDataModule
from lmops.data.shards import open_tokens
from lmops.evaluation.metrics import classification_metrics, perplexity, predict_classes
from lmops.evaluation.report import markdown_report, plot_confusion
from lmops.export.bundle import load_bundle
from lmops.io import atomic_write_json, atomic_write_text, read_json, write_csv

__all__ = ["ClassifierScores", "score_classifier", "score_lm", "stage_metrics", "write_reports"]

REPORT_FILES = ("report.md", "confusion.png", "predictions.csv", "metrics.json")


def score_lm(lm_dir: Path, tokens: Path, cfg: EvaluateConfig) -> dict[str, float]:
    """Loss and perplexity of the LM on ``tokens/val.bin`` (``loss``, ``ppl``)."""
    lm = load_bundle(lm_dir)
    meta = read_json(tokens / "meta.json")
    val_tokens = open_tokens(tokens / "val.bin", meta["dtype"])
    block = lm.model.config.block_size
    if len(val_tokens) <= block:
        raise LmopsError(
            f"val.bin has {len(val_tokens)} tokens, fewer than block_size {block}; "
            "raise clean.val_fraction"
        )
    return perplexity(lm.model, val_tokens, block, cfg.batch_size, cfg.ppl_max_batches)


@dataclass
class ClassifierScores:
    """The classifier's predictions on the test split and the scores computed from them."""

    labels: list[str]
    preds: torch.Tensor
    probs: torch.Tensor
    target: torch.Tensor
    acc: float
    f1: float
    confusion: list[list[int]]


def score_classifier(clf_dir: Path, labeled: Path, cfg: EvaluateConfig) -> ClassifierScores:
    """Predict ``labeled/test.jsonl`` with the classifier folder's own tokenizer and padding."""
    clf = load_bundle(clf_dir)
    data = LabeledDataModule(
        labeled,
        clf_dir / "tokenizer.json",
        max_length=clf.config["max_length"],
        batch_size=cfg.batch_size,
        pad_id=clf.config["pad_id"],
        seed=0,
    )
    data.setup("test")
    labels: list[str] = clf.config["labels"]
    preds, probs, target = predict_classes(clf.model, data.test_dataloader())
    cls = classification_metrics(preds, target, len(labels))
    return ClassifierScores(labels, preds, probs, target, cls["acc"], cls["f1"], cls["confusion"])


def stage_metrics(lm: dict[str, float], clf: ClassifierScores) -> dict[str, float | int]:
    """The stage's metrics, checked finite: a NaN here would be registered and compared."""
    metrics = {
        "val/loss": lm["loss"],
        "val/ppl": lm["ppl"],
        "test/acc": clf.acc,
        "test/f1": clf.f1,
        "test/n": int(len(clf.target)),
    }
    if not all(math.isfinite(float(v)) for v in metrics.values()):
        raise LmopsError(f"evaluation produced a non-finite metric: {metrics}")
    return metrics


def write_reports(out: Path, metrics: dict[str, float | int], clf: ClassifierScores) -> list[Path]:
    """Predictions, confusion matrix (JSON for ``dvc plots``, PNG to look at) and the Markdown
    report, each written atomically; returns the files worth attaching to the MLflow run."""
    out.mkdir(parents=True, exist_ok=True)
    labels = clf.labels
    write_csv(
        out / "predictions.csv",
        [
            {"actual": labels[t], "predicted": labels[p], "probability": round(float(pr.max()), 4)}
            for t, p, pr in zip(clf.target.tolist(), clf.preds.tolist(), clf.probs, strict=True)
        ],
    )
    atomic_write_json(out / "confusion.json", {"labels": labels, "matrix": clf.confusion})
    plot_confusion(clf.confusion, labels, out / "confusion.png")
    atomic_write_text(out / "report.md", markdown_report(metrics, labels, clf.confusion))
    return [out / name for name in REPORT_FILES]

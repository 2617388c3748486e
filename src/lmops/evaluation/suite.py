"""The evaluate stage's work: held-out perplexity of the LM, test-set scores of the classifier,
and the reports a person reads (Markdown, confusion matrix, per-example predictions).

Split from :mod:`lmops.evaluation.metrics` (how a number is computed) so that this file says
which numbers the pipeline reports and where each lands.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import torch

from lmops.config import EvaluateConfig, LmopsError
from lmops.data.labeled_batches import LabeledSplits
from lmops.data.sft import collate_padded, encode_examples, group_references, read_pairs
from lmops.data.shards import open_tokens
from lmops.evaluation.metrics import classification_metrics, perplexity, predict_classes
from lmops.evaluation.report import generation_report, markdown_report, plot_confusion
from lmops.evaluation.text_metrics import generation_metrics
from lmops.export.bundle import Bundle, answer_greedy, load_bundle
from lmops.io import atomic_write_json, atomic_write_text, read_json, write_csv

__all__ = [
    "ClassifierScores",
    "GenerationScores",
    "NoScores",
    "score_classifier",
    "score_finetuned",
    "score_lm",
    "score_sft",
    "stage_metrics",
]

FIGURES = "figures"  # a folder, so each task writes the pictures it has (a DVC out)


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
    scores: dict[str, Any]

    def metrics(self) -> dict[str, float | int]:
        s = self.scores
        return {
            "test/acc": s["acc"],
            "test/f1": s["f1"],
            "test/mcc": s["mcc"],
            "test/ece": s["ece"],
            "test/n": int(len(self.target)),
        }

    def write_reports(self, out: Path, metrics: dict[str, float | int]) -> list[Path]:
        """Predictions, the confusion matrix (JSON and a PNG to look at) and the Markdown
        report, each written atomically; returns the files to attach to the MLflow run."""
        labels, confusion = self.labels, self.scores["confusion"]
        figures = out / FIGURES
        figures.mkdir(parents=True, exist_ok=True)
        write_csv(
            out / "predictions.csv",
            [
                {
                    "actual": labels[t],
                    "predicted": labels[p],
                    "probability": round(float(pr.max()), 4),
                }
                for t, p, pr in zip(
                    self.target.tolist(), self.preds.tolist(), self.probs, strict=True
                )
            ],
        )
        atomic_write_json(figures / "confusion.json", {"labels": labels, "matrix": confusion})
        plot_confusion(confusion, labels, figures / "confusion.png")
        atomic_write_text(out / "report.md", markdown_report(metrics, labels, confusion))
        return [out / "report.md", figures / "confusion.png", out / "predictions.csv"]


def score_classifier(clf_dir: Path, labeled: Path, cfg: EvaluateConfig) -> ClassifierScores:
    """Predict ``labeled/test.jsonl`` with the classifier folder's own tokenizer and padding."""
    clf = load_bundle(clf_dir)
    if clf.kind != "classifier":
        raise LmopsError(
            f"{clf_dir} holds a {clf.kind!r} model, not a classifier: finetune.task changed "
            "since it was trained; re-run the finetune stage"
        )
    data = LabeledSplits(
        labeled,
        clf_dir / "tokenizer.json",
        max_length=clf.config["max_length"],
        pad_id=clf.config["pad_id"],
    )
    labels: list[str] = clf.config["labels"]
    preds, probs, target = predict_classes(clf.model, data.loader("test", cfg.batch_size))
    scores = classification_metrics(preds, target, len(labels), probs=probs)
    return ClassifierScores(labels, preds, probs, target, scores)


@dataclass
class GenerationScores:
    """An SFT model's greedy answers to every test prompt, scored against all its references."""

    prompts: list[str]
    references: list[list[str]]
    outputs: list[str]
    scores: dict[str, float]
    response_loss: float
    samples: int

    def metrics(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {f"test/{k}": v for k, v in self.scores.items()}
        out["test/response_ppl"] = float(math.exp(self.response_loss))
        out["test/n"] = len(self.prompts)
        return out

    def _rows(self) -> list[dict[str, str]]:
        return [
            {"prompt": p, "references": " ||| ".join(r), "output": o}
            for p, r, o in zip(self.prompts, self.references, self.outputs, strict=True)
        ]

    def write_reports(self, out: Path, metrics: dict[str, float | int]) -> list[Path]:
        """Every answer in ``predictions.csv``; a sample of them in the Markdown report and as
        an MLflow table (the UI shows it under the run's artifacts)."""
        (out / FIGURES).mkdir(parents=True, exist_ok=True)
        rows = self._rows()
        write_csv(out / "predictions.csv", rows)
        atomic_write_text(out / "report.md", generation_report(metrics, rows[: self.samples]))
        if self.samples and mlflow.active_run() is not None:
            sample = rows[: self.samples]
            mlflow.log_table({k: [r[k] for r in sample] for k in sample[0]}, "samples.json")
        return [out / "report.md", out / "predictions.csv"]


def score_sft(model_dir: Path, labeled: Path, cfg: EvaluateConfig) -> GenerationScores:
    """Greedy answers (KV cache) for each distinct test prompt, BLEU / ROUGE / exact match
    against all of its references, and the perplexity of the reference responses."""
    model = load_bundle(model_dir)
    template = model.config.get("prompt_template")
    if model.kind != "lm" or template is None:
        raise LmopsError(
            f"{model_dir} holds no prompt -> response model: finetune.task changed since it "
            "was trained; re-run the finetune stage"
        )
    rows = read_pairs(labeled / "test.jsonl")
    groups = group_references(rows)
    prompts = list(groups)
    answers = answer_greedy(model, prompts, cfg.max_new_tokens, batch_size=cfg.batch_size)
    outputs = [a.strip() for a in answers]
    references = [groups[p] for p in prompts]
    scores = generation_metrics(outputs, references)
    loss = _response_loss(model, rows, template, cfg.batch_size)
    return GenerationScores(prompts, references, outputs, scores, loss, cfg.samples)


def _response_loss(model: Bundle, rows: list[tuple[str, str]], template: str, batch: int) -> float:
    """Mean cross-entropy over the reference responses' tokens (and EOS), given their prompts."""
    block = model.model.config.block_size
    examples, _ = encode_examples(
        model.tokenizer, rows, eos_id=model.eos_id, max_length=block, template=template
    )
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(examples), batch):
            b = collate_padded(examples[i : i + batch], pad_id=model.config["pad_id"])
            _, loss = model.model(b["input_ids"], b["labels"])
            n = int((b["labels"] != -100).sum())
            total, count = total + float(loss) * n, count + n
    if count == 0:
        raise LmopsError("no test response fits the model's block_size; shorten the prompts")
    return total / count


def stage_metrics(
    lm: dict[str, float], tuned: ClassifierScores | GenerationScores | NoScores
) -> dict[str, float | int]:
    """The stage's metrics, checked finite: a NaN here would be registered and compared."""
    metrics = {"val/loss": lm["loss"], "val/ppl": lm["ppl"], **tuned.metrics()}
    if not all(math.isfinite(float(v)) for v in metrics.values()):
        raise LmopsError(f"evaluation produced a non-finite metric: {metrics}")
    return metrics


@dataclass
class NoScores:
    """``finetune.task: none``: the pretrained LM alone is evaluated."""

    def metrics(self) -> dict[str, float | int]:
        return {}

    def write_reports(self, out: Path, metrics: dict[str, float | int]) -> list[Path]:
        (out / FIGURES).mkdir(parents=True, exist_ok=True)
        write_csv(out / "predictions.csv", [])
        atomic_write_text(out / "report.md", generation_report(metrics, []))
        return [out / "report.md"]


def score_finetuned(
    task: str, model_dir: Path, labeled: Path, cfg: EvaluateConfig
) -> ClassifierScores | GenerationScores | NoScores:
    """The fine-tuned model's test scores for ``finetune.task``."""
    if task == "none":
        return NoScores()
    if task == "sft":
        return score_sft(model_dir, labeled, cfg)
    return score_classifier(model_dir, labeled, cfg)

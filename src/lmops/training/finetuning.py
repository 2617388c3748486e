"""The finetune stage's work: the pretrained backbone plus a classification head, trained.

The stage script opens the MLflow run; :func:`finetune_classifier` builds data, model and
Trainer from params, fits and measures; :func:`save_classifier` writes the model folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import mlflow

from lmops.config import Params
from lmops.data.datamodules import LabeledDataModule
from lmops.export.bundle import load_bundle, save_classifier_bundle
from lmops.io import read_json
from lmops.models.heads import SequenceClassifier
from lmops.tracking.lightning_logger import training_logger
from lmops.training.callbacks import MetricHistory
from lmops.training.classifier_module import ClassifierModule
from lmops.training.trainer import build_trainer

__all__ = ["FinetuneResult", "finetune_classifier", "save_classifier"]


@dataclass
class FinetuneResult:
    """The trained classifier with what inference needs to treat inputs as training did."""

    model: SequenceClassifier
    labels: list[str]
    max_length: int
    eos_id: int
    pad_id: int
    metrics: dict[str, float | int]
    history: list[dict[str, Any]]


def finetune_classifier(
    params: Params, root: Path, pretrained: Path, labeled: Path, run: mlflow.ActiveRun
) -> FinetuneResult:
    """Fit the classifier on ``labeled/{train,val}.jsonl``; the metrics are the final val ones."""
    cfg = params.finetune
    labels: list[str] = read_json(labeled / "labels.json")
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    bundle = load_bundle(pretrained)
    max_length = min(cfg.max_length, bundle.model.config.block_size)
    data = LabeledDataModule(
        labeled,
        pretrained / "tokenizer.json",
        max_length=max_length,
        batch_size=cfg.batch_size,
        pad_id=bundle.config["pad_id"],
        seed=cfg.seed,
        num_workers=params.hardware.num_workers,
    )
    model = SequenceClassifier(bundle.model, num_labels=len(labels), dropout=cfg.dropout)
    module = ClassifierModule(model, cfg, num_labels=len(labels))
    history = MetricHistory()
    trainer = build_trainer(
        params.hardware,
        max_steps=cfg.max_steps,
        precision=cfg.precision,
        val_every=cfg.val_every,
        limit_val_batches=1.0,
        grad_clip=cfg.grad_clip,
        accumulate=1,
        default_root_dir=str(root / ".lmops" / "finetune"),
        logger=training_logger(run, root),
        callbacks=[history],
        log_every_n_steps=params.tracking.log_every_n_steps,
    )
    trainer.fit(module, datamodule=data)
    val = trainer.validate(module, datamodule=data, verbose=False)[0]
    metrics: dict[str, float | int] = {k: float(v) for k, v in val.items() if k.startswith("val/")}
    metrics["train/steps"] = int(trainer.global_step)
    return FinetuneResult(
        model,
        labels,
        max_length,
        bundle.config["eos_id"],
        bundle.config["pad_id"],
        metrics,
        history.rows,
    )


def save_classifier(folder: Path, result: FinetuneResult, tokenizer: Path) -> None:
    """The classifier's model folder, with its labels and the tokenizer it was trained with."""
    save_classifier_bundle(
        folder,
        result.model,
        tokenizer,
        result.labels,
        result.max_length,
        result.eos_id,
        result.pad_id,
    )

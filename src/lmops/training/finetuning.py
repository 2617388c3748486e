"""The finetune stage's work: the pretrained model adapted to the task in ``finetune.task``.

``classification``: the backbone plus a classification head, trained on ``(text, label)`` rows.
``sft``: the LM itself learns to write the response to a prompt (loss on the response only,
packed rows). ``finetune.method: lora`` trains low-rank adapters only; the saved model has them
merged (a plain model folder any consumer loads), and ``adapter.safetensors`` beside it holds
the adapters alone.

The stage script opens the MLflow run; :func:`finetune` builds data, model and Trainer from
params, fits and measures; :func:`save_finetuned` writes the model folder.

A run killed midway resumes like pretraining: given a :class:`ResumePoint` (its store from
:func:`~lmops.training.checkpointing.finetune_checkpoint_store`), the Trainer writes a checkpoint
every ``hardware.checkpoint_every`` steps and the next attempt continues from the newest one with
the same weights (LoRA adapters included: they are applied before the optimizer is built),
optimizer, schedule, data position and random generators, so it ends with the model an
uninterrupted run ends with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import mlflow
import torch
import torch.nn as nn
from safetensors.torch import save_file

from lmops.config import FinetuneConfig, LoraConfig, Params
from lmops.data.datamodules import LabeledDataModule
from lmops.data.sft_datamodule import SFTDataModule
from lmops.export.bundle import Bundle, load_bundle, save_classifier_bundle, save_lm_bundle
from lmops.io import SKIPPED, atomic_write_json, read_json
from lmops.models.heads import SequenceClassifier
from lmops.models.lora import apply_lora, lora_state_dict, merge_lora
from lmops.tracking.lightning_logger import training_logger
from lmops.training.base_module import TrainingModule
from lmops.training.callbacks import MetricHistory
from lmops.training.checkpointing import ResumePoint
from lmops.training.classifier_module import ClassifierModule
from lmops.training.sft_module import SFTModule
from lmops.training.trainer import build_trainer

__all__ = ["ADAPTER_FILE", "FinetuneResult", "finetune", "save_finetuned"]

ADAPTER_FILE = "adapter.safetensors"


@dataclass
class FinetuneResult:
    """The trained model with what inference needs to treat inputs as training did."""

    task: str
    model: nn.Module | None  # SequenceClassifier or GPT, LoRA merged; None for task none
    max_length: int
    eos_id: int
    pad_id: int
    metrics: dict[str, float | int]
    history: list[dict[str, Any]]
    labels: list[str] = field(default_factory=list)  # classification
    prompt_template: str | None = None  # sft
    data_report: dict[str, Any] = field(default_factory=dict)  # sft: kept / truncated / dropped
    adapter: dict[str, torch.Tensor] | None = None  # lora: the adapters alone
    adapter_meta: dict[str, str] = field(default_factory=dict)


def _classification(
    params: Params, bundle: Bundle, pretrained: Path, labeled: Path, max_length: int
) -> tuple[L.LightningDataModule, TrainingModule, list[str]]:
    cfg = params.finetune
    labels: list[str] = read_json(labeled / "labels.json")
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
    _lora(model, cfg, trainable=("head",))
    return data, ClassifierModule(model, cfg, num_labels=len(labels)), labels


def _sft(
    params: Params, bundle: Bundle, pretrained: Path, labeled: Path, max_length: int
) -> tuple[L.LightningDataModule, TrainingModule]:
    cfg = params.finetune
    data = SFTDataModule(
        labeled,
        pretrained / "tokenizer.json",
        max_length=max_length,
        batch_size=cfg.batch_size,
        eos_id=bundle.eos_id,
        pad_id=bundle.config["pad_id"],
        template=cfg.prompt_template,
        overflow=cfg.overflow,
        packing=cfg.packing,
        seed=cfg.seed,
        num_workers=params.hardware.num_workers,
    )
    data.setup("fit")  # encode now: a set where nothing fits fails before training starts
    model = bundle.model
    model.train()
    _lora(model, cfg)
    return data, SFTModule(model, cfg)


def _lora(model: nn.Module, cfg: FinetuneConfig, trainable: tuple[str, ...] = ()) -> None:
    if cfg.method == "lora":
        lora = cfg.lora
        apply_lora(model, lora.targets, lora.rank, lora.alpha, lora.dropout, trainable=trainable)


def finetune(
    params: Params,
    root: Path,
    pretrained: Path,
    labeled: Path,
    run: mlflow.ActiveRun | None,
    resume: ResumePoint | None = None,
) -> FinetuneResult:
    """Fit the fine-tuned model on ``labeled/{train,val}.jsonl``; the metrics are the final
    val ones. With ``resume``, checkpoints are written as it trains and a run continues from the
    newest one; ``run`` (``None``: no metric logging) is recorded in it for the next attempt."""
    cfg = params.finetune
    if cfg.task == "none":
        return FinetuneResult("none", None, 0, 0, 0, {}, [])
    resume = resume or ResumePoint(None)
    if run is not None:
        resume.attach(run)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    bundle = load_bundle(pretrained)
    max_length = min(cfg.max_length, bundle.model.config.block_size)
    labels: list[str] = []
    if cfg.task == "sft":
        data, module = _sft(params, bundle, pretrained, labeled, max_length)
    else:
        data, module, labels = _classification(params, bundle, pretrained, labeled, max_length)
    history = MetricHistory()
    saving = resume.callbacks(params.hardware.checkpoint_every, cfg.val_every)
    trainer = build_trainer(
        params.hardware,
        max_steps=cfg.max_steps,
        precision=cfg.precision,
        val_every=cfg.val_every,
        limit_val_batches=1.0,
        grad_clip=cfg.grad_clip,
        accumulate=1,
        default_root_dir=str(root / ".lmops" / "finetune"),
        logger=training_logger(run, root) if run is not None else None,
        callbacks=[history, *saving],
        enable_checkpointing=bool(saving),
        log_every_n_steps=params.tracking.log_every_n_steps,
    )
    # weights_only: a checkpoint is data (tensors, counters, RNG states), never code to run
    trainer.fit(module, datamodule=data, ckpt_path=resume.ckpt_path, weights_only=True)
    val = trainer.validate(module, datamodule=data, verbose=False)[0]
    metrics: dict[str, float | int] = {k: float(v) for k, v in val.items() if k.startswith("val/")}
    metrics["train/steps"] = int(trainer.global_step)
    model = module.model
    result = FinetuneResult(
        cfg.task,
        model,
        max_length,
        bundle.eos_id,
        bundle.config["pad_id"],
        metrics,
        history.rows,
        labels=labels,
        prompt_template=cfg.prompt_template if cfg.task == "sft" else None,
        data_report=data.report() if isinstance(data, SFTDataModule) else {},
    )
    if cfg.method == "lora":
        _take_adapter(result, model, cfg.lora)
    return result


def _take_adapter(result: FinetuneResult, model: nn.Module, lora: LoraConfig) -> None:
    """Copy the trained adapters into ``result`` (exported alone too), then merge them, so the
    saved model is a plain GPT that loads without any LoRA code."""
    result.adapter = {k: v.detach().clone().contiguous() for k, v in lora_state_dict(model).items()}
    result.adapter_meta = {
        "rank": str(lora.rank),
        "alpha": str(lora.alpha),
        "targets": ",".join(lora.targets),
    }
    merge_lora(model)


def save_finetuned(folder: Path, result: FinetuneResult, tokenizer: Path) -> None:
    """The fine-tuned model folder (a classifier, or an LM with its prompt template), plus the
    LoRA adapters alone when there are any."""
    if result.model is None:
        atomic_write_json(folder / SKIPPED, {"skipped": "finetune.task is none: no fine-tuning"})
        return
    if result.task == "sft":
        save_lm_bundle(
            folder,
            result.model,
            tokenizer,
            result.eos_id,
            result.pad_id,
            prompt_template=result.prompt_template,
        )
    else:
        save_classifier_bundle(
            folder,
            result.model,
            tokenizer,
            result.labels,
            result.max_length,
            result.eos_id,
            result.pad_id,
        )
    if result.adapter is not None:
        # one JSON entry: safetensors writes separate metadata keys in a random order, and a
        # file that differs run to run would look changed to DVC
        meta = {"lora": json.dumps(result.adapter_meta, sort_keys=True)}
        save_file(result.adapter, str(folder / ADAPTER_FILE), metadata=meta)

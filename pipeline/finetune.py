"""Stage finetune: the pretrained backbone plus a classification head, trained on the labeled set."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import mlflow

from lmops.config import Params
from lmops.data.datamodules import LabeledDataModule
from lmops.export.bundle import load_bundle, save_classifier_bundle
from lmops.io import atomic_dir, atomic_write_json, read_json, write_csv
from lmops.models.heads import SequenceClassifier
from lmops.stage import require, stage_main
from lmops.tracking.lightning_logger import training_logger
from lmops.tracking.runs import stage_run, write_run_info
from lmops.training.callbacks import MetricHistory
from lmops.training.classifier_module import ClassifierModule
from lmops.training.trainer import build_trainer

log = logging.getLogger(__name__)


@stage_main("finetune")
def main(params: Params, root: Path) -> None:
    cfg = params.finetune
    pretrained = require(root / "models" / "pretrain" / "model", "run the pretrain stage first")
    labeled = require(root / "data" / "clean" / "labeled", "run the clean stage first")
    out = root / "models" / "finetune"
    labels: list[str] = read_json(labeled / "labels.json")
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    bundle = load_bundle(pretrained)
    eos_id, pad_id = bundle.config["eos_id"], bundle.config["pad_id"]
    max_length = min(cfg.max_length, bundle.model.config.block_size)
    data = LabeledDataModule(
        labeled,
        pretrained / "tokenizer.json",
        max_length=max_length,
        batch_size=cfg.batch_size,
        pad_id=pad_id,
        seed=cfg.seed,
        num_workers=params.hardware.num_workers,
    )
    model = SequenceClassifier(bundle.model, num_labels=len(labels), dropout=cfg.dropout)
    module = ClassifierModule(model, cfg, num_labels=len(labels))

    with stage_run(
        "finetune",
        params,
        inputs={"labeled": labeled, "pretrained": pretrained},
        upstream={"pretrain": pretrained.parent, "clean": labeled.parent},
        out_dir=out,
        root=root,
        system_metrics=True,
    ) as run:
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
        metrics = {k: float(v) for k, v in val.items() if k.startswith("val/")}
        metrics["train/steps"] = int(trainer.global_step)
        with atomic_dir(out / "model") as tmp:
            save_classifier_bundle(
                tmp, model, pretrained / "tokenizer.json", labels, max_length, eos_id, pad_id
            )
        atomic_write_json(out / "metrics.json", metrics)
        write_csv(out / "history.csv", history.rows)
        mlflow.log_metrics(
            {f"final/{k.split('/')[1]}": v for k, v in metrics.items() if k.startswith("val/")}
        )
        mlflow.log_artifact(str(out / "history.csv"))
        write_run_info(out, run)
    log.info(
        "val acc %.3f, macro-F1 %.3f",
        metrics.get("val/acc", float("nan")),
        metrics.get("val/f1", float("nan")),
    )


if __name__ == "__main__":
    main()

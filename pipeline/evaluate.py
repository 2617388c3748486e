"""Stage evaluate: held-out perplexity of the LM, accuracy / macro-F1 / confusion of the classifier."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import mlflow

from lmops.config import LmopsError, Params
from lmops.data.datamodules import LabeledDataModule
from lmops.data.shards import open_tokens
from lmops.evaluation.metrics import classification_metrics, perplexity, predict_classes
from lmops.evaluation.report import markdown_report, plot_confusion
from lmops.export.bundle import load_bundle
from lmops.io import atomic_write_json, atomic_write_text, read_json, write_csv
from lmops.stage import require, stage_main
from lmops.tracking.runs import stage_run, write_run_info

log = logging.getLogger(__name__)


@stage_main("evaluate")
def main(params: Params, root: Path) -> None:
    cfg = params.evaluate
    tokens = require(root / "data" / "tokens" / "val.bin", "run the tokenize stage first").parent
    labeled = require(
        root / "data" / "clean" / "labeled" / "test.jsonl", "run the clean stage first"
    ).parent
    lm_dir = require(root / "models" / "pretrain" / "model", "run the pretrain stage first")
    clf_dir = require(root / "models" / "finetune" / "model", "run the finetune stage first")
    out = root / "reports" / "eval"

    with stage_run(
        "evaluate",
        params,
        inputs={
            "val_tokens": tokens / "val.bin",
            "test_set": labeled / "test.jsonl",
            "lm": lm_dir,
            "classifier": clf_dir,
        },
        upstream={"pretrain": lm_dir.parent, "finetune": clf_dir.parent},
        out_dir=out,
        root=root,
    ) as run:
        lm = load_bundle(lm_dir)
        meta = read_json(tokens / "meta.json")
        val_tokens = open_tokens(tokens / "val.bin", meta["dtype"])
        block = lm.model.config.block_size
        if len(val_tokens) <= block:
            raise LmopsError(
                f"val.bin has {len(val_tokens)} tokens, fewer than block_size {block}; raise clean.val_fraction"
            )
        ppl = perplexity(lm.model, val_tokens, block, cfg.batch_size, cfg.ppl_max_batches)

        clf = load_bundle(clf_dir)
        labels: list[str] = clf.config["labels"]
        data = LabeledDataModule(
            labeled,
            clf_dir / "tokenizer.json",
            max_length=clf.config["max_length"],
            batch_size=cfg.batch_size,
            pad_id=clf.config["pad_id"],
            seed=0,
        )
        data.setup("test")
        preds, probs, target = predict_classes(clf.model, data.test_dataloader())
        cls = classification_metrics(preds, target, len(labels))

        metrics = {
            "val/loss": ppl["loss"],
            "val/ppl": ppl["ppl"],
            "test/acc": cls["acc"],
            "test/f1": cls["f1"],
            "test/n": int(len(target)),
        }
        if not all(math.isfinite(float(v)) for v in metrics.values()):
            raise LmopsError(f"evaluation produced a non-finite metric: {metrics}")
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "metrics.json", metrics)
        write_csv(
            out / "predictions.csv",
            [
                {
                    "actual": labels[t],
                    "predicted": labels[p],
                    "probability": round(float(pr.max()), 4),
                }
                for t, p, pr in zip(target.tolist(), preds.tolist(), probs, strict=True)
            ],
        )
        atomic_write_json(out / "confusion.json", {"labels": labels, "matrix": cls["confusion"]})
        plot_confusion(cls["confusion"], labels, out / "confusion.png")
        atomic_write_text(out / "report.md", markdown_report(metrics, labels, cls["confusion"]))
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        for name in ("report.md", "confusion.png", "predictions.csv", "metrics.json"):
            mlflow.log_artifact(str(out / name))
        write_run_info(out, run)
    log.info(
        "val ppl %.2f | test acc %.3f, macro-F1 %.3f on %d examples",
        metrics["val/ppl"],
        metrics["test/acc"],
        metrics["test/f1"],
        metrics["test/n"],
    )


if __name__ == "__main__":
    main()

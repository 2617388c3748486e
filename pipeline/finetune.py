"""Stage finetune: the pretrained model adapted to finetune.task (a classifier, or prompt -> response).

A run killed midway resumes from its last checkpoint, in the same MLflow run, and ends with the
model an uninterrupted run writes (:mod:`lmops.training.checkpointing`)."""

from __future__ import annotations

import logging
from pathlib import Path

from lmops.config import Params
from lmops.io import atomic_dir, write_csv
from lmops.stage import require, stage_main
from lmops.tracking.runs import finish_stage, prefixed, stage_run
from lmops.training.checkpointing import ResumePoint, finetune_checkpoint_store
from lmops.training.finetuning import finetune, save_finetuned

log = logging.getLogger(__name__)


@stage_main("finetune")
def main(params: Params, root: Path) -> None:
    pretrained = require(root / "models" / "pretrain" / "model", "run the pretrain stage first")
    labeled = require(root / "data" / "clean" / "labeled", "run the clean stage first")
    out = root / "models" / "finetune"
    resume = ResumePoint(finetune_checkpoint_store(params, root, pretrained, labeled))
    with stage_run(
        "finetune",
        params,
        inputs={"labeled": labeled, "pretrained": pretrained},
        datasets={"labeled": "training"},  # the MLflow UI's Dataset column
        upstream={"pretrain": pretrained.parent, "clean": labeled.parent},
        out_dir=out,
        root=root,
        resume_run_id=resume.run_id,
        system_metrics=True,
    ) as run:
        result = finetune(params, root, pretrained, labeled, run, resume)
        with atomic_dir(out / "model") as tmp:
            save_finetuned(tmp, result, pretrained / "tokenizer.json")
        write_csv(out / "history.csv", result.history)
        val = {k.split("/")[1]: v for k, v in result.metrics.items() if k.startswith("val/")}
        # sft: examples kept / truncated / dropped per split, never silent
        metrics = {**result.metrics, **({"data": result.data_report} if result.data_report else {})}
        logged = {**prefixed(val, "final"), **prefixed(result.data_report, "data")}
        finish_stage(out, metrics=metrics, logged=logged, artifacts=[out / "history.csv"])
    resume.finish()  # the outputs are written: nothing is left to resume
    log.info("%s: %s", params.finetune.task, {k: round(v, 4) for k, v in val.items()})


if __name__ == "__main__":
    main()

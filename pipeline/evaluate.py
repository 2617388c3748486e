"""Stage evaluate: held-out perplexity of the LM and the fine-tuned model's test scores
(classifier: accuracy, macro-F1, MCC, ECE, confusion; sft: BLEU, ROUGE, exact match)."""

from __future__ import annotations

import logging
from pathlib import Path

from lmops.config import Params
from lmops.evaluation.suite import score_finetuned, score_lm, stage_metrics
from lmops.stage import require, stage_main
from lmops.tracking.runs import finish_stage, stage_run

log = logging.getLogger(__name__)


@stage_main("evaluate")
def main(params: Params, root: Path) -> None:
    tokens = require(root / "data" / "tokens" / "val.bin", "run the tokenize stage first").parent
    labeled = require(root / "data" / "clean" / "labeled", "run the clean stage first")
    lm_dir = require(root / "models" / "pretrain" / "model", "run the pretrain stage first")
    tuned_dir = require(root / "models" / "finetune" / "model", "run the finetune stage first")
    out = root / "reports" / "eval"
    with stage_run(
        "evaluate",
        params,
        inputs={
            "val_tokens": tokens / "val.bin",
            "labeled": labeled,
            "lm": lm_dir,
            "finetuned": tuned_dir,
        },
        upstream={"pretrain": lm_dir.parent, "finetune": tuned_dir.parent},
        out_dir=out,
        root=root,
    ):
        lm = score_lm(lm_dir, tokens, params.evaluate)
        tuned = score_finetuned(params.finetune.task, tuned_dir, labeled, params.evaluate)
        metrics = stage_metrics(lm, tuned)
        artifacts = tuned.write_reports(out, metrics)
        finish_stage(out, metrics=metrics, logged=metrics, artifacts=artifacts)
    log.info("%s", {k: round(float(v), 4) for k, v in metrics.items()})


if __name__ == "__main__":
    main()

"""Stage evaluate: held-out perplexity of the LM, accuracy / macro-F1 / confusion of the classifier."""

from __future__ import annotations

import logging
from pathlib import Path

from lmops.config import Params
from lmops.evaluation.suite import score_classifier, score_lm, stage_metrics, write_reports
from lmops.stage import require, stage_main
from lmops.tracking.runs import finish_stage, stage_run

log = logging.getLogger(__name__)


@stage_main("evaluate")
def main(params: Params, root: Path) -> None:
    tokens = require(root / "data" / "tokens" / "val.bin", "run the tokenize stage first").parent
    test_set = require(
        root / "data" / "clean" / "labeled" / "test.jsonl", "run the clean stage first"
    )
    lm_dir = require(root / "models" / "pretrain" / "model", "run the pretrain stage first")
    clf_dir = require(root / "models" / "finetune" / "model", "run the finetune stage first")
    out = root / "reports" / "eval"
    with stage_run(
        "evaluate",
        params,
        inputs={
            "val_tokens": tokens / "val.bin",
            "test_set": test_set,
            "lm": lm_dir,
            "classifier": clf_dir,
        },
        upstream={"pretrain": lm_dir.parent, "finetune": clf_dir.parent},
        out_dir=out,
        root=root,
    ):
        lm = score_lm(lm_dir, tokens, params.evaluate)
        clf = score_classifier(clf_dir, test_set.parent, params.evaluate)
        metrics = stage_metrics(lm, clf)
        artifacts = write_reports(out, metrics, clf)
        finish_stage(out, metrics=metrics, logged=metrics, artifacts=artifacts)
    log.info(
        "val ppl %.2f | test acc %.3f, macro-F1 %.3f on %d examples",
        metrics["val/ppl"],
        metrics["test/acc"],
        metrics["test/f1"],
        metrics["test/n"],
    )


if __name__ == "__main__":
    main()

"""Stage finetune: the pretrained backbone plus a classification head, trained on the labeled set."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from lmops.config import Params
from lmops.io import atomic_dir, write_csv
from lmops.stage import require, stage_main
from lmops.tracking.runs import finish_stage, prefixed, stage_run
from lmops.training.finetuning import finetune_classifier, save_classifier

log = logging.getLogger(__name__)


@stage_main("finetune")
def main(params: Params, root: Path) -> None:
    pretrained = require(root / "models" / "pretrain" / "model", "run the pretrain stage first")
    labeled = require(root / "data" / "clean" / "labeled", "run the clean stage first")
    out = root / "models" / "finetune"
    with stage_run(
        "finetune",
        params,
        inputs={"labeled": labeled, "pretrained": pretrained},
        upstream={"pretrain": pretrained.parent, "clean": labeled.parent},
        out_dir=out,
        root=root,
        system_metrics=True,
    ) as run:
        result = finetune_classifier(params, root, pretrained, labeled, run)
        with atomic_dir(out / "model") as tmp:
            save_classifier(tmp, result, pretrained / "tokenizer.json")
        write_csv(out / "history.csv", result.history)
        val = {k.split("/")[1]: v for k, v in result.metrics.items() if k.startswith("val/")}
        finish_stage(
            out,
            metrics=result.metrics,
            logged=prefixed(val, "final"),
            artifacts=[out / "history.csv"],
        )
    m = result.metrics
    log.info("val acc %.3f, macro-F1 %.3f", m.get("val/acc", math.nan), m.get("val/f1", math.nan))


if __name__ == "__main__":
    main()

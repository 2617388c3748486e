"""Stage tokenize: train the tokenizer on the clean train split, encode both splits to token files."""

from __future__ import annotations

import logging
from pathlib import Path

from lmops.config import Params
from lmops.data.token_files import token_metrics, write_token_files
from lmops.stage import require, stage_main
from lmops.tracking.runs import finish_stage, prefixed, stage_run

log = logging.getLogger(__name__)


@stage_main("tokenize")
def main(params: Params, root: Path) -> None:
    clean = root / "data" / "clean"
    corpus = require(clean / "corpus", "run the clean stage first (dvc repro clean)")
    out = root / "data" / "tokens"
    executor = params.hardware.data_executor
    with stage_run(
        "tokenize",
        params,
        inputs={"corpus": corpus},
        upstream={"clean": clean},
        out_dir=out,
        root=root,
    ):
        meta = write_token_files(
            corpus,
            out,
            params.tokenize,
            executor,
            executor.work_root(root),
            progress=params.hardware.progress_bar,
        )
        metrics = token_metrics(meta, (corpus / "train.jsonl").stat().st_size)
        finish_stage(
            out,
            metrics=metrics,
            logged=prefixed(metrics, "tokenize"),
            artifacts=[out / "meta.json"],
        )
    log.info(
        "vocab %d (padded %d), train %d tokens / %d docs, val %d tokens",
        meta["vocab_size"],
        meta["padded_vocab_size"],
        meta["train_tokens"],
        meta["train_documents"],
        meta["val_tokens"],
    )


if __name__ == "__main__":
    main()

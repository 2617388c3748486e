"""Stage clean: raw corpus + labeled set -> normalized, filtered, deduplicated, split JSONL."""

from __future__ import annotations

import logging
from pathlib import Path

from lmops.config import Params
from lmops.data.cleaning import remove_work, run_clean, work_dir, write_splits
from lmops.data.filters import require_language_support
from lmops.data.labeled import load_labeled, write_labeled
from lmops.data.report import render_table, stage_metrics, write_report
from lmops.data.sources import IngestStats, corpus_sources, iter_source_documents, source_files
from lmops.io import atomic_dir
from lmops.stage import stage_main
from lmops.tracking.runs import finish_stage, prefixed, stage_run

log = logging.getLogger(__name__)


@stage_main("clean")
def main(params: Params, root: Path) -> None:
    cfg, data, hw = params.clean, params.data, params.hardware
    out = root / "data" / "clean"
    require_language_support(cfg.language)  # a missing word segmenter: one line, no work done
    # first: a bad labeled file fails before the long part
    labeled = load_labeled(data, root, params.finetune.task)
    sources = corpus_sources(data, root)
    stats = IngestStats()
    documents = iter_source_documents(
        sources,
        stats,
        text_column=data.corpus_text_column,
        invalid_utf8=cfg.invalid_utf8,
        root=root,
        txt_split=data.txt_split,
        txt_block_chars=data.txt_block_chars,
        header=data.corpus_header,
    )
    work = work_dir(params, sources, root)
    inputs = {**labeled.files, **source_files(sources)}

    with stage_run("clean", params, inputs=inputs, upstream={}, out_dir=out, root=root):
        run = run_clean(
            documents, cfg, work, executor=hw.data_executor, ingest=stats, progress=hw.progress_bar
        )
        with atomic_dir(out / "corpus") as tmp:
            weights = [s.weight for s in sources]
            write_splits(run, tmp, val_fraction=cfg.val_fraction, seed=cfg.seed, weights=weights)
        report = run.report
        report["labeled"] = write_labeled(labeled, cfg, out / "labeled")
        artifacts = write_report(report, out)
        metrics = stage_metrics(report)
        finish_stage(out, metrics=metrics, logged=prefixed(metrics, "clean"), artifacts=artifacts)
    if not hw.data_executor.keep_work:
        remove_work(work)
    for line in render_table(report):
        log.info(line)


if __name__ == "__main__":
    main()

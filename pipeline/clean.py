"""Stage clean: raw corpus + labeled set -> normalized, filtered, deduplicated, split JSONL."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from lmops.config import LmopsError, Params, to_flat_dict
from lmops.data.cleaning import remove_work, run_clean, split_by_document, work_fingerprint
from lmops.data.cleaning import write_splits as write_corpus_splits
from lmops.data.report import render_html, render_table
from lmops.data.sample import LABELS, generate_corpus, generate_labeled
from lmops.data.sources import (
    IngestStats,
    SourceDocument,
    accept_text,
    iter_source_documents,
    parse_sources,
    read_labeled,
)
from lmops.data.text import normalize_text
from lmops.io import atomic_dir, atomic_write_json, atomic_write_text, write_jsonl
from lmops.stage import stage_main
from lmops.tracking.runs import stage_run, write_run_info

log = logging.getLogger(__name__)

Labeled = list[tuple[str, str]]


def _labeled(params: Params, root: Path) -> tuple[Labeled, Labeled | None, dict[str, Path]]:
    """The labeled rows (read first: a bad labeled file should fail before the long part)."""
    data = params.data
    if data.source == "sample":
        s = data.sample
        labeled = generate_labeled(s.n_labeled_train + s.n_labeled_test, s.seed + 1)
        return labeled[: s.n_labeled_train], labeled[s.n_labeled_train :], {}
    train = read_labeled(
        root / data.labeled_train_path, data.labeled_text_column, data.labeled_label_column
    )
    test = None
    inputs = {"labeled_train": root / data.labeled_train_path}
    if data.labeled_test_path:
        test = read_labeled(
            root / data.labeled_test_path,
            data.labeled_test_text_column or data.labeled_text_column,
            data.labeled_label_column,
            param="data.labeled_test_path",
        )
        inputs["labeled_test"] = root / data.labeled_test_path
    return train, test, inputs


def _clean_labeled(rows: Labeled, params: Params) -> Labeled:
    form = params.clean.unicode_form
    out = [(normalize_text(text, form), label) for text, label in rows]
    return [(text, label) for text, label in out if text]


def _write_labeled(params: Params, out: Path, train_rows: Labeled, test_rows: Labeled | None):
    cfg = params.clean
    train_rows = _clean_labeled(train_rows, params)
    if test_rows is None:
        train_rows, test_rows = split_by_document(train_rows, cfg.labeled_test_fraction, cfg.seed)
    else:
        test_rows = _clean_labeled(test_rows, params)
    train_rows, val_rows = split_by_document(train_rows, cfg.labeled_val_fraction, cfg.seed)
    if not train_rows or not val_rows or not test_rows:
        raise LmopsError(
            "the labeled set is too small to split into train/val/test; "
            "add rows to data.labeled_train_path"
        )
    names = sorted({label for _, label in train_rows + val_rows + test_rows})
    if params.data.source == "sample":
        names = list(LABELS)
    index = {name: i for i, name in enumerate(names)}
    with atomic_dir(out / "labeled") as tmp:
        for split, rows in (("train", train_rows), ("val", val_rows), ("test", test_rows)):
            write_jsonl(
                tmp / f"{split}.jsonl",
                (
                    {"id": f"{split}{i}", "text": t, "label": index[lab]}
                    for i, (t, lab) in enumerate(rows)
                ),
            )
        atomic_write_json(tmp / "labels.json", names)
    return {"labels": names, "train": len(train_rows), "val": len(val_rows), "test": len(test_rows)}


@stage_main("clean")
def main(params: Params, root: Path) -> None:
    cfg, data, hw = params.clean, params.data, params.hardware
    ex = hw.data_executor
    out = root / "data" / "clean"
    train_rows, test_rows, inputs = _labeled(params, root)
    stats = IngestStats()
    if data.source == "sample":
        sources, weights = [], []

        def documents() -> Iterator[SourceDocument]:
            for i, text in enumerate(generate_corpus(data.sample.n_documents, data.sample.seed)):
                kept = accept_text(text, cfg.invalid_utf8, stats)
                if kept is not None:
                    yield SourceDocument(f"sample:{i}", kept, 0)

        docs = documents()
    else:
        sources = parse_sources(data.corpus_paths, root, data.corpus_weights)
        weights = [s.weight for s in sources]
        for i, s in enumerate(sources):
            if s.path is not None:
                inputs[f"corpus{i}"] = s.path
        docs = iter_source_documents(
            sources,
            stats,
            text_column=data.corpus_text_column,
            invalid_utf8=cfg.invalid_utf8,
            root=root,
        )
    settings = {"data": to_flat_dict(data), "clean": to_flat_dict(cfg)}
    fingerprint = work_fingerprint(settings, [s.path for s in sources if s.path is not None])
    work = (root / ex.work_dir if not Path(ex.work_dir).is_absolute() else Path(ex.work_dir)) / (
        f"clean-{fingerprint}"
    )

    with stage_run("clean", params, inputs=inputs, upstream={}, out_dir=out, root=root) as run:
        result = run_clean(docs, cfg, work, executor=ex, ingest=stats, progress=hw.progress_bar)
        with atomic_dir(out / "corpus") as tmp:
            write_corpus_splits(
                result, tmp, val_fraction=cfg.val_fraction, seed=cfg.seed, weights=weights
            )
        report = result.report
        report["labeled"] = _write_labeled(params, out, train_rows, test_rows)
        split = report["split"]
        metrics = {
            "docs_in": report["docs_in"],
            "docs_out": report["docs_out"],
            "bytes_in": report["bytes_in"],
            "bytes_out": report["bytes_out"],
            "kept_fraction": round(report["kept_fraction"], 6),
            "train_documents": split["train_documents"],
            "val_documents": split["val_documents"],
            "labeled_train": report["labeled"]["train"],
            "labeled_test": report["labeled"]["test"],
            "dropped": {s["name"]: s["dropped"] for s in report["steps"]},
        }
        if "minhash" in report:
            metrics["near_dup_pairs"] = report["minhash"]["verified_pairs"]
        atomic_write_json(out / "report.json", report)
        atomic_write_text(out / "report.html", render_html(report))
        atomic_write_json(out / "metrics.json", metrics)
        import mlflow

        mlflow.log_metrics({f"clean/{k}": float(v) for k, v in to_flat_dict(metrics).items()})
        mlflow.log_artifact(str(out / "report.json"))
        mlflow.log_artifact(str(out / "report.html"))
        write_run_info(out, run)
    if not ex.keep_work:
        remove_work(work)

    for line in render_table(report):
        log.info(line)
    log.info(
        "train %d docs, val %d docs; labeled %s",
        split["train_documents"],
        split["val_documents"],
        report["labeled"],
    )


if __name__ == "__main__":
    main()

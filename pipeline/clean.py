"""Stage clean: raw corpus + labeled set -> normalized, filtered, deduplicated, split JSONL."""

from __future__ import annotations

import logging
from pathlib import Path

from lmops.config import LmopsError, Params
from lmops.data.cleaning import clean_documents, normalize_text, split_by_document
from lmops.data.sample import LABELS, generate_corpus, generate_labeled
from lmops.data.sources import read_corpus, read_labeled
from lmops.io import atomic_dir, atomic_write_json, write_jsonl
from lmops.stage import stage_main
from lmops.tracking.runs import stage_run, write_run_info

log = logging.getLogger(__name__)


def _load_raw(params: Params, root: Path) -> tuple[list[str], list, list | None, dict[str, Path]]:
    data = params.data
    if data.source == "sample":
        s = data.sample
        docs = generate_corpus(s.n_documents, s.seed)
        labeled = generate_labeled(s.n_labeled_train + s.n_labeled_test, s.seed + 1)
        return docs, labeled[: s.n_labeled_train], labeled[s.n_labeled_train :], {}
    paths = [root / p for p in data.corpus_paths]
    docs = list(read_corpus(paths, data.corpus_text_column))
    train = read_labeled(
        root / data.labeled_train_path, data.labeled_text_column, data.labeled_label_column
    )
    test = None
    if data.labeled_test_path:
        test = read_labeled(
            root / data.labeled_test_path,
            data.labeled_test_text_column or data.labeled_text_column,
            data.labeled_label_column,
            param="data.labeled_test_path",
        )
    inputs = {f"corpus{i}": p for i, p in enumerate(paths)}
    inputs["labeled_train"] = root / data.labeled_train_path
    if data.labeled_test_path:
        inputs["labeled_test"] = root / data.labeled_test_path
    return docs, train, test, inputs


def _clean_labeled(rows: list[tuple[str, str]], params: Params) -> list[tuple[str, str]]:
    form = params.clean.unicode_form
    out = [(normalize_text(text, form).strip(), label) for text, label in rows]
    return [(text, label) for text, label in out if text]


@stage_main("clean")
def main(params: Params, root: Path) -> None:
    cfg = params.clean
    out = root / "data" / "clean"
    docs, train_rows, test_rows, inputs = _load_raw(params, root)
    if not docs:
        raise LmopsError("the corpus has no documents; check data.corpus_paths")

    with stage_run("clean", params, inputs=inputs, upstream={}, out_dir=out, root=root) as run:
        kept, report = clean_documents(docs, cfg)
        train_docs, val_docs = split_by_document(kept, cfg.val_fraction, cfg.seed)

        train_rows = _clean_labeled(train_rows, params)
        if test_rows is None:
            train_rows, test_rows = split_by_document(
                train_rows, cfg.labeled_test_fraction, cfg.seed
            )
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

        with atomic_dir(out / "corpus") as tmp:
            write_jsonl(
                tmp / "train.jsonl", ({"id": f"d{i}", "text": t} for i, t in enumerate(train_docs))
            )
            write_jsonl(
                tmp / "val.jsonl", ({"id": f"v{i}", "text": t} for i, t in enumerate(val_docs))
            )
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

        report["split"] = {"train_documents": len(train_docs), "val_documents": len(val_docs)}
        report["labeled"] = {
            "labels": names,
            "train": len(train_rows),
            "val": len(val_rows),
            "test": len(test_rows),
        }
        metrics = {
            "docs_in": report["docs_in"],
            "docs_out": report["docs_out"],
            "bytes_in": report["bytes_in"],
            "bytes_out": report["bytes_out"],
            "kept_fraction": report["docs_out"] / max(1, report["docs_in"]),
            "train_documents": len(train_docs),
            "val_documents": len(val_docs),
            "labeled_train": len(train_rows),
            "labeled_test": len(test_rows),
        }
        atomic_write_json(out / "report.json", report)
        atomic_write_json(out / "metrics.json", metrics)
        import mlflow

        mlflow.log_metrics({f"clean/{k}": float(v) for k, v in metrics.items()})
        mlflow.log_artifact(str(out / "report.json"))
        write_run_info(out, run)

    log.info("%-14s %10s %10s %12s %12s", "step", "docs in", "docs out", "bytes in", "bytes out")
    for step in report["steps"]:
        log.info(
            "%-14s %10d %10d %12d %12d",
            step["name"],
            step["docs_in"],
            step["docs_out"],
            step["bytes_in"],
            step["bytes_out"],
        )
    log.info(
        "train %d docs, val %d docs; labeled %s", len(train_docs), len(val_docs), report["labeled"]
    )


if __name__ == "__main__":
    main()

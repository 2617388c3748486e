"""Cleaning in a test the way the clean stage cleans: sources read through
:func:`iter_source_documents`, the datatrove passes of :func:`run_clean`, and the corpus split
written by :func:`write_splits` (all of it into train, in input order)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lmops.config import CleanConfig, DataExecutorConfig
from lmops.data.cleaning import run_clean, write_splits
from lmops.data.sources import IngestStats, Source, iter_source_documents, parse_sources

CORPUS = "corpus.jsonl"  # the documents of clean_texts are "corpus.jsonl:<index>"


def clean_sources(
    sources: list[Source],
    cfg: CleanConfig,
    root: Path,
    *,
    executor: DataExecutorConfig | None = None,
) -> tuple[list[str], dict[str, Any]]:
    """The texts the stage would write for ``sources`` (in input order) and its report."""
    stats = IngestStats()
    documents = iter_source_documents(sources, stats, invalid_utf8=cfg.invalid_utf8, root=root)
    executor = executor or DataExecutorConfig(workers=1)
    run = run_clean(documents, cfg, root / "work", executor=executor, ingest=stats)
    write_splits(run, root / "out", val_fraction=0.0, seed=cfg.seed)
    with open(root / "out" / "train.jsonl", encoding="utf-8") as fh:
        kept = [json.loads(line)["text"] for line in fh]
    return kept, run.report


def clean_texts(
    texts: Iterable[str], cfg: CleanConfig, *, executor: DataExecutorConfig | None = None
) -> tuple[list[str], dict[str, Any]]:
    """Clean ``texts``, one row each of a JSONL corpus file (JSON escapes carry any string,
    lone surrogates included, into the reader unchanged)."""
    with tempfile.TemporaryDirectory(prefix="lmops-test-clean-") as tmp:
        root = Path(tmp)
        rows = "".join(json.dumps({"text": text}) + "\n" for text in texts)
        (root / CORPUS).write_text(rows, encoding="ascii")
        return clean_sources(parse_sources([CORPUS], root), cfg, root, executor=executor)

"""Read raw text and labeled examples from local files: txt, jsonl, csv, tsv, or folders of them.

Why a module of its own: the clean stage should not care where text comes from. Every reader
yields plain strings (one per document) or ``(text, label)`` pairs, and every problem a user can
fix (a missing file, a wrong column name, an unknown extension) stops with one line naming the
``params.yaml`` key to change.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmops.config import LmopsError

__all__ = ["TEXT_EXTENSIONS", "read_corpus", "read_labeled"]

_TXT = {".txt", ".text", ".md"}
_JSONL = {".jsonl", ".ndjson"}
_CSV = {".csv"}
_TSV = {".tsv"}
TEXT_EXTENSIONS = frozenset(_TXT | _JSONL | _CSV | _TSV)

# Paragraph blocks of a txt file are joined until a document holds at least this many characters:
# tinyshakespeare's paragraphs are single speeches of 20-200 characters, too short to learn from.
DEFAULT_BLOCK_CHARS = 1000
_BLANK_LINES = re.compile(r"\n[ \t\r\f\v]*\n")


def _ext(path: Path) -> str:
    return path.suffix.lower()


def _expand(paths: list[str | os.PathLike[str]], param: str) -> list[Path]:
    """Files named directly, plus every supported file below named folders (sorted)."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and _ext(p) in TEXT_EXTENSIONS
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not found:
                raise LmopsError(
                    f"{path}: folder has no {'/'.join(sorted(TEXT_EXTENSIONS))} files; fix {param}"
                )
            files.extend(found)
        elif path.is_file():
            if _ext(path) not in TEXT_EXTENSIONS:
                raise LmopsError(
                    f"{path}: unknown extension {path.suffix!r} (supported: "
                    f"{', '.join(sorted(TEXT_EXTENSIONS))}); fix {param}"
                )
            files.append(path)
        else:
            raise LmopsError(f"{path}: no such file or folder; fix {param}")
    return files


def _split_paragraph_blocks(text: str, block_chars: int) -> Iterator[str]:
    """Blank-line-separated paragraphs, joined in order until a block has ``block_chars``."""
    paragraphs = [
        p.strip("\n").rstrip() for p in _BLANK_LINES.split(text.replace("\r\n", "\n")) if p.strip()
    ]
    if len(paragraphs) <= 1:
        if text.strip():
            yield text
        return
    block: list[str] = []
    size = 0
    for para in paragraphs:
        block.append(para)
        size += len(para) + 2
        if size >= block_chars:
            yield "\n\n".join(block)
            block, size = [], 0
    if block:
        yield "\n\n".join(block)


def _read_txt(path: Path, block_chars: int) -> Iterator[str]:
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    yield from _split_paragraph_blocks(text, block_chars)


@contextlib.contextmanager
def _big_csv_fields() -> Iterator[None]:
    """Allow long documents in one csv field (the default limit is 128 KiB)."""
    old = csv.field_size_limit()
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _iter_rows(path: Path, param: str) -> Iterator[dict[str, Any]]:
    """Rows of a jsonl / csv / tsv file as dicts.

    TSV is read with ``QUOTE_NONE``: TSV files such as SST-2 keep quote characters as text, and
    csv quoting would swallow tabs and newlines up to the next quote.
    """
    ext = _ext(path)
    if ext in _JSONL:
        with open(path, encoding="utf-8-sig") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise LmopsError(
                        f"{path}:{lineno}: not valid JSON ({exc.msg}); fix the file or {param}"
                    ) from None
                if not isinstance(row, dict):
                    raise LmopsError(f"{path}:{lineno}: expected a JSON object per line")
                yield row
        return
    with _big_csv_fields(), open(path, encoding="utf-8-sig", newline="") as fh:
        if ext in _TSV:
            reader = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        else:
            reader = csv.DictReader(fh)
        yield from reader


def _column(row: dict[str, Any], column: str, path: Path, param: str) -> Any:
    if column not in row:
        raise LmopsError(
            f"{path}: no column {column!r} (has: {', '.join(map(str, row))}); set {param}"
        )
    return row[column]


def _read_table(path: Path, text_column: str, path_param: str, column_param: str) -> Iterator[str]:
    for row in _iter_rows(path, path_param):
        value = _column(row, text_column, path, column_param)
        if value is None:
            continue
        yield value if isinstance(value, str) else str(value)


def read_corpus(
    paths: list[str | os.PathLike[str]],
    text_column: str = "text",
    *,
    block_chars: int = DEFAULT_BLOCK_CHARS,
) -> Iterator[str]:
    """Documents from files and folders, in order (folders: supported files, sorted, recursive).

    txt: the whole file is one document, unless it has blank-line-separated paragraphs; then
    consecutive paragraphs are joined into blocks of about ``block_chars`` characters (so
    tinyshakespeare becomes about a thousand documents rather than one). jsonl / csv / tsv: one
    document per row, taken from ``text_column``. Paths are checked before the first document
    is yielded, so a typo fails fast.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    if not paths:
        raise LmopsError("no corpus files given; list files or folders in data.corpus_paths")
    files = _expand(list(paths), "data.corpus_paths")

    def generate() -> Iterator[str]:
        for path in files:
            if _ext(path) in _TXT:
                yield from _read_txt(path, block_chars)
            else:
                yield from _read_table(
                    path, text_column, "data.corpus_paths", "data.corpus_text_column"
                )

    return generate()


def read_labeled(
    path: str | os.PathLike[str],
    text_column: str = "text",
    label_column: str = "label",
    *,
    param: str = "data.labeled_train_path",
) -> list[tuple[str, str]]:
    """``(text, label)`` pairs from a csv / tsv / jsonl file; labels are kept as strings.

    Rows with an empty text are skipped (a label without text teaches nothing); a row without a
    label is an error, since guessing one would corrupt the evaluation. ``param`` names the
    setting that points at this file, for the error messages.
    """
    p = Path(path)
    if not p.is_file():
        raise LmopsError(f"{p}: no such file; fix {param}")
    if _ext(p) not in _JSONL | _CSV | _TSV:
        raise LmopsError(
            f"{p}: labeled data must be .csv, .tsv or .jsonl (got {p.suffix!r}); fix {param}"
        )
    out: list[tuple[str, str]] = []
    for i, row in enumerate(_iter_rows(p, param), 1):
        text = _column(row, text_column, p, "data.labeled_text_column")
        label = _column(row, label_column, p, "data.labeled_label_column")
        if text is None or not str(text).strip():
            continue
        if label is None or str(label).strip() == "":
            raise LmopsError(f"{p}: row {i} has no label in column {label_column!r}; fix the file")
        out.append((str(text), str(label).strip()))
    if not out:
        raise LmopsError(f"{p}: no labeled rows found; fix {param}")
    return out

"""Where raw text comes from: local files and folders, Hugging Face datasets, the built-in sample.

Why a module of its own: the clean stage should not care where text comes from. Every kind of
:class:`Source` yields documents with a stable id through the same accept step, and raw input
is treated as untrusted:

- bytes that are not UTF-8 are decoded with ``surrogateescape``; each document holding such
  bytes is repaired (U+FFFD) or dropped, as ``clean.invalid_utf8`` says, and counted;
- a binary file (NUL bytes in its first 8 KiB) among text files is skipped with a warning and
  counted, and so is a file that breaks off mid-way (a truncated ``.gz``);
- every problem a user can fix (a missing file, a wrong column, an unknown extension, a
  dataset that cannot be loaded) stops with one line naming the ``params.yaml`` key to change,
  before any document is read.

Formats: ``.txt`` / ``.text`` / ``.md`` (blank-line paragraphs grouped into documents),
``.jsonl`` / ``.ndjson``, ``.csv``, ``.tsv`` (each optionally ``.gz``), ``.parquet`` (datatrove's
ParquetReader), and ``hf:NAME?config=C&split=S&column=COL&streaming=true`` (datatrove's
HuggingFaceDatasetReader; NAME is a hub dataset or a local dataset folder). With
``data.source: sample`` the corpus is one source, the built-in generator (:mod:`lmops.data.sample`).
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs, urlsplit

from lmops.config import DataConfig, LmopsError, SampleConfig
from lmops.data.sample import generate_corpus
from lmops.data.text import has_invalid_utf8, repair_invalid_utf8

__all__ = [
    "TEXT_EXTENSIONS",
    "IngestStats",
    "accept_text",
    "Source",
    "SourceDocument",
    "corpus_sources",
    "iter_source_documents",
    "parse_sources",
    "read_labeled",
    "source_files",
]

log = logging.getLogger(__name__)

_TXT = {".txt", ".text", ".md"}
_JSONL = {".jsonl", ".ndjson"}
_CSV = {".csv"}
_TSV = {".tsv"}
_PARQUET = {".parquet"}
TEXT_EXTENSIONS = frozenset(_TXT | _JSONL | _CSV | _TSV | _PARQUET)
_GZ = ".gz"
HF_PREFIX = "hf:"
SAMPLE_SPEC = "sample"  # the built-in sample's documents are "sample:<index>"
BINARY_PROBE_BYTES = 8192

# Paragraph blocks of a txt file are joined until a document holds at least this many characters:
# tinyshakespeare's paragraphs are single speeches of 20-200 characters, too short to learn from.
BLOCK_CHARS = 1000


@dataclass
class IngestStats:
    """What reading found: counted so the report can say what was skipped or repaired."""

    files: int = 0
    documents_read: int = 0  # as the readers produced them
    bytes_read: int = 0
    documents: int = 0  # passed on to cleaning
    bytes: int = 0
    empty_documents: int = 0
    invalid_utf8_repaired: int = 0
    invalid_utf8_dropped: int = 0
    binary_files_skipped: list[str] = field(default_factory=list)
    unreadable_files: list[str] = field(default_factory=list)
    documents_per_source: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "documents_read": self.documents_read,
            "bytes_read": self.bytes_read,
            "documents": self.documents,
            "bytes": self.bytes,
            "empty_documents": self.empty_documents,
            "invalid_utf8_repaired": self.invalid_utf8_repaired,
            "invalid_utf8_dropped": self.invalid_utf8_dropped,
            "binary_files_skipped": len(self.binary_files_skipped),
            "binary_files": self.binary_files_skipped[:20],
            "unreadable_files": self.unreadable_files[:20],
            "documents_per_source": self.documents_per_source,
        }


@dataclass(frozen=True)
class Source:
    """Where one part of the corpus comes from: an entry of ``data.corpus_paths`` (a local path,
    resolved, or a Hugging Face dataset), or the built-in sample (``data.source: sample``)."""

    spec: str  # as the user wrote it: the id prefix of its documents ("sample" for the sample)
    path: Path | None = None
    hf_name: str | None = None
    hf_options: tuple[tuple[str, str], ...] = ()
    weight: float = 1.0
    sample: SampleConfig | None = None  # set for the built-in sample


@dataclass(frozen=True)
class SourceDocument:
    id: str
    text: str
    source: int  # index into the list of sources


# ------------------------------------------------------------------------------ paths


def _kind(path: Path) -> str:
    """The format of ``path`` from its extension, looking through a ``.gz``."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == _GZ:
        suffixes = suffixes[:-1]
    ext = suffixes[-1] if suffixes else ""
    for kind, exts in (
        ("txt", _TXT),
        ("jsonl", _JSONL),
        ("csv", _CSV),
        ("tsv", _TSV),
        ("parquet", _PARQUET),
    ):
        if ext in exts:
            return kind
    return ""


def _supported(path: Path) -> bool:
    kind = _kind(path)
    return bool(kind) and not (kind == "parquet" and path.suffix.lower() == _GZ)


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
                and _supported(p)
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not found:
                raise LmopsError(
                    f"{path}: folder has no {'/'.join(sorted(TEXT_EXTENSIONS))} files "
                    f"(optionally .gz); fix {param}"
                )
            files.extend(found)
        elif path.is_file():
            if not _supported(path):
                raise LmopsError(
                    f"{path}: unknown extension {''.join(path.suffixes)!r} (supported: "
                    f"{', '.join(sorted(TEXT_EXTENSIONS))}, optionally .gz); fix {param}"
                )
            files.append(path)
        else:
            raise LmopsError(f"{path}: no such file or folder; fix {param}")
    return files


def corpus_sources(data: DataConfig, root: Path) -> list[Source]:
    """The corpus that ``data`` names: the built-in sample, or the ``data.corpus_paths`` entries
    (weighted by ``data.corpus_weights``)."""
    if data.source == "sample":
        return [Source(spec=SAMPLE_SPEC, sample=data.sample)]
    return parse_sources(data.corpus_paths, root, data.corpus_weights)


def parse_sources(specs: list[str], root: Path, weights: list[float] | None = None) -> list[Source]:
    """``data.corpus_paths`` (with one weight each, or none) as checked :class:`Source` entries.

    Local paths are resolved against ``root`` and must exist; ``hf:`` entries need the
    ``datasets`` package. Nothing is read yet. The weights were checked with the params
    (``lmops.config``).
    """
    if not specs:
        raise LmopsError("no corpus files given; list files or folders in data.corpus_paths")
    out = []
    for i, spec in enumerate(specs):
        w = float(weights[i]) if weights else 1.0
        if spec.startswith(HF_PREFIX):
            out.append(_parse_hf(spec, root, w))
            continue
        path = Path(spec)
        path = path if path.is_absolute() else root / path
        _expand([path], "data.corpus_paths")  # fail now, not mid-run
        out.append(Source(spec=spec, path=path, weight=w))
    return out


def source_files(sources: list[Source]) -> dict[str, Path]:
    """The local files and folders among ``sources`` by input name (``corpus<i>``): what the
    stage's run hashes as its inputs."""
    return {f"corpus{i}": s.path for i, s in enumerate(sources) if s.path is not None}


def _parse_hf(spec: str, root: Path, weight: float) -> Source:
    rest = spec[len(HF_PREFIX) :]
    parts = urlsplit(rest)
    name = (parts.netloc + parts.path) if parts.scheme == "" else rest.split("?", 1)[0]
    name = name.strip()
    if not name:
        raise LmopsError(f"{spec}: no dataset name after 'hf:'; fix data.corpus_paths")
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    allowed = {"config", "split", "column", "streaming", "revision"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise LmopsError(
            f"{spec}: unknown option(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))}); "
            "fix data.corpus_paths"
        )
    try:
        import datasets  # noqa: F401
    except ImportError:
        raise LmopsError(
            f"{spec}: Hugging Face datasets need the 'datasets' package: pip install 'lmops[hf]'"
        ) from None
    local = Path(name) if Path(name).is_absolute() else root / name
    if local.exists():
        name = str(local)
    return Source(spec=spec, hf_name=name, hf_options=tuple(sorted(options.items())), weight=weight)


# ------------------------------------------------------------------------------ opening files


def _open_binary(path: Path) -> IO[bytes]:
    if path.suffix.lower() == _GZ:
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _looks_binary(path: Path) -> bool:
    """NUL bytes in the first 8 KiB (after decompression): how git and grep spot binary files.

    A file whose first bytes cannot even be read (say, a truncated .gz) is not called binary
    here; reading it fails later and it is counted as unreadable.
    """
    try:
        with _open_binary(path) as fh:
            head = fh.read(BINARY_PROBE_BYTES)
    except (OSError, EOFError):
        return False
    return b"\x00" in head


@contextlib.contextmanager
def _open_text(path: Path, newline: str | None = None) -> Iterator[IO[str]]:
    """Text with undecodable bytes kept as lone surrogates, to be repaired per document."""
    with _open_binary(path) as raw:
        text = io.TextIOWrapper(
            raw, encoding="utf-8-sig", errors="surrogateescape", newline=newline
        )
        try:
            yield text
        finally:
            text.detach()


@contextlib.contextmanager
def _big_csv_fields() -> Iterator[None]:
    """Allow long documents in one csv field (the default limit is 128 KiB)."""
    old = csv.field_size_limit()
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        yield
    finally:
        csv.field_size_limit(old)


# ------------------------------------------------------------------------------ txt


def _close_paragraph(lines: list[str]) -> str | None:
    para = "".join(lines).strip("\n").rstrip()
    lines.clear()
    return para if para.strip() else None


def _paragraph_blocks(lines: Iterator[str], block_chars: int) -> Iterator[str]:
    """Blank-line-separated paragraphs, joined in order until a block has ``block_chars``.

    A file with one paragraph is one document, exactly as written. Streams: only the current
    block (or, until a second paragraph shows up, the file so far) is held in memory.
    """
    raw: list[str] | None = []  # the text as read, kept while there is only one paragraph
    current: list[str] = []
    first: str | None = None
    count = 0
    block: list[str] = []
    size = 0

    def paragraphs() -> Iterator[str]:
        nonlocal raw
        for line in lines:
            if raw is not None:
                raw.append(line)
            if line.strip():
                current.append(line)
            elif (para := _close_paragraph(current)) is not None:
                yield para
        if (para := _close_paragraph(current)) is not None:
            yield para

    for para in paragraphs():
        count += 1
        if count == 1:
            first = para
            continue
        if count == 2:
            raw = None
            todo = [first, para]
        else:
            todo = [para]
        for item in todo:
            block.append(item)
            size += len(item) + 2
            if size >= block_chars:
                yield "\n\n".join(block)
                block, size = [], 0
    if count <= 1:
        text = "".join(raw or [])
        if text.strip():
            yield text
    elif block:
        yield "\n\n".join(block)


# ------------------------------------------------------------------------------ tables


def _iter_rows(path: Path, param: str) -> Iterator[dict[str, Any]]:
    """Rows of a jsonl / csv / tsv file (optionally gzipped) as dicts.

    TSV is read with ``QUOTE_NONE``: TSV files such as SST-2 keep quote characters as text, and
    csv quoting would swallow tabs and newlines up to the next quote.
    """
    kind = _kind(path)
    if kind == "jsonl":
        with _open_text(path) as fh:
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
    with _big_csv_fields(), _open_text(path, newline="") as fh:
        if kind == "tsv":
            reader = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        else:
            reader = csv.DictReader(fh)
        yield from reader


def _column(row: dict[str, Any], column: str, path: Path | str, param: str) -> Any:
    if column not in row:
        raise LmopsError(
            f"{path}: no column {column!r} (has: {', '.join(map(str, row))}); set {param}"
        )
    return row[column]


def _read_table(path: Path, text_column: str) -> Iterator[str]:
    for row in _iter_rows(path, "data.corpus_paths"):
        value = _column(row, text_column, path, "data.corpus_text_column")
        if value is None:
            continue
        yield value if isinstance(value, str) else str(value)


def _read_parquet(path: Path, text_column: str) -> Iterator[str]:
    """datatrove's ParquetReader, after checking that the text column exists."""
    import pyarrow.parquet as pq
    from datatrove.pipeline.readers import ParquetReader

    names = pq.read_schema(path).names
    if text_column not in names:
        raise LmopsError(
            f"{path}: no column {text_column!r} (has: {', '.join(names)}); set "
            "data.corpus_text_column"
        )
    reader = ParquetReader(str(path.parent), text_key=text_column, id_key=text_column)
    for doc in reader.read_file(path.name):
        yield doc.text


def _read_file(path: Path, text_column: str) -> Iterator[str]:
    kind = _kind(path)
    if kind == "txt":
        with _open_text(path) as fh:
            yield from _paragraph_blocks(iter(fh), BLOCK_CHARS)
    elif kind == "parquet":
        yield from _read_parquet(path, text_column)
    else:
        yield from _read_table(path, text_column)


# ------------------------------------------------------------------------------ hf datasets


def _read_hf(source: Source, text_column: str) -> Iterator[str]:
    """Rows of a Hugging Face dataset through datatrove's HuggingFaceDatasetReader."""
    from datatrove.pipeline.readers import HuggingFaceDatasetReader

    opts = dict(source.hf_options)
    column = opts.get("column", text_column)
    split = opts.get("split", "train")
    name = source.hf_name or ""
    local = Path(name)
    if local.is_dir() and (
        (local / "state.json").exists() or (local / "dataset_dict.json").exists()
    ):
        # a dataset saved with save_to_disk; a DatasetDict keeps each split in a subfolder
        folder = local / split if (local / "dataset_dict.json").exists() else local
        if not folder.is_dir():
            raise LmopsError(f"{source.spec}: no split {split!r} in {local}; fix data.corpus_paths")
        reader = HuggingFaceDatasetReader(
            str(folder), load_from_disk=True, text_key=column, id_key=column
        )
    else:
        options: dict[str, Any] = {"split": split}
        if "config" in opts:
            options["name"] = opts["config"]
        if "revision" in opts:
            options["revision"] = opts["revision"]
        streaming = opts.get("streaming", "true" if not local.is_dir() else "false")
        reader = HuggingFaceDatasetReader(
            name,
            dataset_options=options,
            streaming=streaming.lower() in ("1", "true", "yes"),
            text_key=column,
            id_key=column,
        )
    try:
        for doc in reader.run(None, 0, 1):
            yield doc.text
    except LmopsError:
        raise
    except Exception as exc:  # hub unreachable, unknown dataset or split, bad column
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LmopsError(
            f"{source.spec}: could not read the dataset ({type(exc).__name__}: {msg}); fix "
            "data.corpus_paths"
        ) from None


# ------------------------------------------------------------------------------ documents


def accept_text(text: str, invalid_utf8: str, stats: IngestStats) -> str | None:
    """``text`` ready for the cleaner (invalid bytes repaired), or None to drop it; counted."""
    stats.documents_read += 1
    stats.bytes_read += len(text.encode("utf-8", "surrogatepass"))
    if has_invalid_utf8(text):
        if invalid_utf8 == "drop":
            stats.invalid_utf8_dropped += 1
            return None
        stats.invalid_utf8_repaired += 1
        text = repair_invalid_utf8(text)
    if not text.strip():
        stats.empty_documents += 1
        return None
    stats.documents += 1
    stats.bytes += len(text.encode("utf-8"))
    return text


def _relative_path(path: Path, root: Path | None) -> str:
    """``path`` relative to ``root`` when it lies below it: how ids and warnings name a file."""
    if root is not None:
        with contextlib.suppress(ValueError):
            return path.relative_to(root).as_posix()
    return path.as_posix()


def _until_unreadable(texts: Iterator[str], name: str, stats: IngestStats) -> Iterator[str]:
    """``texts`` of file ``name`` until reading fails (say, a truncated .gz): the rest is
    skipped with a warning and the file counted as unreadable."""
    read = 0
    try:
        for text in texts:
            yield text
            read += 1
    except (OSError, EOFError, UnicodeError) as exc:
        log.warning("%s: unreadable after %d documents (%s), rest skipped", name, read, exc)
        stats.unreadable_files.append(name)


def _text_streams(
    source: Source, stats: IngestStats, text_column: str, root: Path | None
) -> Iterator[tuple[str, Iterator[str]]]:
    """``(id prefix, texts)`` for each part of ``source``: the sample, a dataset, or each of
    its files (binary files skipped with a warning and counted)."""
    if source.sample is not None:
        yield source.spec, iter(generate_corpus(source.sample.n_documents, source.sample.seed))
        return
    if source.hf_name is not None:
        yield source.spec, _read_hf(source, text_column)
        return
    assert source.path is not None
    for path in _expand([source.path], "data.corpus_paths"):
        stats.files += 1
        name = _relative_path(path, root)
        if _kind(path) != "parquet" and _looks_binary(path):
            log.warning("%s: looks binary (NUL bytes), skipped", name)
            stats.binary_files_skipped.append(name)
            continue
        yield name, _until_unreadable(_read_file(path, text_column), name, stats)


def iter_source_documents(
    sources: list[Source],
    stats: IngestStats,
    *,
    text_column: str = "text",
    invalid_utf8: str = "repair",
    root: Path | None = None,
) -> Iterator[SourceDocument]:
    """Every document of every source, in order, with ids ``<file, dataset or "sample">:<index>``.

    Each text goes through :func:`accept_text`: documents with invalid UTF-8 are repaired or
    dropped, empty ones dropped, all counted in ``stats``; so are binary and unreadable files.
    """
    for index, source in enumerate(sources):
        accepted_before = stats.documents
        for prefix, texts in _text_streams(source, stats, text_column, root):
            for i, text in enumerate(texts):
                kept = accept_text(text, invalid_utf8, stats)
                if kept is not None:
                    yield SourceDocument(f"{prefix}:{i}", kept, index)
        if source.sample is None:  # a breakdown by data.corpus_paths entry: the sample is none
            stats.documents_per_source[source.spec] = stats.documents - accepted_before


def read_labeled(
    path: str | os.PathLike[str],
    text_column: str = "text",
    label_column: str = "label",
    *,
    param: str = "data.labeled_train_path",
    column_params: tuple[str, str] = ("data.labeled_text_column", "data.labeled_label_column"),
) -> list[tuple[str, str]]:
    """``(text, label)`` pairs from a csv / tsv / jsonl file; labels are kept as strings.

    Rows with an empty text are skipped (a label without text teaches nothing); a row without a
    label is an error, since guessing one would corrupt the evaluation. Invalid UTF-8 in a text
    is repaired (U+FFFD). ``param`` names the setting that points at this file, and
    ``column_params`` the settings naming the two columns (SFT reads prompt / response pairs
    through here too), for the errors.
    """
    p = Path(path)
    if not p.is_file():
        raise LmopsError(f"{p}: no such file; fix {param}")
    if _kind(p) not in ("jsonl", "csv", "tsv"):
        raise LmopsError(
            f"{p}: labeled data must be .csv, .tsv or .jsonl (got {p.suffix!r}); fix {param}"
        )
    if _looks_binary(p):
        raise LmopsError(f"{p}: looks like a binary file, not text; fix {param}")
    out: list[tuple[str, str]] = []
    for i, row in enumerate(_iter_rows(p, param), 1):
        text = _column(row, text_column, p, column_params[0])
        label = _column(row, label_column, p, column_params[1])
        if text is None or not str(text).strip():
            continue
        if label is None or str(label).strip() == "":
            raise LmopsError(f"{p}: row {i} has no value in column {label_column!r}; fix the file")
        out.append((repair_invalid_utf8(str(text)), repair_invalid_utf8(str(label)).strip()))
    if not out:
        raise LmopsError(f"{p}: no labeled rows found; fix {param}")
    return out

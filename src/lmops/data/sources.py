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

Formats: ``.txt`` / ``.text`` / ``.md`` (cut into documents as ``data.txt_split`` says),
``.jsonl`` / ``.ndjson``, ``.csv``, ``.tsv`` (each optionally ``.gz``; csv / tsv with a header row,
or without one and columns named by position, ``data.corpus_header`` / ``data.labeled_header``),
``.parquet`` (datatrove's ParquetReader), and ``hf:NAME?config=C&split=S&column=COL&streaming=true`` (datatrove's
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
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs, urlsplit

from lmops.config import TXT_SPLITS, DataConfig, LmopsError, SampleConfig
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

# Paragraph blocks of a txt file are joined until a document holds at least this many characters
# (the default of data.txt_block_chars): tinyshakespeare's paragraphs are single speeches of
# 20-200 characters, too short to learn from.
BLOCK_CHARS = 1000
# A header cell with this many words or characters is more likely a sentence than a column name.
_HEADER_MAX_WORDS = 3
_HEADER_MAX_CHARS = 40


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


@dataclass(frozen=True)
class _CorpusFormat:
    """How corpus files are read (the ``data.*`` settings), carried down to the readers as one."""

    text_column: str = "text"
    txt_split: str = "paragraphs"
    txt_block_chars: int = BLOCK_CHARS
    header: bool = True  # csv / tsv: the first row names the columns


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


# Where a line longer than a block is best cut: after a sentence end (Latin or CJK), else a space.
_SENTENCE_END = re.compile(
    r"[.!?][\"'\u201d\u2019)\]]*\s+|[\u3002\uff01\uff1f][\u300d\u300f\u201d\u2019\uff09]*"
)
_SPACE = re.compile(r"\s+")


def _cut_point(text: str) -> int:
    """Where to cut ``text`` (part of a line too long for one block): after the last sentence end
    in its second half, else after the last space there, else at its end (text with neither,
    such as a run of Chinese without punctuation, is cut where the window ends)."""
    half = len(text) // 2
    for pattern in (_SENTENCE_END, _SPACE):
        last = None
        for last in pattern.finditer(text, half):  # noqa: B007 - the last match is wanted
            pass
        if last is not None and last.end() > half:
            return last.end()
    return len(text)


def _line_pieces(fh: IO[str], limit: int) -> Iterator[str]:
    """The lines of ``fh`` (with their newline), a line longer than ``limit`` characters cut
    into pieces of at most ``limit`` (:func:`_cut_point`).

    Why: a file that is one 100 MB line (text8, a minified dump) must stream like any other;
    reading it line by line would hold the whole line, and then the whole file, in memory.
    """
    carry = ""
    while True:
        chunk = fh.readline(max(1, limit - len(carry)))
        if not chunk:
            if carry:
                yield carry
            return
        piece = carry + chunk
        if chunk.endswith("\n") or len(piece) < limit:  # a whole line, or the file's last
            carry = ""
            yield piece
            continue
        cut = _cut_point(piece)
        carry = piece[cut:]
        yield piece[:cut]


def _paragraph_blocks(lines: Iterable[str], block_chars: int) -> Iterator[str]:
    """Blank-line-separated paragraphs, joined in order until a block has ``block_chars``.

    A paragraph that would grow past ``block_chars`` on its own is cut before the line that
    would take it there, so a file without blank lines (one sentence per line, the usual shape
    of a sentence corpus) becomes documents of at most ``block_chars`` (``lines`` are pieces of
    at most that, :func:`_line_pieces`) instead of one giant document. Streams: only the
    current block and paragraph, each under about ``block_chars``, are in memory.
    """
    block: list[str] = []  # the paragraphs (or paragraph pieces) of the next document
    size = 0
    para: list[str] = []  # the lines of the current paragraph
    para_size = 0
    for line in lines:
        if not line.strip():  # a blank line ends the paragraph
            if (text := _close_paragraph(para)) is not None:
                block.append(text)
                size += len(text) + 2
            para_size = 0
            if size >= block_chars:
                yield "\n\n".join(block)
                block, size = [], 0
            continue
        if para and para_size + len(line) > block_chars:  # cut a long paragraph at a line end
            if (text := _close_paragraph(para)) is not None:
                block.append(text)
            para_size = 0
            yield "\n\n".join(block)
            block, size = [], 0
        para.append(line)
        para_size += len(line)
    if (text := _close_paragraph(para)) is not None:
        block.append(text)
    if block:
        yield "\n\n".join(block)


def _txt_documents(fh: IO[str], split: str, block_chars: int) -> Iterator[str]:
    """The documents of one text file as ``data.txt_split`` cuts it.

    ``paragraphs``: blank-line paragraphs grouped into blocks (:func:`_paragraph_blocks`);
    ``lines``: each non-empty line, stripped, is a document (however long: the length filter
    judges it); ``file``: the whole file as written is one document (held in memory).
    """
    if split == "file":
        text = fh.read()
        if text.strip():
            yield text
    elif split == "lines":
        for line in fh:
            if line.strip():
                yield line.strip()
    else:
        assert split == "paragraphs", split
        yield from _paragraph_blocks(_line_pieces(fh, block_chars), block_chars)


# ------------------------------------------------------------------------------ tables


def _positional_rows(rows: Iterator[list[str]]) -> Iterator[dict[str, Any]]:
    """Rows of a table without a header as dicts keyed by position ("0", "1", ...): every row
    has at least the first row's columns (a short row gets None, as ``csv.DictReader`` does)."""
    width = 0
    for fields_ in rows:
        if not fields_:  # a blank line, as DictReader skips them
            continue
        width = width or len(fields_)
        values: list[str | None] = list(fields_)
        values += [None] * (width - len(values))
        yield {str(i): v for i, v in enumerate(values)}


def _iter_rows(path: Path, param: str, header: bool = True) -> Iterator[dict[str, Any]]:
    """Rows of a jsonl / csv / tsv file (optionally gzipped) as dicts.

    TSV is read with ``QUOTE_NONE``: TSV files such as SST-2 keep quote characters as text, and
    csv quoting would swallow tabs and newlines up to the next quote. Without a ``header`` (GLUE's
    original CoLA files have none) the first row is data and columns are named by position,
    ``"0"``, ``"1"``, ...; jsonl rows name their fields themselves.
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
    dialect: dict[str, Any] = (
        {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if kind == "tsv" else {}
    )
    with _big_csv_fields(), _open_text(path, newline="") as fh:
        if header:
            yield from csv.DictReader(fh, **dialect)
        else:
            yield from _positional_rows(csv.reader(fh, **dialect))


def _looks_like_data(names: Iterable[Any]) -> bool:
    """Whether a header row looks like a data row: a cell that is a number or reads like a
    sentence (several words, or long) is unlike a column name. Empty cells prove nothing:
    pandas writes an empty name over its index column."""
    for name in names:
        cell = str(name).strip()
        if not cell:
            continue
        with contextlib.suppress(ValueError):
            float(cell)
            return True
        if len(cell.split()) > _HEADER_MAX_WORDS or len(cell) > _HEADER_MAX_CHARS:
            return True
    return False


def _short(name: Any) -> str:
    """A column name fit for a one-line message (a data row taken as header can be long)."""
    text = str(name).replace("\n", " ").replace("\r", " ")
    return text if len(text) <= _HEADER_MAX_CHARS else text[: _HEADER_MAX_CHARS - 3] + "..."


def _column(
    row: dict[str, Any],
    column: str,
    path: Path | str,
    param: str,
    *,
    header: bool = True,
    header_param: str = "",
) -> Any:
    """``row[column]``, or one line saying which param to set: the column's, and, when the
    file's first row was taken as a header but looks like data, ``header_param``."""
    if column in row:
        return row[column]
    has = ", ".join(_short(k) for k in row)
    message = f"{path}: no column {column!r} (has: {has}); set {param}"
    tabular = _kind(Path(path)) in ("csv", "tsv")
    if tabular and header_param and not header:
        message += f" to a column position ({header_param} is false: columns are 0, 1, ...)"
    elif tabular and header_param and _looks_like_data(row):
        message = (
            f"{path}: no column {column!r}, and the first row looks like data, not a header "
            f"(has: {has}); if the file has no header set {header_param}: false and {param} "
            "to a column position (0, 1, ...)"
        )
    raise LmopsError(message)


def _read_table(path: Path, fmt: _CorpusFormat) -> Iterator[str]:
    for row in _iter_rows(path, "data.corpus_paths", fmt.header):
        value = _column(
            row,
            fmt.text_column,
            path,
            "data.corpus_text_column",
            header=fmt.header,
            header_param="data.corpus_header",
        )
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


def _read_file(path: Path, fmt: _CorpusFormat) -> Iterator[str]:
    kind = _kind(path)
    if kind == "txt":
        with _open_text(path) as fh:
            yield from _txt_documents(fh, fmt.txt_split, fmt.txt_block_chars)
    elif kind == "parquet":
        yield from _read_parquet(path, fmt.text_column)
    else:
        yield from _read_table(path, fmt)


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
    source: Source, stats: IngestStats, fmt: _CorpusFormat, root: Path | None
) -> Iterator[tuple[str, Iterator[str]]]:
    """``(id prefix, texts)`` for each part of ``source``: the sample, a dataset, or each of
    its files (binary files skipped with a warning and counted)."""
    if source.sample is not None:
        yield source.spec, iter(generate_corpus(source.sample.n_documents, source.sample.seed))
        return
    if source.hf_name is not None:
        yield source.spec, _read_hf(source, fmt.text_column)
        return
    assert source.path is not None
    for path in _expand([source.path], "data.corpus_paths"):
        stats.files += 1
        name = _relative_path(path, root)
        if _kind(path) != "parquet" and _looks_binary(path):
            log.warning("%s: looks binary (NUL bytes), skipped", name)
            stats.binary_files_skipped.append(name)
            continue
        yield name, _until_unreadable(_read_file(path, fmt), name, stats)


def iter_source_documents(
    sources: list[Source],
    stats: IngestStats,
    *,
    text_column: str = "text",
    invalid_utf8: str = "repair",
    root: Path | None = None,
    txt_split: str = "paragraphs",
    txt_block_chars: int = BLOCK_CHARS,
    header: bool = True,
) -> Iterator[SourceDocument]:
    """Every document of every source, in order, with ids ``<file, dataset or "sample">:<index>``.

    Each text goes through :func:`accept_text`: documents with invalid UTF-8 are repaired or
    dropped, empty ones dropped, all counted in ``stats``; so are binary and unreadable files.
    ``txt_split`` / ``txt_block_chars`` say how text files are cut into documents and ``header``
    whether csv / tsv files start with a header row (``data.txt_split``,
    ``data.txt_block_chars``, ``data.corpus_header``).
    """
    if txt_split not in TXT_SPLITS:
        raise LmopsError(f"txt_split is {txt_split!r}; allowed: {', '.join(TXT_SPLITS)}")
    fmt = _CorpusFormat(text_column, txt_split, max(1, txt_block_chars), header)
    for index, source in enumerate(sources):
        accepted_before = stats.documents
        for prefix, texts in _text_streams(source, stats, fmt, root):
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
    header: bool = True,
    header_param: str = "data.labeled_header",
) -> list[tuple[str, str]]:
    """``(text, label)`` pairs from a csv / tsv / jsonl file; labels are kept as strings.

    Rows with an empty text are skipped (a label without text teaches nothing); a row without a
    label is an error, since guessing one would corrupt the evaluation. Invalid UTF-8 in a text
    is repaired (U+FFFD). ``param`` names the setting that points at this file, and
    ``column_params`` the settings naming the two columns (SFT reads prompt / response pairs
    through here too), for the errors. Without a ``header`` (``header_param`` false) a csv / tsv
    file's columns are named by position, ``"0"``, ``"1"``, ...
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
    for i, row in enumerate(_iter_rows(p, param, header), 1):
        text = _column(
            row, text_column, p, column_params[0], header=header, header_param=header_param
        )
        label = _column(
            row, label_column, p, column_params[1], header=header, header_param=header_param
        )
        if text is None or not str(text).strip():
            continue
        if label is None or str(label).strip() == "":
            raise LmopsError(f"{p}: row {i} has no value in column {label_column!r}; fix the file")
        out.append((repair_invalid_utf8(str(text)), repair_invalid_utf8(str(label)).strip()))
    if not out:
        raise LmopsError(f"{p}: no labeled rows found; fix {param}")
    return out

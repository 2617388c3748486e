"""Token files: every document encoded, followed by EOS, in one flat binary array on disk.

Why flat files: training samples random windows, and a memory-mapped array serves any window
without loading the corpus, from any number of dataloader workers or processes. Encoding
streams in batches (``encode_batch`` runs in parallel in Rust) so memory stays flat however
large the corpus is, and the file appears under its final name only once complete.

Sharded: :func:`encode_corpus` cuts the input JSONL into byte ranges (whole lines each), encodes
each range as one datatrove task (:class:`TokenShardWriter`: on this machine's cores, on slurm or
on ray, as ``hardware.data_executor`` says) into a part file, and concatenates the parts in
order. The result does not depend on how many parts or workers there were.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from datatrove.pipeline.base import PipelineStep
from tokenizers import Tokenizer

from lmops.config import DataExecutorConfig, LmopsError

__all__ = [
    "BATCH_DOCUMENTS",
    "TokenShardWriter",
    "encode_corpus",
    "encode_to_file",
    "iter_line_range",
    "open_tokens",
    "token_dtype",
]

PART_BYTES = 64 * 2**20  # input bytes per task: small enough to spread, large enough to amortize

BATCH_DOCUMENTS = 1000


def token_dtype(vocab_size: int) -> np.dtype:
    """``uint16`` when every id fits (vocab <= 65,535), else ``uint32``: half the disk and I/O."""
    return np.dtype(np.uint16) if vocab_size <= 65535 else np.dtype(np.uint32)


def _batches(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    it = iter(texts)
    while batch := list(islice(it, size)):
        yield batch


def _encode_batch(
    tokenizer: Tokenizer, batch: list[str], eos_id: int, dtype: np.dtype
) -> np.ndarray:
    """The ids of ``batch``, EOS after each document, as ``dtype`` (checked to fit).

    ``encode_batch_fast`` gives the same ids as ``encode_batch`` without computing character
    offsets, which nothing here uses: the stage then encodes as fast as a bare
    ``encode_batch`` while also reading JSON and writing shards (BENCHMARKS.md).
    """
    encodings = tokenizer.encode_batch_fast(batch, add_special_tokens=False)
    ids: list[int] = []
    for enc in encodings:
        ids += enc.ids
        ids.append(eos_id)
    arr = np.asarray(ids, dtype=np.int64)
    if arr.size and int(arr.max()) > np.iinfo(dtype).max:
        raise LmopsError(
            f"token id {int(arr.max())} does not fit {dtype}; the vocabulary is "
            "larger than the dtype allows (check tokenize.vocab_size)"
        )
    return arr.astype(dtype)


def encode_to_file(
    tokenizer: Tokenizer,
    texts: Iterable[str],
    path: str | os.PathLike[str],
    eos_id: int,
    dtype: np.dtype | str | type,
    *,
    batch_documents: int = BATCH_DOCUMENTS,
) -> tuple[int, int]:
    """Encode ``texts`` into ``path`` as ``dtype`` ids, EOS after every document.

    Returns ``(tokens, documents)``; tokens include the EOS ids. Written to a temp file beside
    ``path`` and renamed, so a crash never leaves a partial token file behind.
    """
    dtype = np.dtype(dtype)
    limit = np.iinfo(dtype).max
    if not 0 <= eos_id <= limit:
        raise LmopsError(f"eos id {eos_id} does not fit {dtype}; check tokenize.special_tokens")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tokens = documents = 0
    try:
        with os.fdopen(fd, "wb") as fh:
            for batch in _batches(texts, batch_documents):
                arr = _encode_batch(tokenizer, batch, eos_id, dtype)
                arr.tofile(fh)
                tokens += arr.size
                documents += len(batch)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return tokens, documents


def open_tokens(path: str | os.PathLike[str], dtype: np.dtype | str | type) -> np.ndarray:
    """A read-only memory map of a token file (an empty array for an empty file)."""
    p = Path(path)
    if not p.is_file():
        raise LmopsError(f"{p}: token file not found; run the tokenize stage (dvc repro tokenize)")
    dtype = np.dtype(dtype)
    size = p.stat().st_size
    if size % dtype.itemsize:
        raise LmopsError(
            f"{p}: {size} bytes is not a whole number of {dtype} tokens; check meta.json dtype"
        )
    if size == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(p, dtype=dtype, mode="r")


# ------------------------------------------------------------------------------ sharded


def iter_line_range(path: str | os.PathLike[str], start: int, end: int) -> Iterator[bytes]:
    """The lines of ``path`` that *begin* in bytes ``[start, end)``: ranges that tile a file
    give every line exactly once."""
    with open(path, "rb") as fh:
        if start > 0:
            fh.seek(start - 1)
            fh.readline()  # finish the line that straddles start: it belongs to the range before
        while fh.tell() < end:
            line = fh.readline()
            if not line:
                return
            yield line


class TokenShardWriter(PipelineStep):
    """One task of sharded tokenization: encode one byte range of a JSONL file to a part file.

    Writes ``{rank:05d}.bin`` (ids, EOS after each document) and ``{rank:05d}.json`` (token
    and document counts) into ``output_folder``. ``threads`` caps the Rust thread pool of
    this process, so several tasks on one machine do not oversubscribe its cores.
    """

    type = "🔢 - TOKENIZER"
    name = "🔢 Token shards"

    def __init__(
        self,
        tokenizer_path: str,
        input_path: str,
        output_folder: str,
        eos_id: int,
        dtype: str,
        text_key: str = "text",
        batch_documents: int = BATCH_DOCUMENTS,
        threads: int = 0,
    ) -> None:
        super().__init__()
        self.tokenizer_path = tokenizer_path
        self.input_path = input_path
        self.output_folder = output_folder
        self.eos_id = eos_id
        self.dtype = dtype
        self.text_key = text_key
        self.batch_documents = batch_documents
        self.threads = threads

    def run(self, data: Any = None, rank: int = 0, world_size: int = 1) -> None:
        if self.threads > 0:  # read by the Rust thread pool when it starts (first encode)
            os.environ.setdefault("RAYON_NUM_THREADS", str(self.threads))
        tokenizer = Tokenizer.from_file(self.tokenizer_path)
        size = os.path.getsize(self.input_path)
        start, end = size * rank // world_size, size * (rank + 1) // world_size
        texts = (
            orjson.loads(line)[self.text_key]
            for line in iter_line_range(self.input_path, start, end)
            if line.strip()
        )
        out = Path(self.output_folder)
        out.mkdir(parents=True, exist_ok=True)
        with self.track_time():
            tokens, documents = encode_to_file(
                tokenizer,
                texts,
                out / f"{rank:05d}.bin",
                self.eos_id,
                self.dtype,
                batch_documents=self.batch_documents,
            )
        self.stat_update("documents", value=documents)
        self.stat_update("tokens", value=tokens)
        (out / f"{rank:05d}.json").write_text(
            json.dumps({"tokens": tokens, "documents": documents})
        )


def encode_corpus(
    tokenizer_path: str | os.PathLike[str],
    jsonl_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    eos_id: int,
    dtype: np.dtype | str | type,
    *,
    work: str | os.PathLike[str],
    executor: DataExecutorConfig | None = None,
    part_bytes: int = PART_BYTES,
    progress: bool = False,
    label: str = "tokenize",
) -> tuple[int, int]:
    """Encode the ``text`` of every row of ``jsonl_path`` into ``out_path``; ``(tokens, docs)``.

    The file is cut into ``ceil(size / part_bytes)`` line-aligned parts, encoded as datatrove
    tasks (in parallel processes when ``executor`` allows more than one worker, each with its
    share of the cores; in this process otherwise, where ``encode_batch`` uses every core), and
    the parts are joined in order. Memory per task is one batch, whatever the corpus size.
    """
    from lmops.data.executors import Pass, cpu_count, datatrove_logs_to, run_passes

    executor = executor or DataExecutorConfig()
    dtype = np.dtype(dtype)
    if not 0 <= eos_id <= np.iinfo(dtype).max:
        raise LmopsError(f"eos id {eos_id} does not fit {dtype}; check tokenize.special_tokens")
    work = Path(work)
    shutil.rmtree(work, ignore_errors=True)
    size = os.path.getsize(jsonl_path)
    tasks = max(1, math.ceil(size / part_bytes))
    limit = executor.workers if executor.workers > 0 else cpu_count()
    workers = max(1, min(limit, tasks))
    threads = max(1, cpu_count() // workers) if executor.type == "local" and workers > 1 else 0
    step = TokenShardWriter(
        str(Path(tokenizer_path).resolve()),
        str(Path(jsonl_path).resolve()),
        str((work / "parts").resolve()),
        eos_id,
        dtype.name,
        threads=threads,
    )
    with datatrove_logs_to(work / "logs" / "datatrove.log"):
        run_passes(
            [Pass("encode", Path(jsonl_path).name, [step], tasks)],
            executor,
            work / "logs",
            progress=progress,
            label=label,
        )
    tokens = documents = 0
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            for rank in range(tasks):
                counts = json.loads((work / "parts" / f"{rank:05d}.json").read_text())
                tokens += counts["tokens"]
                documents += counts["documents"]
                with open(work / "parts" / f"{rank:05d}.bin", "rb") as part:
                    shutil.copyfileobj(part, out, 16 * 2**20)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, out_path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    shutil.rmtree(work, ignore_errors=True)  # kept after a failure: its logs say why
    return tokens, documents

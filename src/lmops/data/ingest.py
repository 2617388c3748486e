"""The clean stage's work folder: raw documents in, as numbered JSONL shards, one per task.

Why shards: datatrove parallelizes by file, and its dedup steps address a document as (task,
position in the task's file). The input is cut into contiguous shards of about
``clean.shard_mb`` each, in input order, so shard ``i`` is task ``i`` in every pass, the
output read shard by shard is in input order, and the number of workers never changes which
documents survive. :class:`RankJsonlReader` reads exactly the shard of its task (datatrove's
own readers spread "whatever files exist" over tasks, which goes wrong as soon as a filter
empties one shard and its file is never written).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter

from lmops.data.sources import SourceDocument

__all__ = [
    "RankJsonlReader",
    "iter_shards",
    "read_ingest_marker",
    "shard_writer",
    "write_input_shards",
]

MARKER = "_SUCCESS.json"


def shard_name(rank: int) -> str:
    """The file of task ``rank``: what datatrove's writers make of ``${rank}.jsonl``."""
    return f"{rank:05d}.jsonl"


def write_input_shards(
    documents: Iterable[SourceDocument], folder: Path, shard_bytes: int
) -> dict[str, Any]:
    """Write ``documents`` as ``00000.jsonl``, ``00001.jsonl``... of about ``shard_bytes`` each.

    Ends by writing a marker with the counts, so a resumed run skips reading the sources again.
    Returns ``{"shards", "documents", "bytes"}``; at least one (possibly empty) shard.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.jsonl"):
        old.unlink()
    shards, docs, total, size = 1, 0, 0, 0
    fh = open(folder / shard_name(0), "wb")  # noqa: SIM115 - rotated below
    try:
        for doc in documents:
            if size >= shard_bytes:
                fh.close()
                fh = open(folder / shard_name(shards), "wb")  # noqa: SIM115
                shards += 1
                size = 0
            meta = {"source": doc.source, "shard": shards - 1}
            line = orjson.dumps(
                {"id": doc.id, "text": doc.text, "metadata": meta}, option=orjson.OPT_APPEND_NEWLINE
            )
            fh.write(line)
            size += len(line)
            total += len(doc.text.encode("utf-8"))
            docs += 1
    finally:
        fh.close()
    counts = {"shards": shards, "documents": docs, "bytes": total}
    (folder / MARKER).write_text(json.dumps(counts))
    return counts


def read_ingest_marker(folder: Path) -> dict[str, Any] | None:
    """The counts of a complete earlier ingest, or None."""
    marker = folder / MARKER
    return json.loads(marker.read_text()) if marker.is_file() else None


class RankJsonlReader(JsonlReader):
    """datatrove's JsonlReader, reading exactly the shard that belongs to the task's rank."""

    name = "🐿 Jsonl (by rank)"

    def __init__(self, data_folder: str) -> None:
        super().__init__(data_folder, compression=None, add_file_path=False)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1):
        if data:
            yield from data
        path = shard_name(rank)
        if not self.data_folder.isfile(path):
            return
        yield from self.read_files_shard([path])


def _row(writer: Any, doc: Document) -> dict[str, Any]:
    """What an intermediate shard keeps of a document (datatrove's default goes via asdict)."""
    return {"id": doc.id, "text": doc.text, "metadata": doc.metadata}


def shard_writer(folder: str) -> JsonlWriter:
    """An uncompressed JSONL writer with one file per task (intermediate files stay fast)."""
    return JsonlWriter(folder, output_filename="${rank}.jsonl", compression=None, adapter=_row)


def iter_shards(folder: Path, shards: int) -> Iterator[dict[str, Any]]:
    """The rows of ``folder``'s shards ``0 .. shards-1``, in order (missing shards are empty)."""
    for rank in range(shards):
        path = folder / shard_name(rank)
        if not path.is_file():
            continue
        with open(path, "rb") as fh:
            for line in fh:
                yield orjson.loads(line)

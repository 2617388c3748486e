"""Token files: every document encoded, followed by EOS, in one flat binary array on disk.

Why flat files: training samples random windows, and a memory-mapped array serves any window
without loading the corpus, from any number of dataloader workers or processes. Encoding
streams in batches (``encode_batch`` runs in parallel in Rust) so memory stays flat however
large the corpus is, and the file appears under its final name only once complete.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from lmops.config import LmopsError

__all__ = ["BATCH_DOCUMENTS", "encode_to_file", "open_tokens", "token_dtype"]

BATCH_DOCUMENTS = 1000


def token_dtype(vocab_size: int) -> np.dtype:
    """``uint16`` when every id fits (vocab <= 65,535), else ``uint32``: half the disk and I/O."""
    return np.dtype(np.uint16) if vocab_size <= 65535 else np.dtype(np.uint32)


def _batches(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    it = iter(texts)
    while batch := list(islice(it, size)):
        yield batch


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
                encodings = tokenizer.encode_batch(batch, add_special_tokens=False)
                ids: list[int] = []
                for enc in encodings:
                    ids.extend(enc.ids)
                    ids.append(eos_id)
                arr = np.asarray(ids, dtype=np.int64)
                if arr.size and int(arr.max()) > limit:
                    raise LmopsError(
                        f"token id {int(arr.max())} does not fit {dtype}; the vocabulary is "
                        "larger than the dtype allows (check tokenize.vocab_size)"
                    )
                arr.astype(dtype).tofile(fh)
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

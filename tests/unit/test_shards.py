"""Token files: EOS after every document, streaming batches, dtype choice, atomic writes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from lmops.config import DataExecutorConfig, LmopsError, TokenizeConfig
from lmops.data.shards import (
    encode_corpus,
    encode_to_file,
    iter_line_range,
    open_tokens,
    token_dtype,
)
from lmops.data.tokenizer import special_ids, train_tokenizer

DOCS = [
    "The first document.",
    "A second one,\nwith two lines.",
    "",  # an empty document still ends with EOS
    "Ünïcödé and 日本 and 😀.",
    "The last document.",
]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    corpus = [d * 3 for d in DOCS] + ["the quick brown fox jumps over the lazy dog"] * 5
    return train_tokenizer(corpus, TokenizeConfig(vocab_size=300, min_frequency=1))


def test_token_dtype_boundary() -> None:
    assert token_dtype(2048) == np.uint16
    assert token_dtype(65535) == np.uint16
    assert token_dtype(65536) == np.uint32


@pytest.mark.parametrize("batch_documents", [1, 2, 1000])
def test_eos_after_every_document_and_decodes_back(
    tok: Tokenizer, tmp_path: Path, batch_documents: int
) -> None:
    eos, _ = special_ids(tok, TokenizeConfig())
    path = tmp_path / "train.bin"
    n_tokens, n_docs = encode_to_file(
        tok, iter(DOCS), path, eos, np.uint16, batch_documents=batch_documents
    )
    arr = open_tokens(path, np.uint16)
    assert n_docs == len(DOCS) and n_tokens == len(arr) == path.stat().st_size // 2
    assert int((arr == eos).sum()) == len(DOCS) and arr[-1] == eos
    bounds = np.flatnonzero(arr == eos)
    starts = np.concatenate([[0], bounds[:-1] + 1])
    decoded = [tok.decode(arr[s:e].tolist()) for s, e in zip(starts, bounds, strict=True)]
    assert decoded == DOCS


def test_batching_does_not_change_the_file(tok: Tokenizer, tmp_path: Path) -> None:
    encode_to_file(tok, DOCS, tmp_path / "a.bin", 0, "uint16", batch_documents=2)
    encode_to_file(tok, DOCS, tmp_path / "b.bin", 0, "uint32", batch_documents=1000)
    a = open_tokens(tmp_path / "a.bin", "uint16")
    b = open_tokens(tmp_path / "b.bin", "uint32")
    assert np.array_equal(a.astype(np.int64), b.astype(np.int64))


def test_ids_are_those_of_encode_batch(tok: Tokenizer, tmp_path: Path) -> None:
    """The fast encoder (no offsets) must give exactly the ids of the ordinary one."""
    texts = DOCS + ["the quick brown fox, 12.5 times!\n\nNew paragraph\t\ttabs  spaces"] * 3
    encode_to_file(tok, texts, tmp_path / "t.bin", 7, "uint16")
    expected: list[int] = []
    for enc in tok.encode_batch(texts, add_special_tokens=False):
        expected += [*enc.ids, 7]
    assert open_tokens(tmp_path / "t.bin", "uint16").tolist() == expected


def test_failure_leaves_old_file_and_no_temp(tok: Tokenizer, tmp_path: Path) -> None:
    path = tmp_path / "train.bin"
    path.write_bytes(b"\x01\x00")

    def broken() -> Iterator[str]:
        yield from DOCS
        raise RuntimeError("source died")

    with pytest.raises(RuntimeError):
        encode_to_file(tok, broken(), path, 0, np.uint16, batch_documents=2)
    assert path.read_bytes() == b"\x01\x00"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.bin"]


def test_ids_that_do_not_fit_the_dtype_are_an_error(tok: Tokenizer, tmp_path: Path) -> None:
    with pytest.raises(LmopsError):
        encode_to_file(tok, DOCS, tmp_path / "x.bin", 70000, np.uint16)
    with pytest.raises(LmopsError):  # every id of this tokenizer is > 255
        encode_to_file(tok, ["the quick brown fox"], tmp_path / "y.bin", 0, np.uint8)
    assert not (tmp_path / "y.bin").exists()


def test_open_tokens(tmp_path: Path) -> None:
    np.arange(10, dtype=np.uint16).tofile(tmp_path / "t.bin")
    arr = open_tokens(tmp_path / "t.bin", np.uint16)
    assert isinstance(arr, np.memmap) and arr.tolist() == list(range(10))
    with pytest.raises(ValueError):
        arr[0] = 5  # read-only
    (tmp_path / "empty.bin").write_bytes(b"")
    assert len(open_tokens(tmp_path / "empty.bin", np.uint16)) == 0
    (tmp_path / "odd.bin").write_bytes(b"\x00\x01\x02")
    with pytest.raises(LmopsError, match="dtype"):
        open_tokens(tmp_path / "odd.bin", np.uint16)
    with pytest.raises(LmopsError, match="tokenize"):
        open_tokens(tmp_path / "missing.bin", np.uint16)


# ------------------------------------------------------------------------------ sharded


@given(st.lists(st.text(max_size=20), max_size=30), st.integers(1, 7))
@settings(max_examples=60, deadline=None)
def test_line_ranges_tile_a_file(lines: list[str], parts: int) -> None:
    import tempfile

    data = "".join(line.replace("\n", " ") + "\n" for line in lines).encode()
    with tempfile.NamedTemporaryFile(suffix=".jsonl") as fh:
        fh.write(data)
        fh.flush()
        size = len(data)
        got = [
            line
            for r in range(parts)
            for line in iter_line_range(fh.name, size * r // parts, size * (r + 1) // parts)
        ]
    assert b"".join(got) == data


def _jsonl(path: Path, texts: list[str]) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for i, t in enumerate(texts):
            fh.write(json.dumps({"id": str(i), "text": t}) + "\n")
    return path


@pytest.mark.parametrize(("part_bytes", "workers"), [(10**9, 1), (300, 1), (300, 2)])
def test_sharded_encode_equals_one_stream(
    tok: Tokenizer, tmp_path: Path, part_bytes: int, workers: int
) -> None:
    texts = [f"{DOCS[i % len(DOCS)]} number {i}" for i in range(60)]
    src = _jsonl(tmp_path / "train.jsonl", texts)
    tok.save(str(tmp_path / "tokenizer.json"))
    eos, _ = special_ids(tok, TokenizeConfig())
    ref = tmp_path / "ref.bin"
    expected = encode_to_file(tok, texts, ref, eos, np.uint16)
    out = tmp_path / "out.bin"
    got = encode_corpus(
        tmp_path / "tokenizer.json",
        src,
        out,
        eos,
        np.uint16,
        work=tmp_path / "work",
        executor=DataExecutorConfig(workers=workers),
        part_bytes=part_bytes,
    )
    assert got == expected
    assert out.read_bytes() == ref.read_bytes()
    assert not (tmp_path / "work").exists()  # parts are cleaned up

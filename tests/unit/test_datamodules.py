"""Token windows (reproducible per seed and index) and padded labeled batches."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

from lmops.config import LmopsError, TokenizeConfig
from lmops.data.datamodules import (
    LabeledDataModule,
    TokenDataModule,
    TokenWindowDataset,
    encode_labeled,
)
from lmops.data.shards import open_tokens
from lmops.data.tokenizer import special_ids, train_tokenizer
from lmops.io import write_jsonl

# ------------------------------------------------------------------------ token windows


def test_windows_are_shifted_slices_of_the_tokens() -> None:
    tokens = np.arange(1000, dtype=np.uint16)
    ds = TokenWindowDataset(tokens, block_size=16, num_samples=50, seed=1)
    assert len(ds) == 50
    for i in range(50):
        x, y = ds[i]
        assert x.dtype == y.dtype == torch.int64 and x.shape == y.shape == (16,)
        o = int(x[0])  # tokens are their own offsets here
        assert torch.equal(x, torch.arange(o, o + 16)) and torch.equal(y, x + 1)
    with pytest.raises(IndexError):
        ds[50]


def test_windows_are_reproducible_per_seed_and_index() -> None:
    tokens = np.arange(5000, dtype=np.uint16)
    a = TokenWindowDataset(tokens, 32, 100, seed=7)
    b = TokenWindowDataset(tokens, 32, 100, seed=7)
    c = TokenWindowDataset(tokens, 32, 100, seed=8)
    order = [a[i][0][0].item() for i in range(100)]
    backwards = [b[i][0][0].item() for i in reversed(range(100))][::-1]
    assert order == backwards  # access order does not matter
    assert order != [c[i][0][0].item() for i in range(100)]
    assert len(set(order)) > 90  # spread over the corpus, not one window


def test_windows_cover_the_whole_range_including_the_last_token() -> None:
    tokens = np.arange(12, dtype=np.uint16)  # 12 tokens, T=4: offsets 0..7
    ds = TokenWindowDataset(tokens, 4, 400, seed=0)
    offsets = {ds.offset(i) for i in range(400)}
    assert offsets == set(range(8))
    assert max(int(ds[i][1][-1]) for i in range(400)) == 11


def test_too_few_tokens_is_a_user_error() -> None:
    with pytest.raises(LmopsError, match="block_size"):
        TokenWindowDataset(np.arange(8, dtype=np.uint16), 8, 10, seed=0)


def test_memmap_dataset_pickles_by_path(tmp_path: Path) -> None:
    np.arange(100_000, dtype=np.uint16).tofile(tmp_path / "t.bin")
    ds = TokenWindowDataset(open_tokens(tmp_path / "t.bin", np.uint16), 64, 10, seed=3)
    blob = pickle.dumps(ds)
    assert len(blob) < 10_000  # not a copy of the 200 kB array
    again = pickle.loads(blob)
    assert all(torch.equal(again[i][0], ds[i][0]) for i in range(10))


def _tokens_dir(tmp_path: Path) -> Path:
    d = tmp_path / "tokens"
    d.mkdir()
    np.arange(3000, dtype=np.uint16).tofile(d / "train.bin")
    np.arange(500, dtype=np.uint16).tofile(d / "val.bin")
    (d / "meta.json").write_text(json.dumps({"dtype": "uint16", "vocab_size": 3000}))
    return d


def test_token_datamodule_batches(tmp_path: Path) -> None:
    dm = TokenDataModule(_tokens_dir(tmp_path), 32, 8, seed=1, train_samples=40, val_samples=20)
    dm.setup("fit")
    train = list(dm.train_dataloader())
    assert len(train) == 5
    x, y = train[0]
    assert x.shape == y.shape == (8, 32) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    v1 = [b[0] for b in dm.val_dataloader()]
    v2 = [b[0] for b in dm.val_dataloader()]
    assert len(v1) == 3 and all(torch.equal(a, b) for a, b in zip(v1, v2, strict=True))
    assert int(torch.cat(v1).max()) < 500  # val windows come from val.bin


# ------------------------------------------------------------------------------ labeled

TEXTS = {
    "train": [
        ("the soup was good", 1),
        ("the soup was not good", 0),
        ("bad", 0),
        ("the room was cramped but the staff were wonderful and kind to us", 1),
        ("", 0),
        ("fine", 1),
    ],
    "val": [("good", 1), ("not good at all", 0)],
    "test": [("the staff were rude", 0), ("wonderful", 1), ("so so", 0)],
}


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    texts = [t for rows in TEXTS.values() for t, _ in rows]
    return train_tokenizer(texts, TokenizeConfig(type="char"))


def _labeled_dir(tmp_path: Path, tok: Tokenizer, with_test: bool = True) -> Path:
    d = tmp_path / "labeled"
    for split, rows in TEXTS.items():
        if split == "test" and not with_test:
            continue
        write_jsonl(
            d / f"{split}.jsonl",
            [{"id": f"{split}-{i}", "text": t, "label": y} for i, (t, y) in enumerate(rows)],
        )
    (d / "labels.json").write_text(json.dumps(["negative", "positive"]))
    tok.save(str(tmp_path / "tokenizer.json"))
    return d


def test_labeled_batches_are_right_padded_with_lengths(tmp_path: Path, tok: Tokenizer) -> None:
    _, pad = special_ids(tok, TokenizeConfig())
    dm = LabeledDataModule(
        _labeled_dir(tmp_path, tok), tmp_path / "tokenizer.json", 20, 6, pad, seed=0
    )
    assert dm.labels == ["negative", "positive"] and dm.num_labels == 2
    dm.setup("fit")
    (batch,) = list(dm.train_dataloader())
    assert set(batch) == {"input_ids", "lengths", "labels"}
    ids, lengths, labels = batch["input_ids"], batch["lengths"], batch["labels"]
    assert ids.dtype == lengths.dtype == labels.dtype == torch.int64
    assert ids.shape == (6, 20)  # the longest row was truncated to max_length
    by_label_text = {}
    for row, n, y in zip(ids, lengths, labels, strict=True):
        assert (row[n:] == pad).all() and (row[:n] != pad).all() or n == 1
        by_label_text[tok.decode(row[:n].tolist())] = int(y)
    expected = {t[:20]: y for t, y in TEXTS["train"]}
    assert by_label_text == expected  # first max_length characters kept, labels aligned


def test_train_order_is_shuffled_by_seed(tmp_path: Path, tok: Tokenizer) -> None:
    d = _labeled_dir(tmp_path, tok)

    def order(seed: int) -> list[list[int]]:
        dm = LabeledDataModule(d, tmp_path / "tokenizer.json", 64, 1, 1, seed=seed)
        return [b["lengths"].tolist() for b in dm.train_dataloader()]

    assert order(0) == order(0)
    assert any(order(0) != order(s) for s in range(1, 6))
    dm = LabeledDataModule(d, tmp_path / "tokenizer.json", 64, 2, 1, seed=0)
    assert [b["labels"].tolist() for b in dm.val_dataloader()] == [[1, 0]]  # file order


def test_test_split_and_missing_test(tmp_path: Path, tok: Tokenizer) -> None:
    d = _labeled_dir(tmp_path, tok)
    dm = LabeledDataModule(d, tmp_path / "tokenizer.json", 64, 10, 1, seed=0)
    dm.setup("test")
    (batch,) = list(dm.test_dataloader())
    assert batch["labels"].tolist() == [0, 1, 0]
    (d / "test.jsonl").unlink()
    dm = LabeledDataModule(d, tmp_path / "tokenizer.json", 64, 10, 1, seed=0)
    dm.setup(None)  # no test file: fit still works
    with pytest.raises(LmopsError, match="test.jsonl"):
        dm.test_dataloader()


def test_encode_labeled_matches_training_batches(tmp_path: Path, tok: Tokenizer) -> None:
    _, pad = special_ids(tok, TokenizeConfig())
    texts = ["the soup was good", "bad", ""]
    out = encode_labeled(tok, texts, max_length=8, pad_id=pad)
    assert out["input_ids"].shape == (3, 8)
    assert out["lengths"].tolist() == [8, 3, 1]  # empty text still has one position to pool
    assert tok.decode(out["input_ids"][0].tolist()) == "the soup"
    assert out["input_ids"][1, 3:].eq(pad).all() and out["input_ids"][2, 0] == pad
    short = encode_labeled(tok, ["bad", "good"], max_length=64, pad_id=pad)
    assert short["input_ids"].shape == (2, 4)  # padded to the longest, not to max_length

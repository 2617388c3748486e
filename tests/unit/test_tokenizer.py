"""Byte-level BPE and char tokenizers: exact round trips, special ids, saved files, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from lmops.config import ConfigError, LmopsError, TokenizeConfig, load_params
from lmops.data import sample
from lmops.data.tokenizer import (
    UNK_TOKEN,
    load_tokenizer,
    padded_vocab_size,
    special_ids,
    train_tokenizer,
    training_stride,
    training_texts,
)

TRICKY = [
    "Crème brûlée, naïve café — façade",
    "日本語のテキストと中文字符",
    "emoji 😀🚀 and flags 🇫🇷 and zwj 👩‍👩‍👧",
    "two  spaces,   three, then\ttab\nnewline\n\n\nblank lines",
    " leading space and trailing space ",
    "    indented code:\n        return x  # comment",
    "",
]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return sample.generate_corpus(300, 5)


@pytest.fixture(scope="module")
def bpe(texts: list[str]) -> Tokenizer:
    return train_tokenizer(texts, TokenizeConfig(vocab_size=512))


def test_bpe_vocab_and_special_ids(bpe: Tokenizer) -> None:
    assert bpe.get_vocab_size() == 512
    assert special_ids(bpe, TokenizeConfig()) == (0, 1)
    assert special_ids(bpe, ["<|endoftext|>"]) == (0, 0)  # no pad token: pad reuses eos


@pytest.mark.parametrize("text", TRICKY)
def test_bpe_round_trips_exactly(bpe: Tokenizer, text: str) -> None:
    ids = bpe.encode(text).ids
    assert bpe.decode(ids) == text


def test_bpe_compresses_the_text_it_learned(bpe: Tokenizer, texts: list[str]) -> None:
    n_tokens = sum(len(e.ids) for e in bpe.encode_batch(texts))
    assert n_tokens < 0.6 * sum(len(t.encode("utf-8")) for t in texts)  # merges were learned


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=60))
def test_bpe_round_trips_any_text(bpe: Tokenizer, text: str) -> None:
    if "<|" in text:  # special-token strings are meant to be recognized, not round-tripped
        return
    assert bpe.decode(bpe.encode(text).ids) == text


def test_saved_file_loads_and_behaves_the_same(bpe: Tokenizer, tmp_path: Path) -> None:
    bpe.save(str(tmp_path / "tokenizer.json"))
    for where in (tmp_path / "tokenizer.json", tmp_path):
        loaded = load_tokenizer(where)
        for text in TRICKY:
            assert loaded.encode(text).ids == bpe.encode(text).ids
            assert loaded.decode(loaded.encode(text).ids) == text
    with pytest.raises(LmopsError, match="tokenize"):
        load_tokenizer(tmp_path / "missing.json")


def test_vocab_larger_than_the_data_supports_names_the_param() -> None:
    with pytest.raises(LmopsError, match=r"tokenize\.vocab_size"):
        train_tokenizer(["tiny text, tiny vocabulary"] * 3, TokenizeConfig(vocab_size=4000))


def test_no_text_is_an_error() -> None:
    with pytest.raises(LmopsError):
        train_tokenizer([], TokenizeConfig(vocab_size=300))


def test_char_tokenizer_round_trips_its_alphabet(texts: list[str], tmp_path: Path) -> None:
    cfg = TokenizeConfig(type="char")
    extra = "naïve 日本 😀  \t\n"
    tok = train_tokenizer([*texts, extra], cfg)
    vocab = tok.get_vocab()
    assert [vocab[s] for s in [*cfg.special_tokens, UNK_TOKEN]] == [0, 1, 2]
    alphabet = set("".join(texts) + extra)
    assert tok.get_vocab_size() == len(alphabet) + 3
    for text in [texts[1], extra, "  two  spaces\n\nand lines  "]:
        enc = tok.encode(text)
        assert len(enc.ids) == len(text)  # one token per character
        assert tok.decode(enc.ids) == text
    assert tok.encode("Ω").ids == [vocab[UNK_TOKEN]]  # unseen character: no crash
    tok.save(str(tmp_path / "tokenizer.json"))
    loaded = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert loaded.decode(loaded.encode(texts[2]).ids) == texts[2]
    assert special_ids(loaded, cfg) == (0, 1)


def test_special_ids_missing_token_is_an_error(bpe: Tokenizer) -> None:
    with pytest.raises(LmopsError, match="special_tokens"):
        special_ids(bpe, ["<|nope|>"])
    with pytest.raises(LmopsError):
        special_ids(bpe, [])


@pytest.mark.parametrize(
    ("n", "padded"), [(1, 64), (64, 64), (65, 128), (2048, 2048), (50257, 50304)]
)
def test_padded_vocab_size(n: int, padded: int) -> None:
    assert padded_vocab_size(n) == padded
    assert padded_vocab_size(n, 128) % 128 == 0


@pytest.mark.parametrize("text", TRICKY)
def test_bpe_round_trips_what_the_cleaner_emits(bpe: Tokenizer, text: str) -> None:
    from lmops.data.text import normalize_text

    for form in ("NFC", "NFKC", "none"):
        clean = normalize_text(text, form)
        assert bpe.decode(bpe.encode(clean).ids) == clean


def test_saved_bpe_loads_in_transformers(bpe: Tokenizer, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    bpe.save(str(tmp_path / "tokenizer.json"))
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(tmp_path / "tokenizer.json"),
        eos_token="<|endoftext|>",
        pad_token="<|pad|>",
    )
    text = TRICKY[2]
    assert fast.encode(text) == bpe.encode(text).ids
    assert fast.decode(fast.encode(text)) == text
    assert (fast.eos_token_id, fast.pad_token_id) == (0, 1)


def test_train_max_mb_samples_evenly_across_the_split(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    docs = [f"doc {i:04d} " + "x" * 990 for i in range(200)]  # ~1 KB each, ~0.2 MB in all
    with path.open("w", encoding="utf-8") as fh:
        for d in docs:
            fh.write(json.dumps({"id": str(len(d)), "text": d}) + "\n")
    size = path.stat().st_size
    assert training_stride(size, None) == 1 and training_stride(size, 1.0) == 1
    got = list(training_texts(path, TokenizeConfig(train_max_mb=0.05)))
    stride = training_stride(size, 0.05)
    assert stride == 5  # 0.21 MB / 0.05 MB, rounded up
    assert got == docs[::stride]  # every 5th document, from the first to the end of the file
    assert got[-1] == docs[195]
    # the char tokenizer sees every character, whatever the cap
    assert list(training_texts(path, TokenizeConfig(type="char", train_max_mb=0.05))) == docs


def test_train_max_mb_must_be_positive(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("{}\n")
    with pytest.raises(ConfigError, match="tokenize.train_max_mb must be > 0"):
        load_params(tmp_path / "params.yaml", ["tokenize.train_max_mb=0"])
    assert (
        load_params(tmp_path / "params.yaml", ["tokenize.train_max_mb=null"]).tokenize.train_max_mb
        is None
    )
